"""Ready-made record pools from public data: critiques of wrong GSM8K answers, and GSM8K gold solutions.

* MathCritique (Xi et al., 2024; Apache-2.0): wrong Llama-3-8B answers with GPT-4 step-by-step critiques.
* MathDial (Macina et al., 2023; CC BY-SA 4.0): wrong student solutions with a teacher's short note.
* GSM8K gold solutions (MIT) as *correct* responses.

Each converter yields ``Record`` objects ready for ``nlft data build``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from .gsm8k import grade, load_gsm8k
from .records import Record, Row, iter_rows

IMPORT_SOURCES = ("mathcritique", "mathdial", "gsm8k-gold")


def _rows(path: str | Path) -> Iterator[Row]:
    for row in iter_rows(path):
        if not isinstance(row, Row):
            raise ValueError(str(row))
        yield row


def _need(row: Row, *names: str) -> list:
    missing = [n for n in names if not isinstance(row.data.get(n), str) or not row.data[n].strip()]
    if missing:
        raise ValueError(f"{row.source}:{row.location}: field '{missing[0]}': missing or empty")
    return [row.data[n] for n in names]


def from_mathcritique(path: str | Path, *, only_wrong: bool = True) -> Iterator[Record]:
    """MathCritique triples (``mathcritique_gsm8k_triples.jsonl``): response = the model's answer, judgment = critique.

    A record whose final answer is in fact right (by the authors' extraction rule) is left out when
    ``only_wrong``: a judgment must mark a wrong response.
    """
    for row in _rows(path):
        rid, question, answer, critique, gold = _need(
            row, "id", "question", "model_answer", "critique", "gold_answer"
        )
        if only_wrong and grade(answer, gold).correct:
            continue
        yield Record(
            id=rid,
            question=question,
            response=answer,
            reference=gold,
            judgment=critique,
            extra={
                "source": "mathcritique",
                "gsm8k_split": row.data.get("gsm8k_split"),
                "gsm8k_index": row.data.get("gsm8k_index"),
            },
        )


def from_mathdial(path: str | Path) -> Iterator[Record]:
    """MathDial triples: response = the student's wrong solution, judgment = the teacher's note (rows without one are left out)."""
    seen: set[str] = set()
    for row in _rows(path):
        note = row.data.get("teacher_described_confusion")
        if not isinstance(note, str) or not note.strip():
            continue
        question, solution, gold = _need(row, "question", "student_incorrect_solution", "gsm8k_gold_answer")
        rid = f"mathdial-{row.data.get('qid', row.location)}"
        if rid in seen:
            continue
        seen.add(rid)
        yield Record(rid, question, solution, gold, note.strip(), extra={"source": "mathdial"})


def gsm8k_gold_records(
    split: str = "train",
    source: str | Path | None = None,
    *,
    exclude: Iterable[str] = (),
    limit: int | None = None,
) -> Iterator[Record]:
    """GSM8K gold solutions as correct responses (ids ``gsm8k-<split>-<index>``); questions in ``exclude`` are left out."""
    skip = set(exclude)
    n = 0
    for q in load_gsm8k(split, source):
        if q.question in skip:
            continue
        if limit is not None and n >= limit:
            return
        n += 1
        yield Record(q.id, q.question, q.reference or "", q.reference, None, extra={"source": "gsm8k-gold"})
