"""What an evaluation asks: question sets with gold answers (a task's split, ``nlft:sample`` or a question
file), and the names result folders take from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..records import Problem, Question, iter_rows, validate_question
from ..tasks import SAMPLE_QUESTIONS_SPEC, Task, get_task, task_names
from ..tasks.answers import NumericTask
from ..tasks.gsm8k import HUB_ID, GSM8KTask, load_gsm8k


@dataclass
class EvalData:
    """An ordered question set with gold answers. ``name`` is what result folders are named after."""

    spec: str
    name: str
    questions: list[Question]
    task: Task = field(default_factory=NumericTask)  # what grades the answers (a question file: numeric)


def _gold_or_none(question: Question, task: Task) -> str | None:
    try:
        return task.gold(question)
    except ValueError:
        return None


def load_question_file(path: str | Path, *, need: str = "gold") -> list[Question]:
    """A question file (JSON/JSONL/HF dataset) whose every row has what evaluation needs: a gold answer
    (``need="gold"``) or a worked solution to show as an exemplar (``need="solution"``).
    Every bad row is reported at once, with file, line and field."""
    from ..records import RecordError, _collect

    def validate(row):
        question, problems = validate_question(row)
        if question is None:
            return None, problems
        field_name = next((n for n in ("reference", "answer") if n in row.data), "answer")
        if need == "gold" and _gold_or_none(question, NumericTask()) is None:
            what = (
                "missing" if question.reference is None else f"no number in it ({question.reference[-40:]!r})"
            )
            hint = "a number, or a solution ending in '#### <number>'"
            return None, [
                Problem(
                    row.source,
                    row.location,
                    field_name,
                    f"{what}; the gold answer must be {hint}",
                    question.id,
                )
            ]
        if need == "solution" and question.reference is None:
            return None, [
                Problem(
                    row.source,
                    row.location,
                    field_name,
                    "missing; a few-shot exemplar needs its worked answer",
                    question.id,
                )
            ]
        return question, []

    try:
        return list(
            _collect(iter_rows(path), validate, skip_invalid=False, what="questions", source=str(path))
        )
    except RecordError as exc:
        # Bad evaluation data is never skipped silently: accuracy over a silently smaller set is misleading.
        raise RecordError(exc.problems, hint="Fix the questions above; evaluation needs every one.") from None


def data_name(spec: str) -> str:
    """The data part of result folder names: ``gsm8k:test`` -> ``test``, ``dir/q.jsonl`` -> ``q``."""
    if spec == SAMPLE_QUESTIONS_SPEC:
        return "sample"
    if spec.startswith("gsm8k:"):
        return spec.split(":", 1)[1]
    task, _, split = spec.partition(":")
    if split and task in task_names():
        return f"{task}-{split}"
    path = Path(spec)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem if path.suffix else path.name) or "data"


def load_eval_data(spec: str, gsm8k_dir: str | Path | None = None, *, need: str = "gold") -> EvalData:
    """``gsm8k:<split>`` (from ``gsm8k_dir``, a folder of ``<split>.jsonl``, or the hub's ``openai/gsm8k``),
    ``<task>:<split>`` for the other tasks (``mini-math:test``, ``nlft.tasks``), ``nlft:sample`` (50 GSM8K test questions shipped in the package) or a question file."""
    if spec == SAMPLE_QUESTIONS_SPEC:
        from ..tasks.gsm8k import SAMPLE_GSM8K_TEST

        return EvalData(
            spec, data_name(spec), load_gsm8k("test", SAMPLE_GSM8K_TEST), GSM8KTask(SAMPLE_GSM8K_TEST)
        )
    if spec.startswith("gsm8k:"):
        split = spec.split(":", 1)[1]
        if not split:
            raise ValueError(f"--data {spec}: name a split, e.g. gsm8k:test")
        try:
            return EvalData(spec, data_name(spec), load_gsm8k(split, gsm8k_dir), GSM8KTask(gsm8k_dir))
        except ConnectionError as exc:
            raise FileNotFoundError(
                f"--data {spec}: could not fetch {HUB_ID} ({exc}); pass --gsm8k-dir, a folder with {split}.jsonl"
            ) from None
    task_name, _, split = spec.partition(":")
    if split and task_name in task_names():  # another task's split, e.g. mini-math:test
        task = get_task(task_name)
        task.check_split(split)
        return EvalData(spec, data_name(spec), task.load(split), task)
    path = Path(spec)
    if not path.exists() and "/" in spec and not spec.endswith((".json", ".jsonl")):
        questions = load_question_file(spec, need=need)  # a hub dataset id
    elif not path.exists():
        raise FileNotFoundError(f"--data {spec}: no such file (use gsm8k:<split> for GSM8K)")
    else:
        questions = load_question_file(path, need=need)
    return EvalData(spec, data_name(spec), questions)
