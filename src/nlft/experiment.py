"""``nlft experiment``: the paper's comparison in one command — methods x data sizes x seeds, every epoch evaluated.

    OUT/pool/samples.jsonl, judged.jsonl   the model's own answers to the task's train questions, judged
    OUT/data/size-N/nlft.jsonl            nested subsets (every smaller set is a prefix of the larger ones)
    OUT/runs/<method>-N-s<seed>/          one training run per cell, every epoch's adapter saved and evaluated
    OUT/base/                             the base model on the same test questions
    OUT/results.{md,csv,json}, plot.png   mean and sd over seeds per size, method and epoch; the paper's plot

Every step resumes: sampling and judging from their append-only files, a finished cell is not trained again, an
evaluation reruns only the questions it lacks. ``dry_run`` prints the plan and what it will cost.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .data.judging import JUDGE_BACKENDS
from .models.loading import DTYPES
from .options import POSITIVE, RATE, TEMPERATURE, opt
from .train.methods import METHODS


def method_rate(text: str) -> tuple[str, float]:
    """An argparse type: ``METHOD=RATE``."""
    method, _, value = text.partition("=")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write METHOD=RATE, e.g. sft=2e-4") from None
    return method, rate


@dataclass
class ExperimentOptions:
    """The grid and its budgets; the defaults fit ``nlft:mini`` on a 2-core CPU."""

    out: str = opt(help="experiment folder (resumed when it holds this experiment)")
    model: str = opt("nlft:mini", help="the model every method starts from")
    task: str = opt("mini-math", help="a task name: mini-math, gsm8k")
    judge: str = opt(
        "arithmetic",
        choices=JUDGE_BACKENDS,
        help="the judge of wrong answers: the offline arithmetic checker, or a model (--judge-model)",
    )
    judge_model: str | None = opt(None, help="openai: the model name (e.g. gpt-4o); hf: a hub id or folder")
    judge_base_url: str | None = opt(
        None,
        help="openai: the server, e.g. http://localhost:8000/v1 (default: api.openai.com; key from $OPENAI_API_KEY)",
    )
    pool_questions: int = opt(
        400,
        type=POSITIVE,
        help="train questions the model answers; the subsets come from these (a pool too small for the sizes may "
        "grow: rerun with more, before any subset is built)",
    )
    pool_samples: int = opt(
        1,
        type=POSITIVE,
        help="answers per pool question (ids -s0, -s1, ...): more where greedy answers give too few correct ones; "
        "may grow like --pool-questions",
    )
    pool_temperature: float = opt(
        0.0,
        type=TEMPERATURE,
        help="sampling temperature of the pool's answers (0: greedy; more than one sample needs > 0)",
    )
    sizes: list[int] = opt(
        type=POSITIVE, default_factory=lambda: [25, 50, 100], help="records per training set"
    )
    ratio: str = opt("2:1", help="correct:wrong of every subset (2:1 = the paper's 1:2 wrong:correct)")
    methods: list[str] = opt(
        choices=list(METHODS),
        default_factory=lambda: ["nlft", "sft", "rft", "sft-gold", "grpo"],
        help="the training methods",
    )
    seeds: list[int] = opt(default_factory=lambda: [0, 1], help="one run per method, size and seed")
    epochs: int = opt(3, type=POSITIVE, help="epochs of every run, each evaluated")
    learning_rate: float = opt(1e-3, type=RATE, help="for every method (tune them alike with --method-lr)")
    learning_rates: dict[str, float] = opt(
        default_factory=dict,
        flag="method_lr",
        type=method_rate,
        nargs="*",
        metavar="METHOD=RATE",
        help="per-method learning rates, e.g. sft=2e-4",
    )
    test_questions: int = opt(200, type=POSITIVE, help="test questions every run is evaluated on")
    batch_size: int = opt(4, type=POSITIVE, help="records per step, every method")
    generation_batch: int = opt(100, type=POSITIVE, help="sampling and evaluation batch")
    # New tokens of the pool's samples, the evaluations and GRPO's completions alike: 160 fits mini-math; GSM8K
    # chains of thought of an instruct model need the paper protocol's 512.
    max_new_tokens: int = opt(
        160,
        type=POSITIVE,
        help="of the pool's samples, the evaluations and GRPO's completions; 512 for GSM8K",
    )
    train_args: list[str] = opt(
        default_factory=list, nargs=argparse.REMAINDER, help="the rest goes to every `nlft train` alike"
    )
    dtype: str = opt("float32", choices=DTYPES, help="weights' dtype in every run")
    device: str | None = opt(None, help="cpu, cuda, ... (default: cpu)")
    dry_run: bool = opt(False, help="print the plan and the cost, run nothing")
    progress: bool = opt(True, negate="no_progress", help="no progress bars")

    def __post_init__(self) -> None:
        from .data.builder import parse_ratio

        if isinstance(self.learning_rates, list):  # (method, rate) pairs, as --method-lr gives them
            self.learning_rates = dict(self.learning_rates)
        self._check_types()
        parse_ratio(self.ratio)
        if self.judge not in JUDGE_BACKENDS:
            raise ValueError(f"--judge must be one of {', '.join(JUDGE_BACKENDS)}, not {self.judge!r}")
        if self.judge != "arithmetic" and not self.judge_model:
            raise ValueError(
                f"--judge {self.judge} needs --judge-model (the model that writes the judgments)"
            )
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"--methods: unknown {', '.join(unknown)} (choose from {', '.join(METHODS)})")
        for name in (
            "pool_questions",
            "epochs",
            "test_questions",
            "batch_size",
            "generation_batch",
            "max_new_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}"
                )
        if self.pool_samples > 1 and self.pool_temperature <= 0:
            raise ValueError(
                f"--pool-samples {self.pool_samples} needs --pool-temperature above 0 (greedy answers would repeat)"
            )
        if not self.sizes or any(s < 3 for s in self.sizes):
            raise ValueError(f"--sizes must be record counts of at least 3, got {self.sizes}")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError(f"--seeds must be distinct and at least one, got {self.seeds}")
        self.sizes = sorted(set(self.sizes))

    # What makes a cell the cell it is: set by the experiment, never by --train-args.
    CELL_FLAGS = (
        "--method", "--data", "--output_dir", "--seed", "--learning_rate", "--num_train_epochs", "--max_steps",
        "--model_name_or_path", "--task", "--per_device_train_batch_size", "--gradient_accumulation_steps",
        "--resume_from_checkpoint",
    )  # fmt: skip

    def _check_types(self) -> None:
        """Types a YAML --config can get wrong (sizes: "six"), each named, before anything runs."""

        def whole(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        for name, ok, what in (
            ("sizes", lambda v: isinstance(v, list) and all(whole(x) for x in v), "a list of whole numbers"),
            ("seeds", lambda v: isinstance(v, list) and all(whole(x) for x in v), "a list of whole numbers"),
            ("methods", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of names"),
            ("train_args", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
            ("learning_rate", number, "a number"),
            ("learning_rates", lambda v: isinstance(v, dict) and all(isinstance(k, str) and number(r) and r > 0
                                                                       for k, r in v.items()), "METHOD: RATE pairs"),
            ("ratio", lambda v: isinstance(v, str), "text such as 2:1"),
            ("model", lambda v: isinstance(v, str), "a model name or folder"),
            ("task", lambda v: isinstance(v, str), "a task name"),
        ):  # fmt: skip
            value = getattr(self, name, None)
            if not ok(value):
                raise ValueError(f"{name}: must be {what}, got {value!r}")
        for arg in self.train_args:
            flag = arg.split("=", 1)[0]
            if flag in self.CELL_FLAGS:
                raise ValueError(
                    f"--train-args {arg}: the experiment sets {flag} for each cell (method, size, seed, rate, "
                    "epochs); change it with the experiment's own option instead"
                )

    def rate(self, method: str) -> float:
        return self.learning_rates.get(method, self.learning_rate)


def read_experiment_config(path: str) -> dict[str, Any]:
    """The ``ExperimentOptions`` fields of a YAML file (``nlft experiment --config``); unknown keys are an error
    naming the file."""
    import dataclasses

    from .files import read_yaml

    data = read_yaml(path, "experiment config")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of experiment settings, e.g. 'sizes: [25, 50]'")
    known = {f.name for f in dataclasses.fields(ExperimentOptions)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ValueError(
            f"{path}: unknown setting(s) {', '.join(unknown)} (settings: {', '.join(sorted(known))})"
        )
    if "train_args" in data and not (
        isinstance(data["train_args"], list)
        and all(isinstance(a, (str, int, float)) for a in data["train_args"])
    ):
        raise ValueError(f"{path}: train_args must be a list of `nlft train` flags and values")
    if "train_args" in data:
        data["train_args"] = [str(a) for a in data["train_args"]]
    return data


@dataclass
class Cell:
    method: str
    size: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-{self.size}-s{self.seed}"


def cells(o: ExperimentOptions) -> list[Cell]:
    return [Cell(m, n, s) for n in o.sizes for s in o.seeds for m in o.methods]


def nested_subsets(records: list, sizes: list[int], ratio: tuple[int, int], seed: int) -> dict[int, list]:
    """Record subsets of each size at ``ratio`` (correct, wrong), each a prefix of the next: the correct and the
    wrong records are shuffled once (seeded) and every size takes the first ones of each."""
    correct = sorted((r for r in records if r.is_correct), key=lambda r: r.id)
    wrong = sorted((r for r in records if not r.is_correct and r.judgment), key=lambda r: r.id)
    rng = random.Random(seed)
    rng.shuffle(correct)
    rng.shuffle(wrong)
    c, w = ratio
    out = {}
    for size in sizes:
        n_wrong = round(size * w / (c + w))
        n_correct = size - n_wrong
        if n_correct > len(correct) or n_wrong > len(wrong):
            raise ValueError(
                f"size {size} at {c}:{w} needs {n_correct} correct and {n_wrong} judged wrong records; the pool has "
                f"{len(correct)} and {len(wrong)}: rerun with more --pool-questions or --pool-samples (the pool grows)"
            )
        out[size] = correct[:n_correct] + wrong[:n_wrong]
    return out


def _write_jsonl(path: Path, records: list) -> None:
    from .jsonl import atomic_write_jsonl

    atomic_write_jsonl(path, [r.to_dict() for r in records])


def plan_text(o: ExperimentOptions) -> str:
    n = len(cells(o))
    trained = sum(size * o.epochs for size in o.sizes) * len(o.seeds) * len(o.methods)
    evals = (n * o.epochs + 1) * o.test_questions
    return (
        f"{o.model} on {o.task}: {len(o.methods)} methods ({', '.join(o.methods)}) x {len(o.sizes)} sizes "
        f"({', '.join(map(str, o.sizes))}) x {len(o.seeds)} seeds = {n} training runs of {o.epochs} epochs\n"
        f"  pool: {o.pool_questions} train questions answered "
        f"{'once' if o.pool_samples == 1 else f'{o.pool_samples} times each at temperature {o.pool_temperature}'} "
        f"and judged ({o.judge}); subsets at correct:wrong {o.ratio}\n"
        f"  up to {o.max_new_tokens} new tokens per sample, test answer and GRPO completion\n"
        f"  cost: {trained} record-epochs of training, {evals} test generations "
        f"({n} runs x {o.epochs} epochs + the base model, {o.test_questions} questions each)"
    )


def run_experiment(o: ExperimentOptions) -> int:
    """Run (or continue) the experiment; returns the exit status."""
    print(plan_text(o), flush=True)
    if o.dry_run:
        estimate = _estimate(o)
        if estimate:
            print(estimate)
        return 0
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_plan(out, o)
    started = time.time()
    subsets = _data(o, out)
    for cell in cells(o):
        _train_cell(o, out, cell, subsets[cell.size])
        _evaluate(o, out / "runs" / cell.name, all_checkpoints=True)
    _evaluate(o, out / "base", model=o.model)
    table = collect(o, out)
    paths = write_results(o, out, table)
    print(f"\nexperiment finished in {time.time() - started:.0f}s")
    print(Path(paths["md"]).read_text(encoding="utf-8"))
    print(f"results: {paths['md']}, {paths['csv']}, {paths['json']}; plot: {paths['png']}")
    return 0


# The settings that decide the pool and so the records: one folder holds one pool.
POOL_SETTINGS = (
    "model", "task", "judge", "pool_questions", "pool_samples", "pool_temperature", "ratio", "max_new_tokens",
)  # fmt: skip
# What may grow between reruns while no subset has been built from the pool (the first N questions, the first K
# samples of each, are the same whatever N and K: the pool only gains answers).
GROWABLE = ("pool_questions", "pool_samples")
# A folder written before a setting existed ran at its default.
_DEFAULTS = {f.name: f.default for f in fields(ExperimentOptions) if f.default is not MISSING}


def _check_same_plan(out: Path, o: ExperimentOptions) -> None:
    """A rerun continues the same experiment; other pool or data settings in the same folder are refused."""
    from .jsonl import atomic_write_text

    path = out / "experiment.json"
    fixed = {k: v for k, v in asdict(o).items() if k in POOL_SETTINGS}
    if o.judge != "arithmetic":
        fixed["judge_model"] = o.judge_model
    if path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8")).get("fixed", {})
        except ValueError:
            raise ValueError(f"{path}: damaged; remove it or use another --out") from None
        was = {k: earlier.get(k, _DEFAULTS.get(k)) for k in fixed}
        differ = {k: (was[k], v) for k, v in fixed.items() if was[k] != v}
        grows = differ and all(k in GROWABLE and b > a for k, (a, b) in differ.items())
        if grows and not any((out / "data").glob("size-*/nlft.jsonl")):
            print(
                "the pool grows: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in differ.items()), flush=True
            )
            differ = {}
        elif grows:
            raise ValueError(
                f"{path}: the pool can grow only before subsets are built from it, and {out / 'data'} holds some "
                "(runs may have trained on them); use another --out for a larger pool"
            )
        if differ:
            raise ValueError(
                f"{path}: this folder holds an experiment with other settings "
                + ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in differ.items())
                + "; use another --out"
            )
    elif any(out.iterdir()):
        raise FileExistsError(
            f"--out {out}: exists, holds files, and is no experiment folder; name a new folder"
        )
    atomic_write_text(path, json.dumps({"fixed": fixed, "last_options": asdict(o)}, indent=1) + "\n")


def _data(o: ExperimentOptions, out: Path) -> dict[int, list]:
    from .data.builder import parse_ratio
    from .data.judging import JudgeOptions
    from .data.pipeline import sample_and_judge
    from .models.generation import BackendOptions, SamplingSettings
    from .records import load_records
    from .tasks import get_task

    task = get_task(o.task)
    if task is None:
        raise ValueError(f"--task {o.task}: no such task")
    pool = out / "pool"
    sample_and_judge(
        task.load("train", limit=o.pool_questions),
        pool,
        sampler=BackendOptions(model=o.model, batch_size=o.generation_batch, dtype=o.dtype, device=o.device),
        settings=SamplingSettings(max_new_tokens=o.max_new_tokens, temperature=o.pool_temperature),
        samples=o.pool_samples,
        judge=JudgeOptions(
            o.judge,
            model=None
            if o.judge == "arithmetic"
            else BackendOptions(
                model=o.judge_model, base_url=o.judge_base_url, dtype=o.dtype, device=o.device
            ),
        ),
        task=task,
        progress=o.progress,
    )
    subsets = nested_subsets(load_records(pool / "judged.jsonl"), o.sizes, parse_ratio(o.ratio), seed=0)
    for size, records in subsets.items():
        path = out / "data" / f"size-{size}" / "nlft.jsonl"
        if not path.is_file():
            _write_jsonl(path, records)
    return subsets


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the experiment waits, so that its child is stopped rather than orphaned."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def run_child(command: list[str], grace: float = 30.0) -> int:
    """Run ``command`` and wait for it; if this process is interrupted (Ctrl-C) or terminated (SIGTERM) meanwhile,
    the child gets SIGINT (it saves nothing half-way: a rerun resumes from its last checkpoint), then SIGKILL after
    ``grace`` seconds, and is waited for: an experiment never leaves a training running beside its rerun."""
    import signal
    import subprocess

    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return child.wait()
    except BaseException:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train_cell(o: ExperimentOptions, out: Path, cell: Cell, records: list) -> None:
    """Train one cell with ``nlft train`` in a process of its own: its peak memory is its own (a process that ran
    earlier cells keeps their memory), and a crash stops the experiment, not the interpreter."""
    import sys

    run = out / "runs" / cell.name
    info = run / "run.json"
    if info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("finished"):
        return
    resume = ["--resume_from_checkpoint", "last"] if run.exists() else []
    print(f"\n== {cell.name}: {cell.method} on {cell.size} records, seed {cell.seed} ==", flush=True)
    args = [
        "--method", cell.method,
        "--data", str(out / "data" / f"size-{cell.size}" / "nlft.jsonl"),
        "--task", o.task,
        "--model_name_or_path", o.model,
        "--output_dir", str(run),
        "--num_train_epochs", str(o.epochs),
        "--per_device_train_batch_size", str(o.batch_size),
        "--gradient_accumulation_steps", "1",
        "--learning_rate", str(o.rate(cell.method)),
        "--seed", str(cell.seed),
        "--dtype", o.dtype,
        "--logging_steps", "5",
        "--report_to", "tensorboard",
        "--save_strategy", "epoch",
        "--save_total_limit", "1",
        "--disable_tqdm", str(not o.progress).lower(),
        *(["--use_cpu", "true"] if o.device == "cpu" else []),
        # On-policy methods' rollouts as long as the samples and the evaluation's answers.
        "--grpo_max_completion_length", str(o.max_new_tokens),
        "--sdft_max_completion_length", str(o.max_new_tokens),
        "--sdpo_max_completion_length", str(o.max_new_tokens),
        *resume,
        *o.train_args,
    ]  # fmt: skip
    code = run_child([sys.executable, "-m", "nlft", "train", *args])
    if code != 0:
        raise RuntimeError(
            f"{cell.name}: nlft train exited with status {code} (its messages are above; rerun to resume)"
        )


def _evaluate(
    o: ExperimentOptions, target: Path, *, all_checkpoints: bool = False, model: str | None = None
) -> None:
    from .evals.evaluation import EvalOptions, EvalSettings, run_eval
    from .models.generation import BackendOptions

    run_eval(
        EvalOptions(
            model=model or str(target),
            backend=BackendOptions(batch_size=o.generation_batch, dtype=o.dtype, device=o.device),
            all_checkpoints=all_checkpoints,
            data=f"{o.task}:test",
            settings=EvalSettings(limit=o.test_questions, max_new_tokens=o.max_new_tokens),
            out=str(target) if model else None,
            progress=o.progress,
        )
    )


def collect(o: ExperimentOptions, out: Path) -> list[dict[str, Any]]:
    """One row per (size, method, epoch): accuracy (authors' rule) of each seed, mean, sd, and the cost."""
    from .evals.compare import load_curve

    base = json.loads((out / "base" / "summary.json").read_text(encoding="utf-8"))["accuracy"]["authors"]
    by_key: dict[tuple[int, str, float], list[float]] = {}
    costs: dict[tuple[int, str], list[float]] = {}
    for cell in cells(o):
        run = out / "runs" / cell.name
        curve = load_curve(run, "paper", f"{o.task}:test")
        for row in curve.rows:
            if row["epoch"] is not None:
                by_key.setdefault((cell.size, cell.method, float(row["epoch"])), []).append(row["authors"])
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
        seconds = info.get("train_seconds")
        if seconds:
            costs.setdefault((cell.size, cell.method), []).append(
                {
                    "seconds_per_record_epoch": seconds / (cell.size * o.epochs),
                    "seconds_per_epoch": seconds / o.epochs,
                    "peak_memory_mb": info.get("peak_memory_mb"),
                    "tokens_generated_per_record_epoch": info.get("tokens_generated", 0)
                    / (cell.size * o.epochs),
                }
            )
    rows = []
    for (size, method, epoch), values in sorted(by_key.items()):
        rows.append(
            {
                "size": size,
                "method": method,
                "epoch": epoch,
                "seeds": len(values),
                "accuracy": values,
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                **_mean_costs(costs.get((size, method), [])),
                "base": base,
            }
        )
    return rows


COST_KEYS = (
    "seconds_per_record_epoch",
    "seconds_per_epoch",
    "peak_memory_mb",
    "tokens_generated_per_record_epoch",
)


def _mean_costs(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in COST_KEYS:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.fmean(values) if values else None
    return out


# The paper's claim against ReFT (RL after an SFT warm-up): 78% less training time and 92% less memory.
PAPER_RATIOS = {"seconds_per_epoch": 0.22, "peak_memory_mb": 0.08}


def cost_ratios(
    rows: list[dict[str, Any]], method: str = "nlft", against: str = "grpo"
) -> list[dict[str, Any]]:
    """Per size: ``method``'s training time per epoch and peak memory as fractions of ``against``'s (last epoch)."""
    final = final_epoch_rows(rows)
    out = []
    for size in sorted({r["size"] for r in final}):
        mine = next((r for r in final if r["size"] == size and r["method"] == method), None)
        theirs = next((r for r in final if r["size"] == size and r["method"] == against), None)
        if mine is None or theirs is None:
            continue
        ratio = {}
        for key in PAPER_RATIOS:
            a, b = mine.get(key), theirs.get(key)
            ratio[key] = a / b if a is not None and b else None
        out.append({"size": size, "method": method, "against": against, **ratio})
    return out


def write_results(o: ExperimentOptions, out: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    from .jsonl import atomic_write_bytes, atomic_write_text

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    base = rows[0]["base"] if rows else None
    lines = [
        f"**{o.model} on {o.task}: test accuracy (greedy, {o.test_questions} questions, authors' rule, %), "
        f"mean ± sd over seeds {', '.join(map(str, o.seeds))}**; base model {pct(base)}",
        "",
        "| records | method | epoch | mean | sd | per seed | s per record-epoch | s per epoch | peak memory (MB) "
        "| tokens generated per record-epoch |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]

    def fmt(x, spec=".2f"):
        return "-" if x is None else format(x, spec)

    for r in rows:
        lines.append(
            f"| {r['size']} | {r['method']} | {r['epoch']:g} | {pct(r['mean'])} | {pct(r['sd'])} | "
            f"{' '.join(pct(v) for v in r['accuracy'])} | {fmt(r['seconds_per_record_epoch'])} | "
            f"{fmt(r['seconds_per_epoch'], '.1f')} | {fmt(r['peak_memory_mb'], '.0f')} | "
            f"{fmt(r['tokens_generated_per_record_epoch'], '.0f')} |"
        )
    ratios = cost_ratios(rows)
    if ratios:
        lines += [
            "",
            "**Cost of NLFT as a fraction of GRPO's, same records and schedule** (the paper, against ReFT: time "
            f"{PAPER_RATIOS['seconds_per_epoch']:.2f}, memory {PAPER_RATIOS['peak_memory_mb']:.2f})",
            "",
            "| records | time per epoch | peak memory |",
            "|---:|---:|---:|",
        ]
        lines += [
            f"| {r['size']} | {fmt(r['seconds_per_epoch'])} | {fmt(r['peak_memory_mb'])} |" for r in ratios
        ]
    paths = {k: out / f"results.{k}" for k in ("md", "csv", "json")}
    paths["png"] = out / "plot.png"
    atomic_write_text(paths["md"], "\n".join(lines) + "\n")

    def num(x):
        return "" if x is None else f"{x:.4f}"

    csv = ["size,method,epoch,seed_accuracies,mean,sd," + ",".join(COST_KEYS)]
    csv += [
        f"{r['size']},{r['method']},{r['epoch']:g},{' '.join(num(v) for v in r['accuracy'])},{num(r['mean'])},"
        f"{num(r['sd'])}," + ",".join(num(r[k]) for k in COST_KEYS)
        for r in rows
    ]
    atomic_write_text(paths["csv"], "\n".join(csv) + "\n")
    atomic_write_text(
        paths["json"],
        json.dumps(
            {"options": asdict(o), "rows": rows, "cost_ratios": ratios, "paper_ratios": PAPER_RATIOS},
            indent=1,
        )
        + "\n",  # fmt: skip
    )
    atomic_write_bytes(paths["png"], plot_png(o, rows))
    return paths


# Settings that must agree for two folders' rows to be one experiment's: all but the sizes and where it ran.
MERGE_SAME = ("model", "task", "judge", "judge_model", "pool_questions", "pool_samples", "pool_temperature", "ratio", "methods", "seeds", "epochs",
              "learning_rate", "learning_rates", "test_questions", "batch_size", "train_args", "dtype",
              "max_new_tokens")  # fmt: skip


def _setting(options: dict[str, Any], key: str) -> Any:
    return options.get(key, _DEFAULTS.get(key))


def merge_results(results: list[dict[str, Any]]) -> tuple[ExperimentOptions, list[dict[str, Any]]]:
    """One experiment's options and rows from the ``results.json`` of folders that ran the same plan at different
    sizes (say, on different machines). Their pools must be the same for the sizes to nest: the settings other than
    ``sizes`` must agree and the base model must have scored the same; a (size, method, epoch) in two inputs is
    refused rather than chosen."""
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]["options"]
    base = results[0]["rows"][0]["base"] if results[0]["rows"] else None
    rows: dict[tuple, dict[str, Any]] = {}
    for i, data in enumerate(results, 1):
        differ = [k for k in MERGE_SAME if _setting(data["options"], k) != _setting(first, k)]
        if differ:
            raise ValueError(f"input {i}: settings other than input 1's: {', '.join(differ)}")
        scored = {r["base"] for r in data["rows"]}
        if scored - {base}:
            raise ValueError(
                f"input {i}: the base model scored {sorted(scored)}, in input 1 {base}: another pool"
            )
        for r in data["rows"]:
            key = (r["size"], r["method"], r["epoch"])
            if key in rows:
                raise ValueError(
                    f"input {i}: size {key[0]}, {key[1]}, epoch {key[2]:g} is in an earlier input too"
                )
            rows[key] = r
    options = {k: v for k, v in first.items() if k in ExperimentOptions.__dataclass_fields__}
    options.update(sizes=sorted({size for size, _, _ in rows}), out="(merged)", dry_run=False)
    return ExperimentOptions(**options), [rows[k] for k in sorted(rows)]


def final_epoch_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last = max((r["epoch"] for r in rows), default=None)
    return [r for r in rows if r["epoch"] == last]


def plot_png(o: ExperimentOptions, rows: list[dict[str, Any]]) -> bytes:
    """Accuracy against data size at the last epoch, one line per method, error bars of one sd."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    final = final_epoch_rows(rows)
    for method in o.methods:
        mine = sorted((r for r in final if r["method"] == method), key=lambda r: r["size"])
        if not mine:
            continue
        ax.errorbar(
            [r["size"] for r in mine],
            [100 * r["mean"] for r in mine],
            yerr=[100 * (r["sd"] or 0) for r in mine],
            marker="o",
            capsize=3,
            label=method.upper(),
        )
    if rows:
        ax.axhline(100 * rows[0]["base"], color="grey", linestyle=":", label="base")
    ax.set_xscale("log", base=2)
    ax.set_xticks(o.sizes, [str(s) for s in o.sizes])
    ax.set_xlabel("training records")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{o.model} on {o.task}, epoch {final[0]['epoch']:g}" if final else o.model)
    ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _estimate(o: ExperimentOptions) -> str | None:
    """Wall time estimated from the cells already finished in OUT (none: nothing to estimate from yet)."""
    out = Path(o.out)
    rates = []
    for cell in cells(o):
        info = out / "runs" / cell.name / "run.json"
        if info.is_file():
            data = json.loads(info.read_text(encoding="utf-8"))
            if data.get("train_seconds"):
                rates.append(data["train_seconds"] / (cell.size * o.epochs))
    if not rates:
        return "  estimate: none yet (no finished run in this folder to time)"
    per = statistics.fmean(rates)
    left = sum(
        c.size * o.epochs
        for c in cells(o)
        if not (out / "runs" / c.name / "run.json").is_file()
        or not json.loads((out / "runs" / c.name / "run.json").read_text()).get("finished")
    )
    return f"  estimate: {per:.2f} s per record-epoch measured here; training left ~{per * left / 60:.0f} min (evaluation extra)"
