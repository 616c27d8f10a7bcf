"""``nlft check MODEL``: does this model read the standard answer and the judgment, before anyone trains it?

NLFT works only if the two extra prompts change the model's probabilities in the right places: the standard answer
(X_std) must raise the probability of a right solution's tokens, and the judgment (X_judge) must raise the
probability of the tokens it blames more than of the others. Measured, on a task's test questions or on records:

1. **accuracy** (task only): greedy answers to the first ``questions`` test questions under the paper protocol's
   prompt (X_base), graded by the task; the wrong ones judged by the offline arithmetic judge;
2. **X_std lift**: the mean probability of the gold solutions' tokens under X_std against under X_base;
3. **X_judge in the judged step**: on wrong answers whose judgment names a step, the geometric mean of
   p_judge/p_base over that step's tokens against over the others (``nlft locate``'s comprehension figures);
4. **saliency precision and recall** with the default weighting: the share of blamed tokens inside the judged step
   (beside chance: the share of tokens there) and the share of wrong answers with a blamed token there.

Then a plain verdict, and what to try where a signal is weak. Everything goes through the project's own code: the
task, the paper protocol, the arithmetic judge, the trainer's scoring and weighting, ``nlft locate``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.loading import DTYPES
from ..options import POSITIVE, opt

# Where a signal counts as read: the standard answer lifts the gold tokens' mean probability by this much; the
# judgment raises the judged step's tokens this many times more than the others; the blamed tokens fall in the
# judged step this many times more often than chance.
STD_LIFT = 0.02
JUDGE_FACTOR = 1.1
PRECISION_FACTOR = 1.5


@dataclass(kw_only=True)
class CheckOptions:
    """``nlft check``: which model, on what, and where the figures go."""

    model: str = opt(
        positional=True, help="hub id, model folder, LoRA adapter or run folder, nlft:mini, nlft:smollm2"
    )
    task: str = opt(
        "mini-math", help="the task whose test questions are asked (mini-math, gsm8k); see --data"
    )
    data: str | None = opt(
        None,
        help="records with judgments instead of a task (e.g. judged.jsonl, nlft:sample): no accuracy is measured, "
        "the rest on their references and judgments",
    )
    questions: int = opt(500, type=POSITIVE, help="test questions (or records) to measure on")
    max_new_tokens: int = opt(200, type=POSITIVE, help="longest answer, in tokens")
    batch_size: int = opt(32, type=POSITIVE, help="generation and scoring batch")
    templates: str = opt("math", help="prompt template set: math, generic or a YAML file")
    dtype: str = opt("float32", choices=DTYPES, help="weight dtype")
    device: str | None = opt(None, help="cuda, mps or cpu (default: the best available)")
    out: str | None = opt(None, help="write the figures as JSON here (and the table beside it as .md)")
    progress: bool = opt(True, negate="no_progress", help="no progress bars")


def _answers(model, tokenizer, questions, o: CheckOptions) -> list[str]:
    """Greedy responses under the paper protocol's prompt, in order."""
    from ..evals.protocols import PaperProtocol
    from ..models.generation import HFBackend, SamplingSettings

    prompted = PaperProtocol(o.templates).build(questions)
    backend = HFBackend(
        model, tokenizer, SamplingSettings(max_new_tokens=o.max_new_tokens), batch_size=o.batch_size
    )
    by_key = {r.key: c.text or "" for r, c in backend.generate([p.request for p in prompted])}
    return [by_key[p.request.key] for p in prompted]


def _task(o: CheckOptions):
    from ..tasks import get_task

    task = get_task(o.task)
    if task is None:
        raise ValueError(f"--task {o.task}: no such task")
    task.check_split("test")
    return task


def _task_records(model, tokenizer, o: CheckOptions):
    """(figures, gold records, judged wrong records) from the task's test questions."""
    from ..data.arithmetic import judge_response
    from ..records import Record

    task = _task(o)
    questions = task.load("test", limit=o.questions)
    started = time.perf_counter()
    responses = _answers(model, tokenizer, questions, o)
    seconds = time.perf_counter() - started
    grades = [task.grade(r, q) for r, q in zip(responses, questions)]
    judged, wrong = [], 0
    for i, (q, r, g) in enumerate(zip(questions, responses, grades)):
        if g.correct:
            continue
        wrong += 1
        verdict = judge_response(r, q.reference or f"#### {task.gold(q)}", question=q.question)
        if not verdict.correct and verdict.judgment:
            judged.append(Record(f"wrong-{i}", q.question, r, q.reference, verdict.judgment))
    gold = [
        Record(f"gold-{i}", q.question, q.reference, q.reference, correct=True)
        for i, q in enumerate(questions)
        if q.reference
    ]
    figures = {
        "questions": len(questions),
        "accuracy": sum(g.correct for g in grades) / len(questions),
        "wrong": wrong,
        "judged": len(judged),
        "generation_seconds": round(seconds, 1),
    }
    return figures, gold, judged


def _data_records(o: CheckOptions):
    from ..records import Record, load_records, resolve_records_spec

    records = list(load_records(resolve_records_spec(o.data)))[: o.questions]
    judged = [r for r in records if not r.is_correct and r.judgment]
    seen, gold = set(), []
    for r in records:
        if r.reference and r.question not in seen:
            seen.add(r.question)
            gold.append(Record(f"gold-{len(gold)}", r.question, r.reference, r.reference, correct=True))
    return (
        {"records": len(records), "wrong": sum(not r.is_correct for r in records), "judged": len(judged)},
        gold,
        judged,
    )


