"""``nlft compare``: accuracy against epoch for several runs, as the paper's figures show it.

Reads the ``summary.json`` files ``nlft eval`` writes under ``RUN/eval/`` (one folder per checkpoint, see
``evaluation.folder_name``) and writes, for one protocol, data set and extraction rule:

* ``comparison.md``: epochs down, runs across (accuracy in %; ``mean ± sd`` over seeds where there are several);
* ``comparison.csv``: one row per run and checkpoint with every rule, for your own analysis;
* ``comparison.png``: accuracy against epoch, one line per run (NLFT solid, SFT dashed).

The base model evaluated with ``--include-base`` is epoch 0. The final weights of a run count as its last
epoch (``run.json``'s ``epochs``) unless that epoch was evaluated from its own checkpoint.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import read_json
from ..jsonl import atomic_write_bytes, atomic_write_text
from ..options import opt
from ..runs import EVAL_DIR, load_run
from ..tasks.answers import RULES
from .protocols import PROTOCOLS
from .questions import data_name
from .summary import RULE_NAMES, curve_rows, epoch_sort_key, epoch_text, percent

OUTPUT_NAME = "comparison"


@dataclass
class Curve:
    """One run's accuracy at each evaluated checkpoint, in epoch order (a final of unknown epoch last)."""

    label: str
    method: str
    run: str
    rows: list[dict[str, Any]]


def load_curve(
    run_path: str | Path, protocol: str, data: str, *, tag: str | None = None, label: str | None = None
) -> Curve:
    """The evaluated checkpoints of one run for ``protocol`` on ``data`` (a data spec or folder name part)."""
    run = load_run(run_path)
    name = data_name(data)
    found, others = [], set()
    for file in sorted((run.path / EVAL_DIR).glob("*/summary.json")):
        summary = read_json(file, "evaluation summary")
        missing = [
            k
            for k in ("accuracy", "questions", "items", "done", "complete")
            if not isinstance(summary, dict) or k not in summary
        ]
        if missing or not isinstance(summary["accuracy"], dict):
            raise ValueError(
                f"{file}: damaged evaluation summary (no {', '.join(missing) or 'accuracy'}); rerun nlft eval on {run.path}"
            )
        if (
            summary.get("protocol") == protocol
            and summary.get("data_name") == name
            and summary.get("tag") == tag
        ):
            found.append(summary)
        else:
            others.add(file.parent.name)
    if not found:
        seen = f" (it has: {', '.join(sorted(others))})" if others else " (it has none)"
        raise FileNotFoundError(
            f"{run.path}: no '{protocol}' results on '{name}'{f' tagged {tag!r}' if tag else ''} under {EVAL_DIR}/{seen}; "
            f"run `nlft eval {run.path} --protocol {protocol} --all-checkpoints` first"
        )
    rows = curve_rows(found)
    last = run.info.get("epochs")  # nlft train writes the epochs saved so far, as a list
    if isinstance(last, list):
        last = max(last) if last else None
    epochs = {r["epoch"] for r in rows if r["epoch"] is not None}
    kept = []
    for row in rows:
        if row["checkpoint"] == "final" and isinstance(last, (int, float)):
            if last in epochs:
                continue  # the same weights, evaluated from their per-epoch save
            row["epoch"] = float(last)
        kept.append(row)
    method = run.method
    return Curve(
        label or f"{run.path.name} ({method.upper()})",
        method,
        str(run.path),
        sorted(kept, key=epoch_sort_key),
    )


def markdown_table(curves: Sequence[Curve], rule: str, title: str) -> str:
    """Epochs down, runs across, for one rule. Unfinished evaluations are marked with ``*``."""
    epochs = sorted({r["epoch"] for c in curves for r in c.rows}, key=lambda e: (e is None, e or 0.0))
    lines = [
        f"**{title}**",
        "",
        "| epoch | " + " | ".join(c.label for c in curves) + " |",
        "|---:|" + "---:|" * len(curves),
    ]
    partial = False
    for epoch in epochs:
        cells = []
        for c in curves:
            row = next((r for r in c.rows if r["epoch"] == epoch), None)
            if row is None:
                cells.append("")
                continue
            star = "" if row["complete"] else "*"
            partial |= bool(star)
            cells.append(percent(row[rule], row[f"{rule}_std"]) + star)
        lines.append(f"| {epoch_text(epoch)} | " + " | ".join(cells) + " |")
    if partial:
        lines += ["", "\\* evaluation not finished: accuracy over the questions done so far."]
    return "\n".join(lines)


def curve_rules(curves: Sequence[Curve]) -> list[str]:
    """The grading rules the curves' evaluations report (their task's), in order."""
    return list(dict.fromkeys(rule for c in curves for row in c.rows for rule in row["rules"]))


def csv_text(curves: Sequence[Curve]) -> str:
    buf = io.StringIO()
    rules = curve_rules(curves)
    fields = [
        "run",
        "label",
        "method",
        "checkpoint",
        "epoch",
        "questions",
        "done",
        "seeds",
        *rules,
        *(f"{r}_std" for r in rules),
    ]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for c in curves:
        for row in c.rows:
            writer.writerow(
                {
                    "run": c.run,
                    "label": c.label,
                    "method": c.method,
                    "checkpoint": row["checkpoint"],
                    "epoch": "" if row["epoch"] is None else row["epoch"],
                    "questions": row["questions"],
                    "done": row["done"],
                    "seeds": row["seeds"],
                    **{
                        k: "" if row.get(k) is None else f"{row[k]:.6f}"
                        for r in rules
                        for k in (r, f"{r}_std")
                    },
                }
            )
    return buf.getvalue()


