"""What an experiment is: its cells (method x size x seed), the nested training sets, the plan it prints, and
the identity a rerun of the same folder must keep."""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from .options import ExperimentOptions


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


# The settings that decide the pool and so the records: one folder holds one pool.
POOL_SETTINGS = (
    "model", "task", "judge", "pool_questions", "pool_samples", "pool_temperature", "ratio", "max_new_tokens",
)  # fmt: skip


# What may grow between reruns while no subset has been built from the pool (the first N questions, the first K
# samples of each, are the same whatever N and K: the pool only gains answers).
GROWABLE = ("pool_questions", "pool_samples")


# A folder written before a setting existed ran at its default.
DEFAULTS = {f.name: f.default for f in fields(ExperimentOptions) if f.default is not MISSING}


def check_same_plan(out: Path, o: ExperimentOptions) -> None:
    """A rerun continues the same experiment; other pool or data settings in the same folder are refused."""
    from ..jsonl import atomic_write_text

    path = out / "experiment.json"
    fixed = {k: v for k, v in asdict(o).items() if k in POOL_SETTINGS}
    if o.judge != "arithmetic":
        fixed["judge_model"] = o.judge_model
    if path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8")).get("fixed", {})
        except ValueError:
            raise ValueError(f"{path}: damaged; remove it or use another --out") from None
        was = {k: earlier.get(k, DEFAULTS.get(k)) for k in fixed}
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


def estimate(o: ExperimentOptions) -> str | None:
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
