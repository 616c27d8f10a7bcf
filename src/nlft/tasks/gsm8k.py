"""GSM8K (Cobbe et al., 2021; MIT): the hub dataset ``openai/gsm8k``, or a local folder of ``<split>.jsonl``."""

from __future__ import annotations

import os
from pathlib import Path

from .. import resource_path
from ..records import Problem, Question, RecordError, Row, iter_rows
from .answers import NumericTask, gold_answer

HUB_ID = "openai/gsm8k"
# The first 50 GSM8K test questions, shipped in the package (``nlft:sample`` as a question set).
SAMPLE_GSM8K_TEST = resource_path("sample", "gsm8k_test_sample.jsonl")


class GSM8KTask(NumericTask):
    name = "gsm8k"
    description = "GSM8K grade-school math word problems (the hub dataset openai/gsm8k, or a local folder)"

    def __init__(self, source: str | os.PathLike | None = None):
        self.source = Path(source) if source is not None else None

    def load(self, split: str, limit: int | None = None) -> list[Question]:
        if self.source is None:
            try:
                return load_gsm8k(split, None, limit=limit)
            except ConnectionError as exc:
                raise FileNotFoundError(
                    f"gsm8k: could not fetch {HUB_ID} ({exc}); pass a local folder holding {split}.jsonl"
                ) from None
        return load_gsm8k(split, self.source, limit=limit)

    def check_split(self, split: str) -> None:
        if self.source is not None and self.source.is_file():
            if split != "test":
                raise ValueError(
                    f"{self.source}: holds GSM8K test questions only (split 'test'), not '{split}'"
                )
        elif self.source is not None and not (self.source / f"{split}.jsonl").is_file():
            raise FileNotFoundError(f"{self.source}: no {split}.jsonl (GSM8K split '{split}')")


def question_id(split: str, index: int) -> str:
    return f"gsm8k-{split}-{index:05d}"


def load_gsm8k(
    split: str = "test", source: str | Path | None = None, *, limit: int | None = None
) -> list[Question]:
    """GSM8K questions with their gold solutions.

    ``source`` is a folder holding ``{split}.jsonl`` (as in the openai/grade-school-math repository), a
    ``.jsonl`` file, or None for the hub dataset ``openai/gsm8k`` (config ``main``). Ids are stable:
    ``gsm8k-<split>-<index>``. The gold number is kept in ``extra["gold"]``. Rows without a question or a gold
    answer ending in ``#### N`` are all reported at once, with file, line (1-based) and field.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    if source is None:
        import datasets

        ds = datasets.load_dataset(HUB_ID, "main", split=split)
        label = f"{HUB_ID}[{split}]"
        rows = (Row(label, f"row {i + 1}", dict(r)) for i, r in enumerate(ds))
    else:
        path = Path(source)
        if path.is_dir():
            path = path / f"{split}.jsonl"
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no such file (expected GSM8K JSONL with 'question' and 'answer')"
            )
        rows = iter_rows(path)
    out: list[Question] = []
    problems: list[Problem] = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        if isinstance(row, Problem):
            problems.append(row)
            continue
        data = row.data
        if not isinstance(data, dict):
            problems.append(
                Problem(row.source, row.location, None, f"expected a JSON object, got {type(data).__name__}")
            )
            continue
        question, answer = data.get("question"), data.get("answer")
        bad = False
        if not isinstance(question, str) or not question.strip():
            what = (
                "missing"
                if question is None
                else f"must be a non-empty string, got {type(question).__name__}"
            )
            problems.append(Problem(row.source, row.location, "question", what))
            bad = True
        try:
            gold = gold_answer(answer) if isinstance(answer, str) else None
        except ValueError as exc:
            problems.append(Problem(row.source, row.location, "answer", str(exc)))
            continue
        if gold is None:
            what = "missing" if answer is None else f"must be a string, got {type(answer).__name__}"
            problems.append(Problem(row.source, row.location, "answer", what))
            continue
        if not bad:
            out.append(Question(question_id(split, i), question, answer, None, {"gold": gold}))
    if problems:
        raise RecordError(
            problems,
            hint="Fix these GSM8K rows: each needs a 'question' and an 'answer' ending in '#### <number>'.",
        )
    return out