def verdict(figures: dict[str, Any]) -> tuple[str, list[str]]:
    """A plain verdict on the figures, and what to try where a signal is weak."""
    lift = figures.get("x_std_lift")
    loc = figures["localization"]
    step, rest = loc.get("log_ratio_step"), loc.get("log_ratio_rest")
    reads_std = lift is not None and lift >= STD_LIFT
    reads_judge = step is not None and rest is not None and step - rest >= math.log(JUDGE_FACTOR)
    points = (
        loc.get("precision") is not None
        and loc.get("chance")
        and loc["precision"] >= PRECISION_FACTOR * loc["chance"]
    )
    advice = []
    if not reads_std:
        advice.append(
            "the standard answer barely moves its probabilities: try another template set (--templates generic or "
            "your own YAML), or a larger instruction-tuned model"
        )
    if not reads_judge:
        advice.append(
            "the judgment does not raise the judged step more than the rest: try another template set, clearer "
            "judgments (a judge that quotes the wrong step), or a larger model"
        )
    if not points:
        advice.append(
            "the blamed tokens fall in the judged step little more often than chance: look at `nlft saliency` and "
            "try --threshold / --ratio-threshold (nlft studio shows the effect live)"
        )
    if reads_std and reads_judge and points:
        text = "reads both prompts: the standard answer lifts the right tokens, the judgment the blamed step; NLFT's signal is there"
    elif reads_std and reads_judge:
        text = "reads both prompts, but the default weighting blames little inside the judged step"
    elif reads_std:
        text = (
            "reads the standard answer but not the judgment: NLFT's wrong-answer signal will be mostly noise"
        )
    elif reads_judge:
        text = "reads the judgment but not the standard answer: the confirmed-token weighting will be weak"
    elif points:
        text = (
            "reads neither prompt on average: the few tokens that cross the thresholds do fall in the judged step "
            "more often than chance, but NLFT's weights will rest on them alone"
        )
    else:
        text = "reads neither prompt: NLFT will behave like SFT on this model, at three times the cost"
    return text, advice


def run_check(options: CheckOptions) -> dict[str, Any]:
    """Measure ``options.model`` (see the module docstring); returns the figures, verdict included."""
    import torch

    from ..files import check_output_file
    from ..models.loading import load_model
    from ..prompts import RecordEncoder
    from .localization import localize
    from .saliency import score_records

    o = options
    if o.out is not None:
        check_output_file(o.out, inputs=(o.data,) if o.data else ())
    if o.data is None:
        _task(o)  # an unknown task is refused before the model loads
    torch.manual_seed(0)
    model, tokenizer, _ = load_model(o.model, dtype=o.dtype, device=o.device)
    if o.data is None:
        figures, gold, judged = _task_records(model, tokenizer, o)
    else:
        figures, gold, judged = _data_records(o)
    figures = {"model": o.model, "on": o.data or f"{o.task}:test", **figures}
    encoder = RecordEncoder(tokenizer, o.templates, max_length=1024)
    if gold:
        encoded = encoder.encode_all(gold, skip_invalid=True).records
        scored = score_records(
            model, tokenizer, encoded, {r.id: r for r in gold}, progress=o.progress, batch_size=o.batch_size
        )
        p_std = torch.cat([s.p_std for s in scored])
        p_base = torch.cat([s.p_base for s in scored])
        figures.update(
            gold_tokens=int(p_std.numel()),
            mean_p_gold_x_base=float(p_base.mean()),
            mean_p_gold_x_std=float(p_std.mean()),
            x_std_lift=float(p_std.mean() - p_base.mean()),
        )
    else:
        figures.update(gold_tokens=0, mean_p_gold_x_base=None, mean_p_gold_x_std=None, x_std_lift=None)
    scored_wrong = []
    if judged:
        encoded = encoder.encode_all(judged, skip_invalid=True).records
        scored_wrong = score_records(
            model, tokenizer, encoded, {r.id: r for r in judged}, progress=o.progress, batch_size=o.batch_size
        )
    figures["localization"] = localize(scored_wrong, {r.id: r.response for r in judged}, tokenizer).summary()
    figures["verdict"], figures["advice"] = verdict(figures)
    if o.out is not None:
        from ..jsonl import atomic_write_text

        atomic_write_text(o.out, json.dumps(figures, indent=1) + "\n")
        atomic_write_text(Path(o.out).with_suffix(".md"), render(figures) + "\n")
    return figures


def render(m: dict[str, Any]) -> str:
    """The figures as a markdown table, with the verdict and the advice."""
    loc = m["localization"]

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    def num(x):
        return "-" if x is None else f"{x:.3f}"

    def ratio(x):
        return "-" if x is None else f"{math.exp(x):.2f}x"

    n = m.get("questions", m.get("records"))
    lines = [
        f"## nlft check {m['model']} ({n} {'test questions' if 'questions' in m else 'records'} of {m['on']})",
        "",
        "| property | measured |",
        "|---|---:|",
    ]
    if "accuracy" in m:
        lines.append(f"| greedy accuracy (X_base) | {pct(m['accuracy'])} |")
    lines += [
        f"| wrong answers judged by naming a step (located) | {loc['located']} of {m['wrong']} |",
        f"| mean p(gold token), X_base -> X_std | {num(m['mean_p_gold_x_base'])} -> {num(m['mean_p_gold_x_std'])} |",
        f"| p_judge / p_base, judged step / elsewhere (geometric means) | {ratio(loc['log_ratio_step'])} / {ratio(loc['log_ratio_rest'])} |",
        f"| saliency precision: blamed tokens in the judged step (chance) | {pct(loc['precision'])} of {loc['blamed_tokens']} ({pct(loc['chance'])}) |",
        f"| saliency recall: wrong answers with a blamed token in the judged step | {pct(loc['recall'])} of {loc['located']} |",
        "",
        f"**Verdict:** {m['verdict']}.",
    ]
    lines += [f"- {a}" for a in m["advice"]]
    return "\n".join(lines)
