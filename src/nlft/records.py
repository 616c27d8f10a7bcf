"""Training records and question sets: loading and validation (docs/method.md section 1).

A *record* is what NLFT trains on: a question, the model's own response, the standard (reference) answer and,
for a wrong response, a written judgment. Records load from JSON (an array), JSONL, or any Hugging Face
dataset (a saved folder, a local ``load_dataset`` path or a hub id). Both our field names and the NLFT
authors' (``instruction, input, output, judgment, answer``) are accepted as they are.

Every problem found is reported with the file, the line (or row) and the field, and all bad lines are listed
at once. With ``skip_invalid=True`` bad lines are skipped and counted instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import resource_path
from .options import opt

# ``--data nlft:sample`` for training: the records bundled with the package (GSM8K questions, wrong Llama-3-8B
# answers with MathCritique critiques, GSM8K gold solutions as correct responses; see resources/sample/).
SAMPLE_RECORDS_SPEC = "nlft:sample"
SAMPLE_RECORDS = resource_path("sample", "records.jsonl")

# Our field name -> accepted names in the order they are looked up (ours first, then the authors').
RECORD_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "system": ("system", "instruction"),
    "question": ("question", "input"),
    "response": ("response", "output"),
    "reference": ("reference", "answer"),
    "judgment": ("judgment",),
    "correct": ("correct",),
}
QUESTION_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "system": ("system", "instruction"),
    "question": ("question", "input"),
    "reference": ("reference", "answer"),
}


@dataclass
class Record:
    """One NLFT training record. ``judgment is None`` means the response is correct."""

    id: str
    question: str
    response: str
    reference: str | None = None
    judgment: str | None = None
    system: str | None = None
    # An explicit grade. ``None``: inferred from the judgment. ``False`` without a judgment is a graded wrong
    # response still waiting for one (see ``nlft judge``); it cannot train NLFT until it has it.
    correct: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_correct(self) -> bool:
        return self.correct if self.correct is not None else self.judgment is None

    def to_dict(self) -> dict[str, Any]:
        """Our field names; unknown input fields are kept after ours."""
        out: dict[str, Any] = {"id": self.id}
        if self.system is not None:
            out["system"] = self.system
        out["question"] = self.question
        out["response"] = self.response
        out["reference"] = self.reference
        out["judgment"] = self.judgment
        out["correct"] = self.is_correct
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out


@dataclass
class Question:
    """A question with its gold answer, for sampling responses and for evaluation."""

    id: str
    question: str
    reference: str | None = None
    system: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "question": self.question, "reference": self.reference}
        if self.system is not None:
            out["system"] = self.system
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input row."""

    source: str
    location: str  # "line 12", "row 3", "element 4 (line 40)", or "" for the whole source
    field: str | None
    message: str
    record_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.location}" if self.location else self.source
        what = f"field '{self.field}': " if self.field else ""
        rid = f" [id {self.record_id}]" if self.record_id else ""
        return f"{where}{rid}: {what}{self.message}"


class RecordError(ValueError):
    """Invalid input records; ``problems`` lists every one found."""

    def __init__(self, problems: list[Problem], hint: str | None = None):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} invalid record{'s' if n != 1 else ''}:" if n != 1 else "invalid record:"
        lines = [head, *(f"  {p}" for p in self.problems[:200])] if n else []  # none: the hint says it all
        if n > 200:
            lines.append(f"  ... and {n - 200} more")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


class RecordList(list):
    """A list of loaded items that also remembers what was skipped (with ``skip_invalid=True``)."""

    def __init__(
        self,
        items: Iterable[Any] = (),
        skipped: list[Problem] | None = None,
        source: str = "",
        locations: dict[str, str] | None = None,
    ):
        super().__init__(items)
        self.skipped: list[Problem] = skipped or []
        self.source = source
        self.locations: dict[str, str] = locations or {}  # each item's place in the source ("line 3"), by id


@dataclass
class Row:
    source: str
    location: str
    data: Any


# --------------------------------------------------------------------------------------------------------------
# Reading rows from files and datasets
# --------------------------------------------------------------------------------------------------------------


def _bad_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"


