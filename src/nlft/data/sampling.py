"""``nlft sample``: the target model's own chain-of-thought answers to a question set, graded as they arrive.

NLFT trains on the model's *own* responses (docs/method.md sections 1 and 8): the reference sampled
Llama-3-8B-Instruct at temperature 0.3 with up to 512 new tokens under the math system prompt. Each question is
asked under the X_base prompt of a template set, through the same rendering path the trainer uses, so the
responses are exactly of the kind NLFT later trains on. Back-ends: ``hf`` (transformers, batched) or ``openai``
(any OpenAI-compatible server: OpenAI, vLLM, SGLang).

Every answer is graded against the question's gold answer (by its task, ``nlft.tasks``) and written at once, as a
``Record`` with a stable id ``<question id>-s<k>``, to an append-only JSONL (``AppendLog``). Rerunning the same
command skips finished samples, so a run killed at any moment resumes where it stopped and every sample ends up
in the file exactly once. Requests that fail for good are listed in ``<out>.failed.jsonl`` and retried by the
next run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jsonl import AppendLog, atomic_write_jsonl
from ..models.generation import (
    BackendOptions,
    Completion,
    HFBackend,
    Request,
    SamplingSettings,
    describe_backend,
    make_backend,
)
from ..options import POSITIVE, TEMPERATURE, TOP_P, opt
from ..prompts import TemplateSet
from ..records import Problem, Question, Record, RecordError, load_questions
from ..tasks import Task, grader_for
from ..tasks.answers import RULES, NumericTask

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------
# Question sets and back-ends
# --------------------------------------------------------------------------------------------------------------


def load_question_set(
    source: str | os.PathLike, *, split: str = "test", limit: int | None = None, skip_invalid: bool = False
) -> list[Question]:
    """Questions with gold answers: a task's split (``gsm8k`` for the hub dataset, a folder with
    ``<split>.jsonl``, ``mini-math``; see ``nlft.tasks``) or any question file or dataset ``load_questions`` reads."""
    from ..tasks import get_task

    task = get_task(source)
    if task is not None:
        task.check_split(split)
        return task.load(split, limit=limit)
    questions = list(
        load_questions(source, split=split if not Path(source).is_file() else None, skip_invalid=skip_invalid)
    )
    return questions[:limit] if limit is not None else questions


def check_gradable(questions: Sequence[Question], source: str, task: Task) -> None:
    """Every question must have a gold answer (by ``task``) and a unique id: all that don't are reported at once."""
    problems, seen = [], set()
    for q in questions:
        if q.id in seen:
            problems.append(Problem(source, "", "id", f"duplicate id '{q.id}'", q.id))
        seen.add(q.id)
        try:
            task.gold(q)
        except ValueError as exc:
            problems.append(Problem(source, "", "reference", str(exc), q.id))
    if problems:
        raise RecordError(
            problems, hint="Every question needs a unique id and a gold answer ending in '#### <number>'."
        )


# --------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SampleSummary:
    path: Path
    questions: int
    total: int  # samples asked for
    earlier: int  # already in the file from an earlier run
    new: int
    correct: int  # in the whole file
    wrong: int
    failed: list[dict] = field(default_factory=list)  # this run's final failures
    failed_path: Path | None = None

    def summary(self) -> str:
        lines = [
            f"{self.path}: {self.correct + self.wrong} of {self.total} samples ({self.questions} questions x "
            f"{self.total // max(self.questions, 1)}): {self.correct} correct, {self.wrong} wrong, {len(self.failed)} failed",
            f"  {self.new} new in this run, {self.earlier} from an earlier run",
        ]
        if self.failed:
            lines.append(f"  failures are listed in {self.failed_path}; rerun the same command to retry them")
        return "\n".join(lines)


def failed_path_for(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".jsonl") + ".failed.jsonl")


def is_failures_file(path: Path) -> bool:
    """Whether ``path`` is a failures list this command wrote (rows with ``id`` and ``error``), not a link or a
    file of the user's that happens to have the name."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return all(isinstance(r, dict) and {"id", "error"} <= set(r) for r in rows)


def progress_bar(total: int, initial: int, desc: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        dynamic_ncols=True,
        disable=not enabled,
        smoothing=0.1,
    )


def check_same_settings(
    theirs: Mapping[str, Any] | None, ours: Mapping[str, Any], out: Path, what: str
) -> None:
    """Refuse to mix results of different settings in one file: a rerun resumes only the same command.
    ``theirs`` holds the settings found in the file (None for a new file)."""
    if theirs is None:
        return
    differ = [k for k in ours if theirs.get(k) != ours[k]]
    if differ:
        diff = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours[k]!r} now" for k in differ)
        raise ValueError(
            f"{out} holds {what} made with other settings ({diff}); rerun with the same settings to resume, "
            "or choose another --out"
        )


def sample_stamp(
    provenance: dict[str, Any],
    settings: SamplingSettings,
    templates: TemplateSet,
    system: str | None,
    rule: str,
) -> dict[str, Any]:
    """Everything a sample depends on, stored on every row: a rerun with any of it changed is refused rather than
    mixed in (the back-end and model, the decoding, the prompt's wording and system prompt, the grading rule)."""
    return {
        **provenance,
        "sampling": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_new_tokens": settings.max_new_tokens,
            "seed": settings.seed,
        },
        "templates": templates.name,
        "prompt": {"wording": templates.fingerprint("base"), "system_override": system},
        "rule": rule,
    }


