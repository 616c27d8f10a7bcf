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
    tune_rates: list[float] = opt(
        type=RATE,
        default_factory=list,
        metavar="RATE",
        help="choose each method's learning rate from these (e.g. 2e-4 6e-4 2e-3): every method trains once per "
        "rate on --tune-size records with seed --tune-seed, and the rate best on --tune-questions held-out train "
        "questions (never test ones) is its rate in the grid; kept in OUT/tuning/rates.json. A method given "
        "--method-lr is not tuned",
    )
    tune_size: int = opt(
        25, type=POSITIVE, help="records of the tuning runs (a nested subset like the grid's)"
    )
    tune_seed: int = opt(0, help="seed of the tuning runs")
    tune_questions: int = opt(
        200,
        type=POSITIVE,
        help="held-out questions the tuning runs are scored on: the last ones of the task's train split, which "
        "the pool never reaches",
    )
    # The rates --tune-rates chose (filled in by the run, kept in results.json), never set by hand.
    tuned_rates: dict[str, float] = opt(default_factory=dict, cli=False, help="rates chosen by tuning")
    test_questions: int = opt(200, type=POSITIVE, help="test questions every run is evaluated on")
    eval_epochs: str = opt(
        "all",
        choices=("all", "last"),
        help="evaluate every epoch's adapter, or only the last one (at 2 epochs, half the evaluations)",
    )
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
        if self.tune_rates and (
            len(set(self.tune_rates)) != len(self.tune_rates) or len(self.tune_rates) < 2
        ):
            raise ValueError(f"--tune-rates must be at least 2 distinct rates, got {self.tune_rates}")
        if self.eval_epochs not in ("all", "last"):
            raise ValueError(f"--eval-epochs must be all or last, got {self.eval_epochs!r}")
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
            ("tune_rates", lambda v: isinstance(v, list) and all(number(x) and x > 0 for x in v), "a list of rates"),
            ("tune_size", lambda v: whole(v) and v >= 3, "a whole number of at least 3"),
            ("tune_seed", whole, "a whole number"),
            ("tune_questions", lambda v: whole(v) and v >= 1, "a whole number of at least 1"),
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
        """The method's rate: given (--method-lr), chosen by tuning (--tune-rates), or --learning-rate."""
        if method in self.learning_rates:
            return self.learning_rates[method]
        return self.tuned_rates.get(method, self.learning_rate)

    def tuned(self) -> list[str]:
        """The methods whose rate tuning chooses."""
        return [m for m in self.methods if self.tune_rates and m not in self.learning_rates]

    def data_sizes(self) -> list[int]:
        """Every subset size the experiment trains on: the grid's and the tuning runs'."""
        return sorted(set(self.sizes) | ({self.tune_size} if self.tuned() else set()))


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
    wrong records are shuffled once (seeded) and every size takes the first ones of each. Where a question was
    answered several times (``--pool-samples``), each side takes one answer per question before any second one,
    so that a set covers as many questions as the pool allows."""
    correct = sorted((r for r in records if r.is_correct), key=lambda r: r.id)
    wrong = sorted((r for r in records if not r.is_correct and r.judgment), key=lambda r: r.id)
    rng = random.Random(seed)
    rng.shuffle(correct)
    rng.shuffle(wrong)
    correct, wrong = _questions_first(correct), _questions_first(wrong)
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


def _questions_first(records: list) -> list:
    """``records`` in their order, but every question's first answer before any question's second (a stable sort by
    the answer's rank within its question: with one answer per question the order is unchanged)."""
    seen: dict[str, int] = {}
    ranks = []
    for r in records:
        question = str(r.extra.get("question_id", r.question))
        ranks.append(seen.get(question, 0))
        seen[question] = ranks[-1] + 1
    return [r for _, r in sorted(zip(ranks, records, strict=True), key=lambda pair: pair[0])]


def _write_jsonl(path: Path, records: list) -> None:
    from .jsonl import atomic_write_jsonl

    atomic_write_jsonl(path, [r.to_dict() for r in records])


def plan_text(o: ExperimentOptions) -> str:
    n = len(cells(o))
    trained = sum(size * o.epochs for size in o.sizes) * len(o.seeds) * len(o.methods)
    per_run = o.epochs if o.eval_epochs == "all" else 1
    evals = (n * per_run + 1) * o.test_questions
    tuning = ""
    if o.tuned():
        runs = len(o.tuned()) * len(o.tune_rates)
        tuning = (
            f"\n  tuning first: {', '.join(o.tuned())} at rates {', '.join(f'{r:g}' for r in o.tune_rates)}: {runs} "
            f"runs on {o.tune_size} records (seed {o.tune_seed}), {runs * o.tune_size * o.epochs} record-epochs, "
            f"each scored on {o.tune_questions} held-out train questions"
        )
    return (
        f"{o.model} on {o.task}: {len(o.methods)} methods ({', '.join(o.methods)}) x {len(o.sizes)} sizes "
        f"({', '.join(map(str, o.sizes))}) x {len(o.seeds)} seeds = {n} training runs of {o.epochs} epochs\n"
        f"  pool: {o.pool_questions} train questions answered "
        f"{'once' if o.pool_samples == 1 else f'{o.pool_samples} times each at temperature {o.pool_temperature}'} "
        f"and judged ({o.judge}); subsets at correct:wrong {o.ratio}\n"
        f"  up to {o.max_new_tokens} new tokens per sample, test answer and GRPO completion\n"
        f"  cost: {trained} record-epochs of training, {evals} test generations "
        f"({n} runs x {per_run} evaluated epoch{'s' if per_run > 1 else ''} + the base model, "
        f"{o.test_questions} questions each)" + tuning
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
    _data(o, out)
    if o.tuned():
        tune_rates(o, out)
    for cell in cells(o):
        _train_cell(o, out, cell)
        _evaluate(o, out / "runs" / cell.name, all_checkpoints=o.eval_epochs == "all")
    _evaluate(o, out / "base", model=o.model)
    collected = collect(o, out)
    paths = write_results(o, out, collected)
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
    paths = {size: out / "data" / f"size-{size}" / "nlft.jsonl" for size in o.data_sizes()}
    if all(path.is_file() for path in paths.values()):
        # Built earlier (or restored from a committed chunk): the pool is not needed again.
        return {size: load_records(path) for size, path in paths.items()}
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
    subsets = nested_subsets(
        load_records(pool / "judged.jsonl"), o.data_sizes(), parse_ratio(o.ratio), seed=0
    )
    for size, records in subsets.items():
        if not paths[size].is_file():
            _write_jsonl(paths[size], records)
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


def _train_cell(o: ExperimentOptions, out: Path, cell: Cell) -> None:
    _train(o, out / "runs" / cell.name, out, cell, o.rate(cell.method))


def _finished(run: Path) -> bool:
    info = run / "run.json"
    return info.is_file() and bool(json.loads(info.read_text(encoding="utf-8")).get("finished"))


def _train(o: ExperimentOptions, run: Path, out: Path, cell: Cell, rate: float) -> None:
    """Train one cell with ``nlft train`` in a process of its own: its peak memory is its own (a process that ran
    earlier cells keeps their memory), and a crash stops the experiment, not the interpreter."""
    import sys

    if _finished(run):
        return
    resume = ["--resume_from_checkpoint", "last"] if run.exists() else []
    print(
        f"\n== {run.name}: {cell.method} on {cell.size} records, seed {cell.seed}, rate {rate:g} ==",
        flush=True,
    )
    args = [
        "--method", cell.method,
        "--data", str(out / "data" / f"size-{cell.size}" / "nlft.jsonl"),
        "--task", o.task,
        "--model_name_or_path", o.model,
        "--output_dir", str(run),
        "--num_train_epochs", str(o.epochs),
        "--per_device_train_batch_size", str(o.batch_size),
        "--gradient_accumulation_steps", "1",
        "--learning_rate", str(rate),
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
            f"{run.name}: nlft train exited with status {code} (its messages are above; rerun to resume)"
        )


def _evaluate(
    o: ExperimentOptions,
    target: Path,
    *,
    all_checkpoints: bool = False,
    model: str | None = None,
    data: str | None = None,
    limit: int | None = None,
) -> None:
    from .evals.evaluation import EvalOptions, EvalSettings, run_eval
    from .models.generation import BackendOptions

    run_eval(
        EvalOptions(
            model=model or str(target),
            backend=BackendOptions(batch_size=o.generation_batch, dtype=o.dtype, device=o.device),
            all_checkpoints=all_checkpoints,
            data=data or f"{o.task}:test",
            settings=EvalSettings(limit=limit or o.test_questions, max_new_tokens=o.max_new_tokens),
            out=str(target) if model else None,
            progress=o.progress,
        )
    )


TUNING = "tuning"


def held_out_questions(o: ExperimentOptions) -> list:
    """The tuning runs' questions: the last ``tune_questions`` of the task's train split, which the pool (the
    first ``pool_questions``) never reaches, and no test question."""
    from .tasks import get_task

    train = get_task(o.task).load("train")
    if o.pool_questions + o.tune_questions > len(train):
        raise ValueError(
            f"--tune-questions {o.tune_questions}: with --pool-questions {o.pool_questions} the held-out questions "
            f"would overlap the pool ({o.task} has {len(train)} train questions)"
        )
    return train[-o.tune_questions :]


def choose_rate(scores: dict[str, float]) -> float:
    """The rate with the best held-out accuracy; a tie goes to the smaller rate (the smaller change)."""
    return min((-accuracy, float(rate)) for rate, accuracy in scores.items())[1]


def tune_rates(o: ExperimentOptions, out: Path) -> dict[str, Any]:
    """Each tuned method trained once per ``--tune-rates`` rate on the ``tune_size`` subset (seed ``tune_seed``),
    scored on the held-out questions after its last epoch; the best rate is kept in OUT/tuning/rates.json (method
    by method, as each finishes) and set in ``o.tuned_rates``. Methods already in that file are not tuned again."""
    from .files import read_json
    from .jsonl import atomic_write_jsonl, atomic_write_text

    folder = out / TUNING
    path = folder / "rates.json"
    settings = {
        "rates": list(o.tune_rates), "size": o.tune_size, "seed": o.tune_seed, "questions": o.tune_questions,
        "epochs": o.epochs,
    }  # fmt: skip
    state: dict[str, Any] = {"settings": settings, "methods": {}}
    if path.is_file():
        state = read_json(path, "tuning results")
        if not isinstance(state, dict) or state.get("settings") != settings:
            raise ValueError(
                f"{path}: rates tuned with other settings ({state.get('settings') if isinstance(state, dict) else state}"
                f", now {settings}); use another --out"
            )
    questions = folder / "held-out.jsonl"
    if not questions.is_file():
        rows = [{"id": q.id, "question": q.question, "reference": q.reference} for q in held_out_questions(o)]
        atomic_write_jsonl(questions, rows)
    for method in o.tuned():
        if method in state["methods"]:
            continue
        cell = Cell(method, o.tune_size, o.tune_seed)
        scores = {}
        for rate in o.tune_rates:
            run = folder / f"{cell.name}-lr{rate:g}"
            _train(o, run, out, cell, rate)
            _evaluate(o, run, data=str(questions), limit=o.tune_questions)
            _, summary = final_evaluation(run, str(questions))
            scores[f"{rate:g}"] = summary["accuracy"]["authors"]
        state["methods"][method] = {"accuracy": scores, "chosen": choose_rate(scores)}
        atomic_write_text(path, json.dumps(state, indent=1) + "\n")
        print(
            f"tuning {method}: held-out accuracy "
            + ", ".join(f"{r} {100 * a:.1f}%" for r, a in scores.items())
            + f"; chosen {state['methods'][method]['chosen']:g}",
            flush=True,
        )
    o.tuned_rates.update({m: state["methods"][m]["chosen"] for m in o.tuned()})
    return state


def final_evaluation(run: Path, data: str) -> tuple[Path, dict[str, Any]]:
    """The folder and summary of a run's evaluation on ``data`` (greedy, the paper protocol) at its last epoch."""
    from .evals.questions import data_name
    from .files import read_json
    from .runs import EVAL_DIR

    found = []
    for file in sorted((run / EVAL_DIR).glob("*/summary.json")):
        summary = read_json(file, "evaluation summary")
        if (
            isinstance(summary, dict)
            and summary.get("protocol") == "paper"
            and summary.get("data_name") == data_name(data)
            and summary.get("tag") is None
            and summary.get("complete")
        ):
            last = summary.get("checkpoint") in (None, "final")
            found.append(((last, summary.get("epoch") or 0), file.parent, summary))
    if not found:
        raise FileNotFoundError(f"{run}: no complete evaluation on {data}; rerun the experiment to make it")
    _, folder, summary = max(found, key=lambda f: f[0])
    return folder, summary


@dataclass
class Collected:
    """What an experiment measured: the table's rows and, beside them, every cell's own figures."""

    rows: list[dict[str, Any]]
    cells: list[
        dict[str, Any]
    ]  # per run: rate, accuracy per epoch, costs, the last epoch's per-question outcomes
    base: dict[str, Any]  # the base model's accuracy and outcomes, and the question ids
    tuning: dict[str, Any]  # OUT/tuning/rates.json's methods ({} when no rate was tuned)


def collect(o: ExperimentOptions, out: Path) -> Collected:
    """Every cell's figures, read from its run folder and evaluations, and the table built from them."""
    from .evals.compare import load_curve
    from .evals.outcomes import RULES, read_outcomes
    from .files import read_json
    from .tasks import get_task

    references = {q.id: q.reference for q in get_task(o.task).load("test", limit=o.test_questions)}
    summary = read_json(out / "base" / "summary.json", "evaluation summary")
    outcomes = read_outcomes(out / "base", references).encode()
    ids = outcomes.pop("ids")
    base = {"accuracy": summary["accuracy"], "outcomes": outcomes, "question_ids": ids}
    found = []
    for cell in cells(o):
        run = out / "runs" / cell.name
        curve = load_curve(run, "paper", f"{o.task}:test")
        epochs = {
            f"{row['epoch']:g}": {rule: row[rule] for rule in RULES}
            for row in curve.rows
            if row["epoch"] is not None
        }
        folder, _ = final_evaluation(run, f"{o.task}:test")
        mine = read_outcomes(folder, references).encode()
        if mine.pop("ids") != ids:
            raise ValueError(f"{folder}: evaluated on other questions than the base model ({out / 'base'})")
        info = read_json(run / "run.json", "run info")
        seconds = info.get("train_seconds")
        records = cell.size * o.epochs
        found.append(
            {
                "name": cell.name, "method": cell.method, "size": cell.size, "seed": cell.seed,
                "learning_rate": o.rate(cell.method), "epochs": epochs,
                "seconds_per_record_epoch": seconds / records if seconds else None,
                "seconds_per_epoch": seconds / o.epochs if seconds else None,
                "peak_memory_mb": info.get("peak_memory_mb"),
                "tokens_generated_per_record_epoch": info.get("tokens_generated", 0) / records,
                "outcomes": mine,
            }
        )  # fmt: skip
    tuning = {}
    if (out / TUNING / "rates.json").is_file():
        tuning = read_json(out / TUNING / "rates.json", "tuning results")
    return Collected(rows_from_cells(found, base), found, base, tuning)


def rows_from_cells(found: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (size, method, epoch): accuracy (authors' rule) of each seed, mean, sd, the strict and
    flexible rules' means, and the cost."""
    by_key: dict[tuple[int, str, float], list[tuple[int, dict[str, float]]]] = {}
    for cell in found:
        for epoch, accuracy in cell["epochs"].items():
            by_key.setdefault((cell["size"], cell["method"], float(epoch)), []).append(
                (cell["seed"], accuracy)
            )
    rows = []
    for (size, method, epoch), runs in sorted(by_key.items()):
        runs.sort(key=lambda r: r[0])
        values = [a["authors"] for _, a in runs]
        mine = [c for c in found if c["size"] == size and c["method"] == method]
        rows.append(
            {
                "size": size,
                "method": method,
                "epoch": epoch,
                "seeds": len(values),
                "seed_ids": [s for s, _ in runs],
                "accuracy": values,
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "strict_mean": statistics.fmean(a["strict"] for _, a in runs),
                "flexible_mean": statistics.fmean(a["flexible"] for _, a in runs),
                **_mean_costs(mine),
                "base": base["accuracy"]["authors"],
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


def paired_differences(found: list[dict[str, Any]], reference: str = "nlft") -> list[dict[str, Any]]:
    """Per size, ``reference`` against every other method at the last epoch: the mean difference in accuracy
    (authors' rule) over the seeds both ran and the same test questions, with a 95% bootstrap interval that
    resamples questions and seeds (``nlft.evals.bootstrap``)."""
    from .evals.bootstrap import paired_difference

    def correct(cell):
        return [c == "1" for c in cell["outcomes"]["authors"]]

    out = []
    for size in sorted({c["size"] for c in found}):
        mine = {c["seed"]: c for c in found if c["size"] == size and c["method"] == reference}
        others = sorted({c["method"] for c in found if c["size"] == size} - {reference})
        for method in others:
            theirs = {c["seed"]: c for c in found if c["size"] == size and c["method"] == method}
            seeds = sorted(set(mine) & set(theirs))
            if not seeds:
                continue
            r = paired_difference([correct(mine[s]) for s in seeds], [correct(theirs[s]) for s in seeds])
            out.append(
                {
                    "size": size, "method": reference, "against": method, "seeds": seeds,
                    "questions": r.questions, "difference": r.difference, "low": r.low, "high": r.high,
                }
            )  # fmt: skip
    return out


BEHAVIOUR = ("authors", "strict", "flexible", "formatted", "truncated", "correct", "arithmetic", "divergence",
             "final-answer", "no-answer")  # fmt: skip


def behaviour(found: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """What the test answers look like after the last epoch, per size and method (mean over seeds), and for the
    base model: accuracy by rule, the share in GSM8K format (``#### N``), mean length, the share cut off by the
    token limit, and the arithmetic judge's verdicts. A gain in strict accuracy without one in flexible accuracy
    is the answer format learnt, not better reasoning."""
    from .evals.outcomes import Outcomes

    def figures(encoded_runs: list[dict[str, Any]]) -> dict[str, float]:
        runs = [Outcomes.decode({"ids": base["question_ids"], **e}) for e in encoded_runs]
        row = {name: statistics.fmean(r.share(name) for r in runs) for name in BEHAVIOUR}
        row["chars"] = statistics.fmean(r.mean_chars() for r in runs)
        return row

    rows = [{"size": 0, "method": "base", "seeds": 1, **figures([base["outcomes"]])}]
    for size, method in sorted({(c["size"], c["method"]) for c in found}):
        mine = [c for c in found if c["size"] == size and c["method"] == method]
        rows.append(
            {"size": size, "method": method, "seeds": len(mine), **figures([c["outcomes"] for c in mine])}
        )
    return rows


def write_results(o: ExperimentOptions, out: Path, collected: Collected) -> dict[str, Path]:
    from .jsonl import atomic_write_bytes, atomic_write_text

    rows = collected.rows

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
    paired = paired_differences(collected.cells) if collected.cells else []
    if paired:
        lines += [
            "",
            "**NLFT minus each method, last epoch: accuracy points (authors' rule) over the same test questions and "
            "seeds, with a 95% bootstrap interval resampling both** (an interval that holds 0 is no difference)",
            "",
            "| records | against | seeds | questions | NLFT - method | 95% interval |",
            "|---:|---|---:|---:|---:|---|",
        ]
        lines += [
            f"| {p['size']} | {p['against']} | {len(p['seeds'])} | {p['questions']} | {100 * p['difference']:+.1f} "
            f"| [{100 * p['low']:+.1f}, {100 * p['high']:+.1f}] |"
            for p in paired
        ]
    seen = behaviour(collected.cells, collected.base) if collected.cells else []
    if seen:
        lines += [
            "",
            "**What the test answers look like after the last epoch** (mean over seeds, % of questions; verdicts "
            "of the arithmetic judge: an arithmetic slip, right arithmetic on a wrong path, a wrong set-up, no "
            "number)",
            "",
            "| records | method | authors | strict | flexible | `#### N` | cut off | mean chars | judge: correct "
            "| arithmetic | wrong path | set-up | no answer |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['size'] or '-'} | {r['method']} | " + " | ".join(pct(r[k]) for k in BEHAVIOUR[:5])
            + f" | {r['chars']:.0f} | " + " | ".join(pct(r[k]) for k in BEHAVIOUR[5:]) + " |"
            for r in seen
        ]  # fmt: skip
    if collected.tuning.get("methods"):
        rates = collected.tuning["settings"]["rates"]
        lines += [
            "",
            f"**Learning rate per method**: held-out accuracy (%) on {collected.tuning['settings']['questions']} "
            f"train questions outside the pool, {collected.tuning['settings']['size']} records, seed "
            f"{collected.tuning['settings']['seed']}, after the last epoch; the best is kept (a tie: the smaller rate)",
            "",
            "| method | " + " | ".join(f"{r:g}" for r in rates) + " | chosen |",
            "|---|" + "---:|" * (len(rates) + 1),
        ]
        for method, t in collected.tuning["methods"].items():
            lines.append(
                f"| {method} | "
                + " | ".join(pct(t["accuracy"].get(f"{r:g}")) for r in rates)
                + f" | {t['chosen']:g} |"
            )
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
            {
                "options": asdict(o),
                "rows": rows,
                "cost_ratios": ratios,
                "paper_ratios": PAPER_RATIOS,
                "paired": paired,
                "behaviour": seen,
                "tuning": collected.tuning,
                "base": collected.base,
                "cells": collected.cells,
            },
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


def merge_results(results: list[dict[str, Any]]) -> tuple[ExperimentOptions, Collected]:
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
    return ExperimentOptions(**options), Collected([rows[k] for k in sorted(rows)], [], {}, {})


# What may differ between chunks of one experiment (say, on different machines): which cells each ran.
CHUNK_MAY_DIFFER = ("methods", "seeds", "sizes", "learning_rates", "tuned_rates")


def merge_chunks(results: list[dict[str, Any]]) -> tuple[ExperimentOptions, Collected]:
    """One experiment from the ``results.json`` of chunks that each ran some of its cells (a group of methods, a
    size, a seed). Refused: settings that differ other than which cells ran; another base model score on any
    question (another pool, test set or decoding); a method with two learning rates; a cell in two chunks."""
    if not results:
        raise ValueError("nothing to merge")
    same = [k for k in MERGE_SAME if k not in CHUNK_MAY_DIFFER] + ["tune_rates", "tune_size", "tune_seed",
                                                                    "tune_questions", "eval_epochs"]  # fmt: skip
    first = results[0]
    found: dict[str, dict[str, Any]] = {}
    rates: dict[str, float] = {}
    tuning: dict[str, Any] = {}
    for i, data in enumerate(results, 1):
        if "cells" not in data or "base" not in data:
            raise ValueError(
                f"input {i}: written before chunks kept their cells; rerun its experiment to rewrite it"
            )
        differ = [k for k in same if _setting(data["options"], k) != _setting(first["options"], k)]
        if differ:
            raise ValueError(f"input {i}: settings other than input 1's: {', '.join(differ)}")
        if data["base"] != first["base"]:
            raise ValueError(
                f"input {i}: the base model answered the test questions otherwise than in input 1: another pool, "
                "test set or machine"
            )
        if data.get("tuning") and tuning and data["tuning"]["settings"] != tuning["settings"]:
            raise ValueError(f"input {i}: tuned with other settings than an earlier input")
        for method, t in (data.get("tuning") or {}).get("methods", {}).items():
            earlier = tuning.get("methods", {}).get(method)
            if earlier is not None and earlier != t:
                raise ValueError(f"input {i}: {method}'s tuning differs from an earlier input's")
            tuning.setdefault("settings", data["tuning"]["settings"])
            tuning.setdefault("methods", {})[method] = t
        for cell in data["cells"]:
            if cell["name"] in found:
                raise ValueError(f"input {i}: {cell['name']} is in an earlier input too")
            if rates.setdefault(cell["method"], cell["learning_rate"]) != cell["learning_rate"]:
                raise ValueError(
                    f"input {i}: {cell['name']} trained at rate {cell['learning_rate']:g}, other {cell['method']} "
                    f"runs at {rates[cell['method']]:g}"
                )
            found[cell["name"]] = cell
    cells_ = sorted(found.values(), key=lambda c: (c["size"], list(METHODS).index(c["method"]), c["seed"]))
    options = {k: v for k, v in first["options"].items() if k in ExperimentOptions.__dataclass_fields__}
    options.update(
        sizes=sorted({c["size"] for c in cells_}),
        seeds=sorted({c["seed"] for c in cells_}),
        methods=[m for m in METHODS if m in rates],
        learning_rates={},
        tuned_rates=rates,
        out="(merged)",
        dry_run=False,
    )
    return ExperimentOptions(**options), Collected(
        rows_from_cells(cells_, first["base"]), cells_, first["base"], tuning
    )


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