def _iter_jsonl(path: Path) -> Iterator[Row | Problem]:
    src = str(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            loc = f"line {lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Problem(src, loc, None, _bad_utf8(raw, exc))
                continue
            if lineno == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue
            try:
                yield Row(src, loc, json.loads(text))
            except json.JSONDecodeError as exc:
                yield Problem(src, loc, None, f"not valid JSON ({exc.msg} at column {exc.colno})")


def _iter_json(path: Path) -> Iterator[Row | Problem]:
    """A JSON file: an array of objects (the authors' format), one object, or JSON Lines named .json."""
    src = str(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        yield Problem(
            src, f"line {line}", None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {col})"
        )
        return
    decoder = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    pos = len(text) - len(text.lstrip())
    if pos >= len(text):
        return
    if text[pos] != "[":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            if text[pos] == "{" and exc.msg == "Extra data":  # JSON Lines saved as .json
                yield from _iter_jsonl(path)
            else:
                yield Problem(
                    src, f"line {exc.lineno}", None, f"not valid JSON ({exc.msg} at column {exc.colno})"
                )
            return
        if isinstance(obj, dict) and isinstance(obj.get("data"), list):  # {"data": [...]} wrappers
            for i, item in enumerate(obj["data"]):
                yield Row(src, f"element {i}", item)
        else:
            yield Row(src, f"line {line_of(pos)}", obj)
        return
    # Walk the array element by element so that every element knows the line it starts on.
    pos += 1
    index = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos < len(text) and text[pos] == "]":
            return
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield Problem(
                src, f"line {exc.lineno}", None, f"not valid JSON ({exc.msg} at column {exc.colno})"
            )
            return
        yield Row(src, f"element {index} (line {line_of(pos)})", obj)
        index += 1
        pos = end
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            return
        else:
            yield Problem(src, f"line {line_of(pos)}", None, "not valid JSON (expected ',' or ']')")
            return


def _iter_hf(spec: str, split: str | None, name: str | None) -> Iterator[Row | Problem]:
    import datasets

    path = Path(spec)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(spec, name, split=split or "train")
    if isinstance(ds, datasets.DatasetDict):
        wanted = split or ("train" if "train" in ds else next(iter(ds)))
        if wanted not in ds:
            raise FileNotFoundError(f"{spec}: no split '{wanted}' (has {', '.join(ds)})")
        ds = ds[wanted]
    label = f"{spec}[{split}]" if split else spec
    for i, row in enumerate(ds):
        yield Row(label, f"row {i}", row)


def iter_rows(
    source: str | os.PathLike, *, split: str | None = None, name: str | None = None
) -> Iterator[Row | Problem]:
    """Yield the rows of a JSON/JSONL file or a Hugging Face dataset, or a ``Problem`` for a row that can't be read.

    ``source`` is a ``.jsonl``/``.json`` file, a folder written by ``Dataset.save_to_disk``, a local
    ``load_dataset`` path, or a hub id (``split`` and ``name`` select the split and configuration).
    """
    path = Path(source)
    if path.is_file():
        suffix = "".join(path.suffixes[-1:]).lower()
        if suffix == ".jsonl":
            yield from _iter_jsonl(path)
            return
        if suffix == ".json":
            yield from _iter_json(path)
            return
        raise ValueError(f"{path}: unsupported file type '{suffix or path.name}' (expected .json or .jsonl)")
    if path.is_symlink() and not path.exists():  # audit N-31: a loop or a dangling link is not "no such file"
        try:
            path.resolve(strict=True)
            why = "a symbolic link to nothing"
        except RuntimeError:
            why = "a symbolic link loop"
        except OSError as exc:
            why = "a symbolic link loop" if exc.errno == 40 else "a symbolic link to nothing"
        raise FileNotFoundError(f"{path}: {why}")
    looks_local = path.suffix or str(source).startswith(("/", ".", "~")) or str(source).count("/") > 1
    if looks_local and not path.exists():
        # Looks like a file (a suffix, a path): a typo is said at once, not looked up on the hub.
        raise FileNotFoundError(f"{path}: no such file")
    yield from _iter_hf(str(source), split, name)


def resolve_records_spec(spec: str | os.PathLike | None) -> str:
    """Where training records come from: ``nlft:sample`` is the bundled sample, anything else is a path or id."""
    if spec is None or not str(spec):
        raise ValueError("no training data: pass --data (records from `nlft data build`, or nlft:sample)")
    return str(SAMPLE_RECORDS) if str(spec) == SAMPLE_RECORDS_SPEC else str(spec)


# --------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------


def _pick(data: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str | None, Any]:
    """The first present name and its value; a value of None counts as absent."""
    for name in names:
        if name in data and data[name] is not None:
            return name, data[name]
    return None, None


def content_id(question: str, response: str | None = None) -> str:
    """A stable id for a row that has none: the same text always gets the same id."""
    h = hashlib.sha256(question.encode("utf-8"))
    if response is not None:
        h.update(b"\x00" + response.encode("utf-8"))
    return "rec-" + h.hexdigest()[:16]


class _Validator:
    def __init__(self, row: Row, fields: dict[str, tuple[str, ...]]):
        self.row = row
        self.fields = fields
        self.problems: list[Problem] = []
        self.record_id: str | None = None

    def problem(self, field_name: str | None, message: str) -> None:
        self.problems.append(Problem(self.row.source, self.row.location, field_name, message, self.record_id))

    def text(self, key: str, *, required: bool, allow_empty: bool = False) -> str | None:
        name, value = _pick(self.row.data, self.fields[key])
        shown = name or self.fields[key][0]
        if name is None:
            if required:
                alts = " or ".join(f"'{n}'" for n in self.fields[key])
                self.problems.append(
                    Problem(
                        self.row.source,
                        self.row.location,
                        shown,
                        f"missing (expected {alts})",
                        self.record_id,
                    )
                )
            return None
        if not isinstance(value, str):
            self.problem(shown, f"must be a string, got {type(value).__name__} ({_short(value)})")
            return None
        if not allow_empty and not value.strip():
            self.problem(shown, "is empty" if value == "" else "is blank (only whitespace)")
            return None
        return value


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _row_id(v: _Validator, question: str | None, response: str | None) -> str | None:
    name, value = _pick(v.row.data, ("id",))
    if name is None:
        return content_id(question, response) if question else None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        v.problem("id", f"must be a string or an integer, got {type(value).__name__} ({_short(value)})")
        return None
    value = str(value)
    if not value.strip():
        v.problem("id", "is empty")
        return None
    return value


def _extra(data: Mapping[str, Any], known: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    names = {n for ns in known.values() for n in ns}
    return {k: v for k, v in data.items() if k not in names}


def validate_record(row: Row, *, require_reference: bool = True) -> tuple[Record | None, list[Problem]]:
    if not isinstance(row.data, Mapping):
        return None, [
            Problem(row.source, row.location, None, f"expected a JSON object, got {type(row.data).__name__}")
        ]
    v = _Validator(row, RECORD_FIELDS)
    data = row.data
    raw_id = data.get("id")
    if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
        v.record_id = str(raw_id)
    question = v.text("question", required=True)
    response = v.text("response", required=True)
    reference = v.text("reference", required=require_reference)
    system = v.text("system", required=False, allow_empty=True)
    judgment: str | None = None
    if "judgment" in data and data["judgment"] is not None:
        j = data["judgment"]
        if not isinstance(j, str):
            v.problem("judgment", f"must be a string or null, got {type(j).__name__} ({_short(j)})")
        elif not j.strip():
            what = "is an empty string" if not j else "holds only whitespace"
            v.problem("judgment", f"{what}; use null for a correct response")
        else:
            judgment = j
    correct = data.get("correct")
    if correct is not None and not isinstance(correct, bool):
        v.problem("correct", f"must be true, false or null, got {type(correct).__name__} ({_short(correct)})")
        correct = None
    if correct is True and judgment is not None:
        v.problem("judgment", "given on a record marked correct (a judgment marks a wrong response)")
    rid = _row_id(v, question, response)
    v.record_id = rid
    if v.problems:
        return None, [Problem(p.source, p.location, p.field, p.message, rid) for p in v.problems]
    assert question is not None and response is not None and rid is not None
    return (
        Record(
            id=rid,
            question=question,
            response=response,
            reference=reference,
            judgment=judgment,
            system=system,
            correct=correct,
            extra=_extra(data, RECORD_FIELDS),
        ),
        [],
    )


def validate_question(row: Row) -> tuple[Question | None, list[Problem]]:
    if not isinstance(row.data, Mapping):
        return None, [
            Problem(row.source, row.location, None, f"expected a JSON object, got {type(row.data).__name__}")
        ]
    v = _Validator(row, QUESTION_FIELDS)
    question = v.text("question", required=True)
    reference = v.text("reference", required=False)
    system = v.text("system", required=False, allow_empty=True)
    rid = _row_id(v, question, None)
    if v.problems:
        return None, v.problems
    assert question is not None and rid is not None
    return Question(rid, question, reference, system, _extra(row.data, QUESTION_FIELDS)), []


def _collect(
    rows: Iterable[Row | Problem], validate, *, skip_invalid: bool, what: str, source: str
) -> RecordList:
    items: list[Any] = []
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    for row in rows:
        if isinstance(row, Problem):
            problems.append(row)
            continue
        item, found = validate(row)
        if item is not None and item.id in first_seen:
            found = [
                Problem(
                    row.source,
                    row.location,
                    "id",
                    f"duplicate id '{item.id}' (first on {first_seen[item.id]})",
                    item.id,
                )
            ]
        if found:
            problems.extend(found)
            continue
        first_seen[item.id] = row.location
        items.append(item)
    if problems and not skip_invalid:
        raise RecordError(
            problems, hint=f"Fix the {what} above, or pass --skip-invalid to skip them and go on."
        )
    return RecordList(items, skipped=problems, source=source, locations=first_seen)


def load_records(
    source: str | os.PathLike,
    *,
    skip_invalid: bool = False,
    require_reference: bool = True,
    split: str | None = None,
    name: str | None = None,
) -> RecordList:
    """Load and validate training records. Raises ``RecordError`` listing every bad row, unless ``skip_invalid``."""
    return _collect(
        iter_rows(source, split=split, name=name),
        lambda row: validate_record(row, require_reference=require_reference),
        skip_invalid=skip_invalid,
        what="records",
        source=str(source),
    )


def load_questions(
    source: str | os.PathLike,
    *,
    skip_invalid: bool = False,
    split: str | None = None,
    name: str | None = None,
) -> RecordList:
    """Load a question set (``question``/``input`` plus an optional ``answer``/``reference``)."""
    return _collect(
        iter_rows(source, split=split, name=name),
        validate_question,
        skip_invalid=skip_invalid,
        what="questions",
        source=str(source),
    )


def records_from_dicts(
    rows: Iterable[Mapping[str, Any]],
    source: str = "<memory>",
    *,
    skip_invalid: bool = False,
    require_reference: bool = True,
) -> RecordList:
    """Validate in-memory rows (tests, notebooks) with the same rules as files."""
    return _collect(
        (Row(source, f"row {i}", data) for i, data in enumerate(rows)),
        lambda row: validate_record(row, require_reference=require_reference),
        skip_invalid=skip_invalid,
        what="records",
        source=source,
    )


@dataclass(kw_only=True)
class ValidateOptions:
    """``nlft data validate``: which records file, and whether its invalid lines are listed or fatal."""

    file: str = opt(positional=True, help="records: .jsonl, .json, a saved HF dataset folder or a hub id")
    split: str | None = opt(None, help="split, for Hugging Face datasets")
    skip_invalid: bool = opt(False, help="list invalid lines instead of failing")


def validation_report(options: ValidateOptions) -> list[str]:
    """``nlft data validate``: the counts of a records file, and every invalid line where they are skipped."""
    records = load_records(options.file, skip_invalid=options.skip_invalid, split=options.split)
    if not records and not records.skipped:
        raise ValueError(f"{options.file}: holds no records")
    n_wrong = sum(not r.is_correct for r in records)
    unjudged = sum(not r.is_correct and r.judgment is None for r in records)
    line = f"{options.file}: {len(records)} valid records ({len(records) - n_wrong} correct, {n_wrong} wrong"
    lines = [line + (f", {unjudged} of them without a judgment)" if unjudged else ")")]
    if records.skipped:
        lines.append(f"{len(records.skipped)} invalid lines skipped:")
        lines += [f"  {problem}" for problem in records.skipped]
    return lines