@dataclass(kw_only=True)
class QuestionOptions:
    """Which questions: a task's split or a question file (``load_question_set``)."""

    questions: str = opt(
        positional=True,
        help="questions with gold answers: a task (mini-math, gsm8k for the hub dataset), a GSM8K-style folder "
        "holding <split>.jsonl, or a .jsonl/.json/Hugging Face dataset with 'question' and 'answer' (or 'reference')",
    )
    split: str = opt("train", help="the task's (or dataset's) split")
    limit: int | None = opt(None, type=POSITIVE, help="use only the first N questions")


@dataclass(kw_only=True)
class SampleSettings:
    """How each question is asked and its answers graded (``nlft sample`` and ``nlft data make``)."""

    samples: int = opt(
        1, type=POSITIVE, group="sampling", help="responses per question (ids <question id>-s0, -s1, ...)"
    )
    temperature: float = opt(
        0.3, type=TEMPERATURE, group="sampling", help="0 is greedy; the NLFT reference sampled at 0.3"
    )
    top_p: float = opt(1.0, type=TOP_P, group="sampling", help="nucleus sampling; 1.0 is off")
    max_new_tokens: int = opt(512, type=POSITIVE, group="sampling", help="longest answer, in tokens")
    seed: int = opt(42, group="sampling", help="sampling seed (a rerun samples the same text)")
    templates: str = opt(
        "math",
        group="sampling",
        help="template set whose X_base prompt is asked: math, generic or a YAML file",
    )
    system: str | None = opt(
        None, group="sampling", help="system prompt instead of the template set's (the math expert prompt)"
    )
    rule: str | None = opt(
        None,
        group="sampling",
        help=f"how the final answer is read for grading: one of the task's rules (numeric tasks: {', '.join(RULES)}; "
        "default authors)",
    )

    def decoding(self) -> SamplingSettings:
        return SamplingSettings(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p, seed=self.seed
        )


@dataclass(kw_only=True)
class SampleOptions(QuestionOptions, SampleSettings):
    """Everything ``nlft sample`` does besides its back-end (``BackendOptions``)."""

    out: str = opt(help="results file (.jsonl), appended to and resumed from")
    skip_invalid: bool = opt(False, help="skip invalid question lines instead of stopping")
    progress: bool = opt(True, negate="no_progress", help="no progress bar")


def run_sample(options: SampleOptions, backend: BackendOptions) -> SampleSummary:
    """``nlft sample``: everything that can be refused is refused before the model loads — the output path (a
    folder, a link, the input itself), the options, an empty question set, a results file of other settings."""
    from ..files import check_output_file

    o = options
    out = check_output_file(o.out, inputs=(o.questions,))
    if o.limit is not None and o.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {o.limit}")
    if o.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {o.samples}")
    task = grader_for(o.questions)
    rule = o.rule or task.default_rule
    task.check_rule(rule)
    questions = load_question_set(o.questions, split=o.split, limit=o.limit, skip_invalid=o.skip_invalid)
    if not questions:
        raise ValueError(f"{o.questions}: no questions (split {o.split})")
    check_gradable(questions, str(o.questions), task)
    template_set = TemplateSet.load(o.templates)
    settings = o.decoding()
    stamp = sample_stamp(backend.describe(), settings, template_set, o.system, rule)
    existing = AppendLog.peek(out)
    check_same_settings(next(iter(existing.values()), None), stamp, out, "samples")
    model = make_backend(backend, settings, template_set)
    return sample_questions(
        questions,
        out,
        model,
        samples=o.samples,
        templates=template_set,
        system=o.system,
        task=task,
        rule=rule,
        provenance=backend.describe(),
        progress=o.progress,
    )


