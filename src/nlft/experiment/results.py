"""What an experiment measured: every cell's figures, the table over seeds, NLFT paired with each baseline, what
the test answers look like, the costs, and the files and plot that report them."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .options import ExperimentOptions
from .plan import cells
from .steps import final_evaluation
from .tuning import TUNING


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
    from ..evals.compare import load_curve
    from ..evals.outcomes import RULES, read_outcomes
    from ..files import read_json
    from ..tasks import get_task

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
    from ..evals.bootstrap import paired_difference

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
    from ..evals.outcomes import Outcomes

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
    from ..jsonl import atomic_write_bytes, atomic_write_text

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
