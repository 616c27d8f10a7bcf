"""What each test answer of an evaluation came to, per question and compact enough to commit: right or wrong
under each rule, in GSM8K format or not, its length, whether it ran out of tokens, and the arithmetic judge's
verdict. Experiments keep these for every run so that differences can be paired question by question
(``nlft.evals.bootstrap``) and a format gain told apart from better reasoning:

* ``formatted``: the answer ends in ``#### N`` (the strict rule found a number);
* ``verdict``: the arithmetic judge's finding (``nlft.data.arithmetic.judge_response``): ``correct``, an
  ``arithmetic`` slip, a ``divergence`` (right arithmetic, wrong path), a ``final-answer`` set-up error, or
  ``no-answer``.

``Outcomes`` holds one evaluation's facts in question order; ``encode``/``decode`` write them as strings (one
character per question) and lengths as one line of numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RULES = ("authors", "strict", "flexible")
VERDICTS = {"c": "correct", "a": "arithmetic", "d": "divergence", "f": "final-answer", "n": "no-answer"}
_CODES = {v: k for k, v in VERDICTS.items()}


@dataclass
class Outcomes:
    """One evaluation's answers, question by question (``ids`` in order)."""

    ids: list[str]
    correct: dict[str, list[bool]]  # rule -> per question
    formatted: list[bool]
    chars: list[int]
    truncated: list[bool]
    verdict: list[str]

    def encode(self) -> dict[str, Any]:
        def bits(values: Sequence[bool]) -> str:
            return "".join("1" if v else "0" for v in values)

        return {
            "ids": list(self.ids),
            **{rule: bits(self.correct[rule]) for rule in RULES},
            "formatted": bits(self.formatted),
            "truncated": bits(self.truncated),
            "chars": " ".join(map(str, self.chars)),
            "verdict": "".join(_CODES[v] for v in self.verdict),
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> Outcomes:
        def flags(text: str) -> list[bool]:
            return [c == "1" for c in text]

        return cls(
            ids=list(data["ids"]),
            correct={rule: flags(data[rule]) for rule in RULES},
            formatted=flags(data["formatted"]),
            truncated=flags(data["truncated"]),
            chars=[int(c) for c in data["chars"].split()],
            verdict=[VERDICTS[c] for c in data["verdict"]],
        )

    def share(self, name: str) -> float:
        """The share of questions with ``name``: a rule (right under it), ``formatted``, ``truncated``, or a
        verdict."""
        if name in self.correct:
            values = self.correct[name]
        elif name in ("formatted", "truncated"):
            values = getattr(self, name)
        elif name in _CODES:
            values = [v == name for v in self.verdict]
        else:
            raise KeyError(name)
        return sum(values) / len(values) if values else 0.0

    def mean_chars(self) -> float:
        return sum(self.chars) / len(self.chars) if self.chars else 0.0


def from_items(items: Sequence[dict[str, Any]], references: dict[str, str]) -> Outcomes:
    """``Outcomes`` of the rows of an ``items.jsonl`` (one per question: greedy), in the rows' question-id order.
    ``references`` maps a question id to its worked solution, which the arithmetic judge compares against."""
    from ..data.arithmetic import judge_response

    rows = sorted(items, key=lambda r: str(r["id"]))
    seen = set()
    for row in rows:
        if row["id"] in seen:
            raise ValueError(f"question {row['id']} is answered more than once (a sampled evaluation?)")
        seen.add(row["id"])
    verdicts = []
    for row in rows:
        reference = references.get(str(row["id"]))
        if reference is None:
            raise ValueError(f"question {row['id']}: no reference solution to judge the answer against")
        verdicts.append(
            judge_response(row.get("response") or "", reference, question=row.get("question") or "").reason
        )
    return Outcomes(
        ids=[str(r["id"]) for r in rows],
        correct={rule: [bool(r["correct"].get(rule)) for r in rows] for rule in RULES},
        formatted=[r["extracted"].get("strict") is not None for r in rows],
        chars=[len(r.get("response") or "") for r in rows],
        truncated=[r.get("finish_reason") == "length" for r in rows],
        verdict=verdicts,
    )


def read_outcomes(folder: Path, references: dict[str, str]) -> Outcomes:
    """``Outcomes`` of an evaluation folder (``items.jsonl``); every question must have been answered."""
    from ..files import read_json
    from ..jsonl import read_jsonl

    summary = read_json(folder / "summary.json", "evaluation summary")
    if not isinstance(summary, dict) or not summary.get("complete"):
        raise ValueError(f"{folder}: the evaluation is not complete; rerun it to finish")
    return from_items(read_jsonl(folder / "items.jsonl"), references)