def sample_questions(
    questions: Sequence[Question],
    out: str | os.PathLike,
    backend,
    *,
    samples: int = 1,
    templates: str | Path | TemplateSet | None = "math",
    system: str | None = None,
    task: Task | None = None,
    rule: str | None = None,
    provenance: dict[str, Any] | None = None,
    progress: bool = True,
) -> SampleSummary:
    """Sample ``samples`` responses per question with ``backend`` (an ``HFBackend`` or ``OpenAIBackend``) and append
    them, graded by ``task`` (default: numeric answers, the GSM8K way) with its ``rule``, to ``out``. Samples
    already there are skipped.

    ``provenance`` (default: read off the back-end, e.g. ``BackendOptions.describe()``) is stored on every
    record with the sampling settings; a rerun whose settings differ is refused."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    settings: SamplingSettings = backend.settings
    if samples > 1 and settings.greedy:
        raise ValueError(
            "several samples per question need a temperature above 0 (greedy decoding repeats itself)"
        )
    task = task or NumericTask()
    rule = rule or task.default_rule
    task.check_rule(rule)
    template_set = TemplateSet.load(templates)
    out = Path(out)
    check_gradable(questions, "questions", task)

    stamp = sample_stamp(provenance or describe_backend(backend), settings, template_set, system, rule)

    requests: list[Request] = []
    by_key: dict[str, tuple[Question, int, str]] = {}
    for q in questions:
        system_text = (
            system if system is not None else (q.system if q.system is not None else template_set.system)
        )
        stub = Record(q.id, q.question, "", q.reference, None, system_text)
        messages = template_set.chat("base", stub)
        for k in range(samples):
            key = f"{q.id}-s{k}"
            requests.append(Request(key, messages=messages))
            by_key[key] = (q, k, system_text)

    failures: list[dict] = []
    with AppendLog(out) as log:
        first = next(iter(log.rows()), None)
        check_same_settings(first, stamp, out, "samples")
        from ..files import check_same_inputs

        check_same_inputs(
            {row["id"]: row for row in log.rows()},
            {key: {"question": q.question} for key, (q, _, _) in by_key.items()},
            out,
            "samples",
        )
        earlier = sum(1 for r in requests if r.key in log)
        pending = [r for r in requests if r.key not in log]
        bar = progress_bar(len(requests), earlier, "sampling", "sample", progress)
        counts = {"correct": 0, "wrong": 0, "failed": 0}
        for request, completion in _generate(backend, requests, pending, log):
            q, k, system_text = by_key[request.key]
            row = _sample_row(request.key, q, k, system_text, completion, template_set, task, rule, stamp)
            if isinstance(row, str):
                failures.append(
                    {"id": request.key, "question_id": q.id, "error": row, "attempts": completion.attempts}
                )
                counts["failed"] += 1
            else:
                log.append(row)
                counts["correct" if row["correct"] else "wrong"] += 1
            bar.update(1)
            bar.set_postfix(counts, refresh=False)
        bar.close()
        rows = [row for row in log.rows() if row["id"] in by_key]
        new = counts["correct"] + counts["wrong"]
    if samples > 1 and not settings.greedy:
        _warn_identical_samples(rows)
    fpath = failed_path_for(out)
    if failures:
        atomic_write_jsonl(fpath, failures)
    elif is_failures_file(fpath):
        fpath.unlink()  # an earlier run's failures have all been redone
    n_correct = sum(1 for row in rows if row["correct"])
    return SampleSummary(
        out, len(questions), len(requests), earlier, new, n_correct, len(rows) - n_correct, failures, fpath
    )


def _warn_identical_samples(rows: list[dict]) -> None:
    """Several samples of a question at temperature > 0 that are all the same text mean the back-end decoded
    greedily (``transformers serve`` ignores the temperature unless ``do_sample`` is sent)."""
    by_question: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for row in rows:
        qid = str(row.get("question_id"))
        by_question.setdefault(qid, set()).add(row["response"])
        counts[qid] = counts.get(qid, 0) + 1
    same = [q for q, texts in by_question.items() if counts[q] > 1 and len(texts) == 1]
    if same and len(same) == len([q for q in counts if counts[q] > 1]):
        logger.warning(
            "every question's samples are identical although the temperature is above 0: the server probably "
            "decoded greedily (transformers serve needs --extra-body '{\"do_sample\": true}')"
        )
    elif same:
        logger.warning("%d of %d questions got identical samples", len(same), len(counts))


def _generate(
    backend, requests: list[Request], pending: list[Request], log: AppendLog
) -> Iterator[tuple[Request, Completion]]:
    """Pending requests through the back-end, each yielded as it completes.

    A local model on the continuous loop seeds each request by its key, so only the missing ones are sent. One on
    ``model.generate`` samples a whole batch with one seed, so a batch is always the same fixed slice of all
    requests: a resumed run regenerates a half-written batch exactly as the first run would have, and writes
    only the samples that are missing.
    """
    if not isinstance(backend, HFBackend) or backend.seeds_each_request:
        yield from backend.generate(pending)
        return
    size = backend.batch_size
    for start in range(0, len(requests), size):
        batch = requests[start : start + size]
        if all(r.key in log for r in batch):
            continue
        for request, completion in backend.generate(batch):
            if request.key not in log:
                yield request, completion


def _sample_row(
    key: str,
    q: Question,
    k: int,
    system_text: str,
    completion: Completion,
    templates: TemplateSet,
    task: Task,
    rule: str,
    stamp: dict[str, Any],
) -> dict | str:
    """The graded record of one sample, or the reason it can't be one."""
    if not completion.ok:
        return completion.error or "no text"
    if not completion.text.strip():
        return "empty response"
    result = task.grade(completion.text, q, rule)
    record = Record(
        id=key,
        question=q.question,
        response=completion.text,
        reference=q.reference,
        judgment=None,
        # Left out when it is the template set's default, which every later step fills in the same way.
        system=system_text if system_text != templates.system else None,
        correct=result.correct,
    )
    row = record.to_dict()
    row.update(
        {
            "question_id": q.id,
            "sample_index": k,
            "grade": result.to_dict(),
            "finish_reason": completion.finish_reason,
            **stamp,
        }
    )
    return row
