"""Scoring evaluated responses and summarising them: accuracy by rule, over seeds, and the accuracy-per-epoch
curve that ``nlft compare`` sets side by side.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..models.generation import Completion
from ..tasks import Task
from ..tasks.answers import LM_EVAL_RULES, RULES
from .protocols import Prompted


def item_key(question_id: str, seed: int | None) -> str:
    return question_id if seed is None else f"{question_id}@seed{seed}"


def score_row(prompted: Prompted, seed: int | None, completion: Completion, task: Task) -> dict[str, Any]:
    """One line of ``items.jsonl``: the question, gold, response, what each of ``task``'s rules extracted and
    whether it is right."""
    q = prompted.question
    text = completion.text or ""
    g = task.grade(text, q)
    return {
        "key": item_key(q.id, seed),
        "id": q.id,
        "seed": seed,
        "question": q.question,
        "gold": g.gold,
        "response": text,
        "finish_reason": completion.finish_reason,
        "extracted": g.extracted,
        "correct": g.matches,
        "lm_eval_correct": g.lm_eval,
        **prompted.info,
    }


def accuracy(rows: Sequence[dict], rules: Sequence[str] = RULES) -> dict[str, float | None]:
    """The fraction right by each rule (None for no rows)."""
    n = len(rows)
    return {rule: (sum(bool(r["correct"][rule]) for r in rows) / n if n else None) for rule in rules}


def summarize(
    rows: Sequence[dict], keys: Sequence[str], seeds: Sequence[int | None], rules: Sequence[str] = RULES
) -> dict[str, Any]:
    """Accuracy by each of ``rules`` (the task's) over the items in ``keys`` that are done; per seed, mean and
    spread with several seeds."""
    by_key = {r["key"]: r for r in rows}
    done = [by_key[k] for k in keys if k in by_key]
    out: dict[str, Any] = {
        "items": len(keys),
        "done": len(done),
        "complete": len(done) == len(keys),
        "correct": {rule: sum(bool(r["correct"][rule]) for r in done) for rule in rules},
    }
    per_seed = []
    for seed in seeds:
        seed_rows = [r for r in done if r["seed"] == seed]
        per_seed.append({"seed": seed, "done": len(seed_rows), "accuracy": accuracy(seed_rows, rules)})
    if len(seeds) > 1:
        out["per_seed"] = per_seed
        scored = [s["accuracy"] for s in per_seed if s["done"]]
        out["accuracy"] = {
            rule: statistics.fmean(a[rule] for a in scored) if scored else None for rule in rules
        }
        # The sample standard deviation across seeds (n - 1 in the denominator).
        out["accuracy_std"] = {
            rule: statistics.stdev(a[rule] for a in scored) if len(scored) > 1 else None for rule in rules
        }
    else:
        out["accuracy"] = per_seed[0]["accuracy"] if per_seed else accuracy([], rules)
    if set(LM_EVAL_RULES) <= set(rules):
        # lm-eval's own exact-match scoring of its two filters (string comparison), over all items done.
        out["lm_eval_exact_match"] = {
            rule: (sum(bool(r["lm_eval_correct"][rule]) for r in done) / len(done) if done else None)
            for rule in LM_EVAL_RULES
        }
    out["finish_reasons"] = dict(sorted(Counter(str(r.get("finish_reason")) for r in done).items()))
    return out


def _fmt_acc(acc: dict[str, float | None], std: dict[str, float | None] | None = None) -> str:
    parts = []
    for rule, value in acc.items():
        text = "  -  " if value is None else f"{100 * value:5.1f}%"
        if std is not None and std[rule] is not None:
            text += f" ± {100 * std[rule]:.1f}"
        parts.append(f"{rule} {text}")
    return "  ".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# Accuracy per checkpoint (the curve; nlft compare sets several side by side)
# ----------------------------------------------------------------------------------------------------------------

RULE_NAMES = {"strict": "strict match", "flexible": "flexible extract", "authors": "authors' rule"}


def epoch_sort_key(row: dict[str, Any]) -> tuple[bool, float]:
    return (row["epoch"] is None, row["epoch"] if row["epoch"] is not None else 0.0)


def curve_rows(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A flat row per evaluation summary: checkpoint, epoch, counts, accuracy and spread per rule."""
    rows = []
    for s in summaries:
        row: dict[str, Any] = {
            "checkpoint": s.get("checkpoint") or "final",
            "epoch": s.get("epoch"),
            "questions": s["questions"],
            "items": s["items"],
            "done": s["done"],
            "complete": s["complete"],
            "seeds": len(s.get("seeds") or []) or 1,
        }
        std = s.get("accuracy_std") or {}
        row["rules"] = list(s["accuracy"])
        for rule in s["accuracy"]:
            row[rule] = s["accuracy"][rule]
            row[f"{rule}_std"] = std.get(rule)
        rows.append(row)
    return sorted(rows, key=epoch_sort_key)


def percent(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:.1f}"
    return text + (f" ± {100 * std:.1f}" if std is not None else "")


def epoch_text(epoch: float | None) -> str:
    if epoch is None:
        return "final"
    return str(int(epoch)) if float(epoch).is_integer() else f"{epoch:g}"


def markdown_curve(rows: Sequence[dict[str, Any]], title: str) -> str:
    """One run: a row per checkpoint, a column per rule (the task's)."""
    rules = rows[0]["rules"] if rows else list(RULES)
    lines = [
        f"**{title}** (accuracy, %)",
        "",
        "| epoch | checkpoint | questions | " + " | ".join(RULE_NAMES.get(r, r) for r in rules) + " |",
        "|---:|---|---:|" + "---:|" * len(rules),
    ]
    for row in rows:
        n = f"{row['done']}/{row['items']}" if not row["complete"] else str(row["items"])
        cells = [percent(row.get(r), row.get(f"{r}_std")) for r in rules]
        lines.append(
            f"| {epoch_text(row['epoch'])} | {row['checkpoint']} | {n} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)
