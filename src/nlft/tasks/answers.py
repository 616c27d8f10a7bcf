"""Numeric final answers, graded the GSM8K way: reading numbers out of text, and the three rules.

Three extraction rules are offered, because the field uses all three and they disagree on real outputs:

* ``strict``   the number after the first ``#### `` (lm-eval's ``strict-match``);
* ``flexible`` the last number in the text (lm-eval's ``flexible-extract``);
* ``authors``  the NLFT authors' rule: the first number after the first ``####``, else the last number.

``strict`` and ``flexible`` reproduce lm-eval's gsm8k task (v3.0) exactly, extraction and comparison alike, so
their accuracies are the numbers ``lm_eval --tasks gsm8k`` reports for the same responses: the filter's regex
takes the first (strict) or last (flexible) match even when that match is not a number (``"..."``), and the
match is compared with the gold answer as a *string* once ``,``, ``$`` and one trailing ``.`` are removed, so
``"18.00"`` does not equal ``"18"``. ``authors`` compares exact decimals (``"18.0"`` equals ``"18"``).

The extracted answers reported (``extract``, ``Grade.extracted``) are normalised numbers (thousands commas,
``$`` and trailing periods removed), or None where a rule finds no number.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from ..records import Question
from .base import Grade, Task

RULES = ("strict", "flexible", "authors")

_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_AUTHORS_NUM_RE = re.compile(r"-?\d+\.?\d*")
_GOLD_RE = re.compile(r"####\s*(.+?)\s*$", re.S)


def normalize_number(text: str | None) -> str | None:
    """Strip what does not change a number's value: commas, dollar signs, spaces and a trailing period."""
    if text is None:
        return None
    out = text.strip().replace(",", "").replace("$", "").replace(" ", "")
    out = out.rstrip(".")
    return out or None


def to_decimal(text: str | None) -> Decimal | None:
    norm = normalize_number(text)
    if norm is None:
        return None
    try:
        value = Decimal(norm)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _as_number(match: str | None) -> str | None:
    norm = normalize_number(match)
    return norm if to_decimal(norm) is not None else None


def strict_match(text: str) -> str | None:
    """What lm-eval's ``strict-match`` filter keeps: the first match of its regex, unnormalised (None: no match)."""
    matches = _STRICT_RE.findall(text)
    return matches[0].strip() if matches else None


def flexible_match(text: str) -> str | None:
    """What lm-eval's ``flexible-extract`` filter keeps: the last match of its regex, even ``"..."``."""
    matches = _FLEXIBLE_RE.findall(text)
    if not matches:
        return None
    groups = [g for g in matches[-1] if g]
    return groups[0].strip() if groups else None


def extract_strict(text: str) -> str | None:
    """The number after the first ``#### `` marker, or None."""
    return _as_number(strict_match(text))


def extract_flexible(text: str) -> str | None:
    """The last number in the text (None when lm-eval's last match is not a number, as in ``"wait..."``)."""
    return _as_number(flexible_match(text))


def extract_authors(text: str) -> str | None:
    """The NLFT authors' rule: first number after the first ``####``; without ``####``, the last number."""
    parts = text.lower().split("####")
    has_marker = len(parts) > 1
    segment = parts[1] if has_marker else parts[-1]
    numbers = _AUTHORS_NUM_RE.findall(segment.replace(",", ""))
    if not numbers:
        return None
    return normalize_number(numbers[0] if has_marker else numbers[-1])


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "strict": extract_strict,
    "flexible": extract_flexible,
    "authors": extract_authors,
}


def extract(text: str, rule: str = "authors") -> str | None:
    try:
        return EXTRACTORS[rule](text)
    except KeyError:
        raise ValueError(f"unknown extraction rule '{rule}' (choose from {', '.join(RULES)})") from None


def gold_answer(answer: str) -> str:
    """The final number of a GSM8K gold solution (the text after ``####``). Raises if there is none."""
    match = _GOLD_RE.search(answer)
    if not match or to_decimal(match.group(1)) is None:
        raise ValueError(f"no '#### <number>' at the end of the gold answer: {answer[-60:]!r}")
    return normalize_number(match.group(1))  # type: ignore[return-value]


# lm-eval's gsm8k ``exact_match``: these patterns are deleted from prediction and reference, in this order,
# then both are lower-cased and compared as strings. The third one reduces a gold solution to its final answer.
_LM_EVAL_IGNORE = tuple(re.compile(p) for p in (",", r"\$", r"(?s).*#### ", r"\.$"))


def lm_eval_normalize(text: str) -> str:
    for pattern in _LM_EVAL_IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def lm_eval_match(match: str | None, gold: str) -> bool:
    """lm-eval's gsm8k comparison of a filtered response (``strict_match``/``flexible_match``) with the gold answer
    (a number, or a solution ending in ``#### N``). No match never counts (lm-eval's ``[invalid]``)."""
    return match is not None and lm_eval_normalize(match) == lm_eval_normalize(gold)


def same_number(prediction: str | None, gold: str | None) -> bool:
    """Numeric equality of two extracted answers (``"18.0" == "18"``); None never matches."""
    a, b = to_decimal(prediction), to_decimal(gold)
    if a is None or b is None:
        return False
    return a == b


LM_EVAL_RULES = ("strict", "flexible")


def grade(response: str, gold: str, rule: str = "authors") -> Grade:
    """Grade ``response`` against a gold number (or a gold solution ending in ``#### N``) by every rule."""
    if rule not in EXTRACTORS:
        raise ValueError(f"unknown extraction rule '{rule}' (choose from {', '.join(RULES)})")
    gold_num = gold_answer(gold) if "####" in gold else normalize_number(gold) or ""
    extracted = {name: fn(response) for name, fn in EXTRACTORS.items()}
    matches = {name: same_number(value, gold_num) for name, value in extracted.items()}
    lm_eval = {
        "strict": lm_eval_match(strict_match(response), gold),
        "flexible": lm_eval_match(flexible_match(response), gold),
    }
    return Grade(gold_num, extracted, matches, rule, lm_eval)


def question_gold(question: Question) -> str:
    """The gold number a response to ``question`` is graded against: ``extra["gold"]`` (set by the GSM8K loader),
    else the ``#### N`` of its reference solution, else a reference that is a bare number. ``ValueError`` (saying
    why) when there is none. The one gold rule of sampling, judging and evaluation."""
    gold = question.extra.get("gold")
    if gold is not None and to_decimal(str(gold)) is not None:
        return normalize_number(str(gold)) or ""
    ref = question.reference
    if ref is None:
        raise ValueError("no reference answer to grade against")
    if "####" in ref:
        return gold_answer(ref)
    if to_decimal(ref) is None:
        raise ValueError("the reference answer is not a number and has no '#### <number>' line")
    return normalize_number(ref) or ""


def gold_text(question: Question) -> str:
    """What a response is graded against: the reference solution itself where it has ``#### N`` (lm-eval compares
    with the text after its last ``#### ``), else the gold number (``question_gold``)."""
    ref = question.reference
    return ref if ref is not None and "####" in ref else question_gold(question)


class NumericTask(Task):
    """A task whose answers are numbers, written the GSM8K way (``#### N``) and graded by the rules above.
    ``gsm8k`` and ``mini-math`` are two; a question file names no task and is graded as one of these."""

    name = "numeric"
    description = "numeric final answers ('#### N'), graded by the GSM8K rules"
    rules = RULES
    default_rule = "authors"

    def gold(self, question: Question) -> str:
        return question_gold(question)

    def grade(self, response: str, question: Question, rule: str | None = None) -> Grade:
        return grade(response, gold_text(question), rule or self.default_rule)
