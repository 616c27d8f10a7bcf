"""Ready-made record pools from public data: critiques of wrong GSM8K answers, and GSM8K gold solutions.

* MathCritique (Xi et al., 2024; Apache-2.0): wrong Llama-3-8B answers with GPT-4 step-by-step critiques.
* MathDial (Macina et al., 2023; CC BY-SA 4.0): wrong student solutions with a teacher's short note.
* GSM8K gold solutions (MIT) as *correct* responses.

Each converter yields ``Record`` objects ready for ``nlft data build``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..options import POSITIVE, opt
from ..records import Problem, Question, Record, RecordError, Row, iter_rows
from ..tasks import task_names
from ..tasks.gsm8k import GSM8KTask

IMPORT_SOURCES = ("mathcritique", "mathdial", "gsm8k-gold", "gold")


def _valid_rows(
    path: str | Path, names: tuple[str, ...], problems: list[Problem]
) -> Iterator[tuple[Row, list[str]]]:
    """Rows whose ``names`` are all non-empty strings, with their values; the others are added to ``problems``
    (file, 1-based line, field), so that a converter can report every bad line at once."""
    for row in iter_rows(path):
        if isinstance(row, Problem):
            problems.append(row)
            continue
        if not isinstance(row.data, dict):
            problems.append(
                Problem(
                    row.source, row.location, None, f"expected a JSON object, got {type(row.data).__name__}"
                )
            )
            continue
        missing = [n for n in names if not isinstance(row.data.get(n), str) or not row.data[n].strip()]
        if missing:
            problems.extend(
                Problem(row.source, row.location, n, "missing or empty (a string is needed)") for n in missing
            )
            continue
        yield row, [row.data[n] for n in names]


def _finish(records: list[Record], problems: list[Problem], what: str) -> Iterator[Record]:
    if problems:
        raise RecordError(problems, hint=f"Fix these {what} lines; nothing was written.")
    yield from records


def from_mathcritique(path: str | Path, *, only_wrong: bool = True) -> Iterator[Record]:
    """MathCritique triples (``mathcritique_gsm8k_triples.jsonl``): response = the model's answer, judgment = critique.

    A record whose final answer is in fact right (by the authors' extraction rule) is left out when
    ``only_wrong``: a judgment must mark a wrong response. Every bad line (not an object, a missing field, a
    duplicate id) is reported at once.
    """
    problems: list[Problem] = []
    records: list[Record] = []
    seen: dict[str, str] = {}
    gsm8k = GSM8KTask()  # MathCritique's questions are GSM8K's: its grader says which answers are right
    names = ("id", "question", "model_answer", "critique", "gold_answer")
    for row, (rid, question, answer, critique, gold) in _valid_rows(path, names, problems):
        if rid in seen:
            problems.append(
                Problem(row.source, row.location, "id", f"duplicate id '{rid}' (first on {seen[rid]})", rid)
            )
            continue
        seen[rid] = row.location
        try:
            right = gsm8k.grade(answer, Question(rid, question, gold)).correct
        except ValueError as exc:
            problems.append(Problem(row.source, row.location, "gold_answer", str(exc), rid))
            continue
        if only_wrong and right:
            continue
        records.append(
            Record(
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
        )
    return _finish(records, problems, "MathCritique")


def from_mathdial(path: str | Path) -> Iterator[Record]:
    """MathDial triples: response = the student's wrong solution, judgment = the teacher's note (rows without one are left out)."""
    problems: list[Problem] = []
    records: list[Record] = []
    seen: set[str] = set()
    names = ("question", "student_incorrect_solution", "gsm8k_gold_answer")
    for row, (question, solution, gold) in _valid_rows(path, names, problems):
        note = row.data.get("teacher_described_confusion")
        if not isinstance(note, str) or not note.strip():
            continue
        rid = f"mathdial-{row.data.get('qid', row.location)}"
        if rid in seen:
            continue
        seen.add(rid)
        records.append(Record(rid, question, solution, gold, note.strip(), extra={"source": "mathdial"}))
    return _finish(records, problems, "MathDial")


def gold_records(
    task: str | Path = "gsm8k",
    split: str = "train",
    *,
    exclude: Iterable[str] = (),
    limit: int | None = None,
) -> Iterator[Record]:
    """A task's gold solutions as correct responses (ids as the task's questions); questions in ``exclude`` are
    left out. ``task`` is a task name (``gsm8k``, ``mini-math``) or a GSM8K-style folder."""
    from ..tasks import get_task

    found = get_task(task)
    if found is None:
        raise FileNotFoundError(
            f"{task}: neither a task ({', '.join(task_names())}) nor a folder of <split>.jsonl files"
        )
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    found.check_split(split)
    skip = set(exclude)
    n = 0
    for q in found.load(split):
        if q.question in skip:
            continue
        if limit is not None and n >= limit:
            return
        n += 1
        yield Record(
            q.id, q.question, q.reference or "", q.reference, None, extra={"source": f"{found.name}-gold"}
        )


def gsm8k_gold_records(
    split: str = "train",
    source: str | Path | None = None,
    *,
    exclude: Iterable[str] = (),
    limit: int | None = None,
) -> Iterator[Record]:
    """GSM8K gold solutions as correct responses (ids ``gsm8k-<split>-<index>``): ``gold_records`` of GSM8K."""
    return gold_records(source or "gsm8k", split, exclude=exclude, limit=limit)


@dataclass(kw_only=True)
class ImportOptions:
    """``nlft data import``: which public pool, from where, into which file."""

    source: str = opt(positional=True, choices=IMPORT_SOURCES, help="what to import")
    path: str | None = opt(
        None,
        positional=True,
        nargs="?",
        help="input file; for gold, a task (gsm8k, mini-math) or GSM8K-style folder (gsm8k-gold: a GSM8K folder; "
        "omit for the hub)",
    )
    split: str = opt("train", help="the task's split, for gold and gsm8k-gold")
    limit: int | None = opt(None, type=POSITIVE, help="import only the first N records")
    out: str = opt(help="output .jsonl")
    overwrite: bool = opt(False, help="replace a file an earlier nlft data import wrote")


IMPORTED = "imported_from"  # the field every imported row carries: what made the file, recognisably


def _imported_file(path: Path) -> bool:
    """Whether ``path`` is a file nlft data import wrote (its first row names its source)."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = json.loads(fh.readline() or "null")
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and isinstance(first.get(IMPORTED), str)


def run_import(options: ImportOptions) -> int:
    """``nlft data import``: the records written to ``options.out`` (atomically); returns their number. An
    existing ``--out`` is replaced only with ``--overwrite`` and only when an earlier import wrote it."""
    from ..files import check_output_file, check_replaceable
    from ..jsonl import atomic_write_jsonl

    o = options
    check_output_file(o.out, inputs=(o.path,))
    check_replaceable(
        o.out, _imported_file(Path(o.out)), overwrite=o.overwrite, what="records nlft data import wrote"
    )
    if o.source in ("mathcritique", "mathdial") and not o.path:
        raise ValueError(f"data import {o.source}: name the input file")
    if o.source == "mathcritique":
        records = list(from_mathcritique(o.path))
    elif o.source == "mathdial":
        records = list(from_mathdial(o.path))
    else:  # gsm8k-gold, or gold of any task (gsm8k, mini-math, a GSM8K-style folder)
        records = list(gold_records(o.path or "gsm8k", o.split, limit=o.limit))
    if o.limit is not None:
        records = records[: o.limit]
    return atomic_write_jsonl(o.out, ({**r.to_dict(), IMPORTED: o.source} for r in records))