def pair_colors(curves: Sequence[Curve]) -> list[str]:
    """A matplotlib colour per curve. Runs whose folder names differ only by their method (``nlft-50`` and
    ``sft-50``) share one, so that each data size reads as a pair: same colour, solid NLFT, dashed SFT."""
    pairs: dict[str, str] = {}
    out = []
    for curve in curves:
        key = re.sub(re.escape(curve.method), "", Path(curve.run).name, flags=re.I).strip("-_. ") or curve.run
        out.append(pairs.setdefault(key, f"C{len(pairs) % 10}"))
    return out


def plot_png(curves: Sequence[Curve], rule: str, title: str) -> bytes:
    """Accuracy (%) against epoch, one line per run, as PNG bytes (matplotlib's Agg canvas, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    styles = {"nlft": ("-", "o"), "sft": ("--", "s"), "rft": ("-.", "^"), "sft-gold": (":", "D")}
    colors = pair_colors(curves)
    # Beyond a few runs a legend inside the axes covers lines; it goes to the right of them instead.
    outside = len(curves) > 3
    fig = Figure(figsize=(8.0 if outside else 6.4, 4.4), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = 0.0
    for curve, color in zip(curves, colors):
        points = [r for r in curve.rows if r["epoch"] is not None and r[rule] is not None]
        if not points:
            continue
        x = [r["epoch"] for r in points]
        y = [100 * r[rule] for r in points]
        err = [100 * (r[f"{rule}_std"] or 0.0) for r in points]
        line, marker = styles.get(curve.method, ("-.", "^"))
        ax.errorbar(
            x,
            y,
            yerr=err if any(err) else None,
            label=curve.label,
            linestyle=line,
            marker=marker,
            markersize=5,
            linewidth=1.8,
            capsize=3,
            color=color,
        )
        top = max(top, *(a + b for a, b in zip(y, err)))
    ax.set_xlabel("Epoch")
    ax.set_ylabel(f"Accuracy (%), {RULE_NAMES.get(rule, rule)}")
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # Room above the best point for the legend (a 0-100 scale would flatten the differences that matter), and a
    # sliver below 0 so that points at 0% are not hidden by the axis.
    upper = min(100.0, max(5.0, top * 1.25))
    ax.set_ylim(-0.03 * upper, upper)
    ax.grid(True, alpha=0.3)
    if outside:
        ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(frameon=False, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@dataclass(kw_only=True)
class CompareOptions:
    """``nlft compare``: the arguments of ``compare``."""

    runs: list[str] = opt(
        positional=True,
        nargs="+",
        metavar="RUN",
        help="run folders evaluated with `nlft eval RUN --all-checkpoints`",
    )
    out: str = opt(OUTPUT_NAME, help="output folder")
    protocol: str = opt("paper", choices=PROTOCOLS, help="the --protocol the runs were evaluated with")
    data: str = opt("gsm8k:test", help="the --data the runs were evaluated on")
    rule: str = opt(
        "authors",
        help=f"grading rule to tabulate and plot, one of the evaluations' (numeric tasks: {', '.join(RULES)})",
    )
    tag: str | None = opt(None, help="the --tag of the evaluations to compare")
    labels: list[str] | None = opt(None, help="legend labels, one per run (default: folder name and method)")
    title: str | None = opt(None, help="plot title")
    overwrite: bool = opt(False, help="replace the comparison an earlier nlft compare wrote in --out")


MARKER = "<!-- made by nlft compare -->"  # comparison.md's first line: what marks the outputs as nlft's own


def _our_comparison(md: Path) -> bool:
    try:
        with open(md, encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip() == MARKER
    except OSError:
        return False


def compare(
    runs: Sequence[str | Path],
    out: str | Path = OUTPUT_NAME,
    *,
    protocol: str = "paper",
    data: str = "gsm8k:test",
    rule: str = "authors",
    tag: str | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``comparison.{md,csv,png}`` into ``out``; returns their paths. Existing ones are replaced only when an
    earlier ``nlft compare`` wrote them, and with ``overwrite``."""
    from ..files import check_replaceable

    if labels and len(labels) != len(runs):
        raise ValueError(f"--labels: {len(labels)} labels for {len(runs)} runs")
    curves = [
        load_curve(r, protocol, data, tag=tag, label=labels[i] if labels else None)
        for i, r in enumerate(runs)
    ]
    if rule not in curve_rules(curves):
        raise ValueError(f"rule '{rule}': choose from {', '.join(curve_rules(curves))}")
    name = data_name(data)
    what = f"GSM8K {name}" if data.startswith("gsm8k:") or name in ("test", "train") else name
    sizes = {r["questions"] for c in curves for r in c.rows}
    size = f", {sizes.pop()} questions" if len(sizes) == 1 else ""
    title = title or f"{what} accuracy ({protocol} protocol{size})"
    out = Path(out)
    paths = {
        "md": out / f"{OUTPUT_NAME}.md",
        "csv": out / f"{OUTPUT_NAME}.csv",
        "png": out / f"{OUTPUT_NAME}.png",
    }
    ours = _our_comparison(paths["md"])
    for path in paths.values():
        check_replaceable(path, ours, overwrite=overwrite, what="a comparison nlft compare wrote")
    atomic_write_text(
        paths["md"],
        MARKER + "\n" + markdown_table(curves, rule, f"{title}, {RULE_NAMES.get(rule, rule)}, %") + "\n",
    )
    atomic_write_text(paths["csv"], csv_text(curves))
    atomic_write_bytes(paths["png"], plot_png(curves, rule, title))
    return paths
