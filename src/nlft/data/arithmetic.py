"""Arithmetic checking of chain-of-thought answers, and the offline judge built on it (``nlft judge --backend arithmetic``).

Two kinds of arithmetic claim are read out of a response:

* calculator annotations ``<<48/2=24>>`` (GSM8K's format, which models trained on GSM8K imitate), and the
  number displayed right after one (``<<60-98=-38>>38`` displays a different number than it computed);
* inline claims ``a op b = c`` in the prose (``$5 / 30 = $0.17``, ``9*8 - 5 = 69``, ``0.2 x 50 = 10``).

Every expression is evaluated by ``evaluate``: a parser on ``ast`` that accepts only number literals, ``+ - * /
// **``, unary signs and parentheses, computes exactly with fractions, and refuses long inputs, large exponents
and huge intermediate numbers, so no text from a model or a data file is ever executed. A stated result may be
rounded in either direction to the precision it is written with (``5/30 = 0.17``, ``50/12 = 5``), so it is
wrong only when it is off by at least one unit of its last digit.

``judge_response`` turns the checks into a judgment a training record can carry: the first wrong calculation,
or, when every calculation is right but the final answer is not, the first step whose result never occurs in
the gold solution (where the reasoning left the right path). The judgment quotes that step as written, says what
it claims and what is right, so that the X_judge prompt points at the very tokens that are wrong.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

from ..tasks.answers import extract, gold_answer, to_decimal

# Limits that keep a hostile string from hanging or exhausting the evaluator.
MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_BITS = 4096  # numerator and denominator of every intermediate value

_ALLOWED_CHARS = re.compile(r"[0-9.+\-*/() \t]*")
_LITERAL = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: Fraction(a // b),
}
# Operator spellings found in model output, mapped to Python's.
_OPERATOR_SPELLINGS = {
    "×": "*",
    "·": "*",
    "⋅": "*",
    "x": "*",
    "X": "*",
    "÷": "/",
    "−": "-",
    "–": "-",
    "^": "**",
}


class ExpressionError(ValueError):
    """Not a whitelisted arithmetic expression, too large, or undefined (division by zero)."""


def _check_size(value: Fraction) -> Fraction:
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        raise ExpressionError("number too large")
    return value


def _eval(node: ast.AST, source: str) -> Fraction:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExpressionError(f"not a number: {node.value!r}")
        # The literal's own text, not the float Python made of it: 0.1 stays exactly 1/10. (One line of ASCII,
        # so the column offsets index the string.)
        text = source[node.col_offset : node.end_col_offset]
        if not _LITERAL.fullmatch(text):
            raise ExpressionError(f"unsupported number literal {text!r}")
        return _check_size(Fraction(text))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _eval(node.operand, source)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, source), _eval(node.right, source)
        if isinstance(node.op, ast.Pow):
            if right.denominator != 1 or abs(right) > MAX_EXPONENT:
                raise ExpressionError(f"exponent {right} is not a whole number within ±{MAX_EXPONENT}")
            bits = max(left.numerator.bit_length(), left.denominator.bit_length())
            if bits * abs(int(right)) > MAX_BITS:
                raise ExpressionError("number too large")
            if left == 0 and right < 0:
                raise ExpressionError("division by zero")
            return _check_size(left ** int(right))
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node.op, (ast.Div, ast.FloorDiv)) and right == 0:
            raise ExpressionError("division by zero")
        return _check_size(op(left, right))
    raise ExpressionError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression, or ``ExpressionError``. Never executes anything.

    Accepts decimal literals, ``+ - * / // **`` (also written ``× · ÷ − ^``), unary signs and parentheses.
    """
    text = expression.strip()
    for spelled, op in _OPERATOR_SPELLINGS.items():
        if spelled not in "xX":  # a letter x is only an operator where the text scanner says so
            text = text.replace(spelled, op)
    if not text:
        raise ExpressionError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    if not _ALLOWED_CHARS.fullmatch(text):
        raise ExpressionError("only numbers, + - * / ** and parentheses are allowed")
    if _LITERAL.fullmatch(text):  # the common case (an annotation's result) needs no parser
        return Fraction(text)
    try:
        tree = ast.parse(text, mode="eval")
        return _eval(tree.body, text)
    except ExpressionError:
        raise
    except (SyntaxError, RecursionError, MemoryError, OverflowError, ValueError, ZeroDivisionError) as exc:
        raise ExpressionError(f"cannot evaluate {expression!r}: {type(exc).__name__}") from None


# --------------------------------------------------------------------------------------------------------------
# Numbers as written, and whether a stated result is right
# --------------------------------------------------------------------------------------------------------------

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+(?!\d|,\d)|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(_NUMBER)


def decimals(number: str) -> int:
    """Digits after the decimal point of a written number (``"0.17"`` -> 2)."""
    body = number.strip().rstrip("%")
    return len(body.split(".", 1)[1]) if "." in body else 0


def parse_number(written: str) -> Fraction:
    """A written number (``$1,200.50``, ``-3``, ``20%`` as 20) as an exact fraction."""
    text = written.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip("%")
    text = text.replace("−", "-").replace("–", "-")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ExpressionError(f"not a number: {written!r}") from None


def agrees(value: Fraction, stated: str) -> bool:
    """Whether ``stated`` is ``value`` written to its precision: off by less than one unit of its last digit.

    That admits rounding up, rounding down and truncation (``5/30 = 0.17``, ``10/3 = 3.33``, ``50/12 = 5``
    buses), and rejects any different whole number. A percentage may stand for its number or its fraction.
    """
    shown = parse_number(stated)
    unit = Fraction(1, 10 ** decimals(stated))
    candidates = [shown, shown / 100] if stated.strip().endswith("%") else [shown]
    return any(abs(value - c) < unit for c in candidates)


def format_value(value: Fraction) -> str:
    """A value for a judgment: whole numbers as they are, others to at most four decimals."""
    if value.denominator == 1:
        return str(value.numerator)
    rounded = round(value, 4)
    text = f"{float(rounded):.4f}".rstrip("0").rstrip(".")
    return text if Fraction(text) == value else f"about {text}"


# --------------------------------------------------------------------------------------------------------------
# Claims in text
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One arithmetic claim read from a text: ``expression`` is stated to equal ``stated``."""

    kind: str  # "annotation" (<<e=v>>), "display" (the number shown after an annotation) or "inline" (a op b = c)
    expression: str  # as written
    stated: str  # as written
    value: Fraction  # the true value of the expression
    start: int  # character offset of the claim in the text
    end: int

    @property
    def ok(self) -> bool:
        return agrees(self.value, self.stated)

    def describe(self) -> str:
        """``"30 / 2 = 16, but 30 / 2 = 15"`` for a wrong claim."""
        if self.kind == "display":
            return f"the calculation {self.expression} gives {format_value(self.value)}, but the text says {self.stated}"
        return (
            f"it claims {self.expression} = {self.stated}, but {self.expression} = {format_value(self.value)}"
        )

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "expression": self.expression,
            "stated": self.stated,
            "value": format_value(self.value),
            "ok": self.ok,
        }


ANNOTATION_RE = re.compile(r"<<([^<>]*)>>")
_DISPLAYED_RE = re.compile(r"\s*(\$?\s?-?(?:" + _NUMBER + r")%?)(?!\d|/\d)")

# Tokens of inline arithmetic (spaces skipped). "x" is a multiplication sign only between numbers (see _tokens).
_TOKEN_RE = re.compile(
    r"[ \t]*(?:(?P<num>\$?(?:" + _NUMBER + r")%?)"
    r"|(?P<op>\*\*|[+\-*/×÷−–·⋅^])"
    r"|(?P<lp>\()|(?P<rp>\))|(?P<eq>=)"
    r"|(?P<word>[A-Za-z_]+)"
    r"|(?P<other>\S))",
)
_MATH_KINDS = frozenset(("num", "op", "lp", "rp", "eq"))


class _Token(NamedTuple):
    kind: str
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    tokens = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind is not None:
            tokens.append(_Token(kind, m.group(kind), m.start(kind), m.end()))
    for i in range(1, len(tokens) - 1):
        t = tokens[i]
        if (
            t.kind == "word"
            and t.text in ("x", "X")
            and tokens[i - 1].kind in ("num", "rp")
            and tokens[i + 1].kind in ("num", "lp")
        ):
            tokens[i] = t._replace(kind="op")
        elif (
            t.kind == "op"
            and t.text in "-–"
            and tokens[i + 1].kind == "word"
            and tokens[i + 1].start == t.end
        ):
            tokens[i] = t._replace(kind="other")  # a hyphen: "41-foot"
    return tokens


def _piece_expression(piece: list[_Token]) -> str:
    parts = []
    for t in piece:
        if t.kind == "num":
            parts.append(t.text.replace("$", "").replace(",", "").rstrip("%"))
        elif t.kind == "op":
            parts.append(_OPERATOR_SPELLINGS.get(t.text, t.text))
        else:
            parts.append(t.text)
    return " ".join(parts)


def _has_binary_op(piece: list[_Token]) -> bool:
    return any(t.kind == "op" and i > 0 for i, t in enumerate(piece))


def _is_number(piece: list[_Token]) -> bool:
    return (len(piece) == 1 and piece[0].kind == "num") or (
        len(piece) == 2
        and piece[0].text in "-−–"
        and piece[1].kind == "num"
        and piece[0].end == piece[1].start
    )


def _evaluate_piece(piece: list[_Token]) -> list[Fraction]:
    """The values a piece can mean, first the literal one.

    People write a fraction inside a longer expression without parentheses (``$2000 / 2/3``, ``60 / 3/4``)
    and mean it as one number; and a percentage may be meant as its number or its fraction. Each reading is
    tried, so that a claim is called wrong only when no reading makes it right.
    """
    readings = [[_piece_expression([t]) for t in piece]]
    tight = [
        k
        for k in range(1, len(piece) - 1)
        if piece[k].text == "/" and piece[k - 1].end == piece[k].start and piece[k].end == piece[k + 1].start
    ]
    if tight and len(piece) > 3:
        grouped = list(readings[0])
        for k in tight:
            grouped[k - 1], grouped[k + 1] = "(" + grouped[k - 1], grouped[k + 1] + ")"
        readings.append(grouped)
    if any(t.kind == "num" and t.text.endswith("%") for t in piece):
        for reading in list(readings):
            readings.append(
                [
                    f"({r}/100)" if t.kind == "num" and t.text.endswith("%") else r
                    for r, t in zip(reading, piece)
                ]
            )
    values = []
    for reading in readings:
        try:
            values.append(evaluate(" ".join(reading)))
        except ExpressionError:
            if not values and reading is readings[0]:
                raise
    return values


# A run right after one of these words continues an expression begun in prose ("60 students x 2/3 = 40",
# "1 and 1/4 = 1.25"): its left part is not all there, so it is not checked.
_CONTINUATION_WORDS = {"x", "times", "and", "plus", "minus"}
_GLUE_LEFT_OK = set(" \t\n([{\"'“‘")


def inline_claims(text: str) -> list[Claim]:
    """Claims ``a op b = c`` written in prose (calculator annotations are not read here; strip them first).

    A run of arithmetic tokens is split at ``=``; each expression directly followed by a plain number is a
    claim. A run glued to a word or symbol on its left (``9x - 5``, ``6:00+48``), or continuing prose
    arithmetic (``students x 2/3``), is algebra, a label or a fragment, and is left out. A result in
    ``cents`` may be meant in dollars.
    """
    found, offset = [], 0
    for line in text.splitlines(keepends=True):
        # A claim never spans lines; most lines have none, and tokenizing them is the slow part.
        if "=" in line:
            found += [_shift(c, offset) for c in _line_claims(line)]
        offset += len(line)
    return found


def _line_claims(text: str) -> list[Claim]:
    claims: list[Claim] = []
    tokens = _tokens(text)
    i = 0
    while i < len(tokens):
        if tokens[i].kind not in _MATH_KINDS:
            i += 1
            continue
        j = i
        while j < len(tokens) and tokens[j].kind in _MATH_KINDS:
            j += 1
        run = tokens[i:j]
        start, end = run[0].start, run[-1].end
        prev_word = tokens[i - 1] if i > 0 else None
        next_word = tokens[j] if j < len(tokens) else None
        i = j
        if not any(t.kind == "eq" for t in run):
            continue
        pieces: list[list[_Token]] = [[]]
        for t in run:
            if t.kind == "eq":
                pieces.append([])
            else:
                pieces[-1].append(t)
        valid = [bool(p) for p in pieces]
        first = pieces[0]
        if start > 0 and text[start - 1] not in _GLUE_LEFT_OK:
            valid[0] = False
        if (
            prev_word is not None
            and prev_word.kind == "word"
            and prev_word.text.lower() in _CONTINUATION_WORDS
        ):
            valid[0] = False
        if (
            first
            and first[0].kind == "op"
            and not (first[0].text in "-−–" and len(first) > 1 and first[0].end == first[1].start)
        ):
            valid[0] = False  # a run that starts mid-expression ("9x - 5 = ...") has lost its left part
        if end < len(text) and (text[end].isdigit() or text[end] in ":/"):
            valid[-1] = False  # "= 6:48" (a unit glued on, "= 12kg", still states 12)
        if (
            next_word is not None
            and next_word.start == end
            and re.match(r"[A-Za-z](?![A-Za-z])\s*(?:[-+*/=^]|$)", text[end:])
        ):
            valid[-1] = False  # algebra: "= 1.2Y / 1.2", "= 5x"
        in_cents = next_word is not None and next_word.text.lower() in ("cents", "cent")
        for k in range(len(pieces) - 1):
            lhs, rhs = pieces[k], pieces[k + 1]
            if len(rhs) > 1 and rhs[0].kind == "num" and rhs[1].kind == "num":
                if re.fullmatch(r"\d{1,3}", rhs[0].text.lstrip("$")) and re.fullmatch(r"\d{3}", rhs[1].text):
                    # "18 000": thousands spaced out
                    rhs = [rhs[0]._replace(text=text[rhs[0].start : rhs[1].end], end=rhs[1].end)]
                else:
                    rhs = rhs[:1]  # "= 4000 6 megabyte pictures": the result, then a number of the prose
            if not (valid[k] and valid[k + 1] and _has_binary_op(lhs) and _is_number(rhs)):
                continue
            try:
                values = _evaluate_piece(lhs)
            except ExpressionError:
                continue
            if in_cents and k + 1 == len(pieces) - 1:
                values += [v * 100 for v in values]
            stated = "".join(t.text for t in rhs)
            expression = text[lhs[0].start : lhs[-1].end]
            value = next((v for v in values if agrees(v, stated)), values[0])
            claims.append(Claim("inline", expression, stated, value, lhs[0].start, rhs[-1].end))
    return claims


def _shift(claim: Claim, offset: int) -> Claim:
    return Claim(
        claim.kind, claim.expression, claim.stated, claim.value, claim.start + offset, claim.end + offset
    )


def annotation_claims(text: str) -> list[Claim]:
    """Claims of the calculator annotations ``<<expr=value>>`` and of the number displayed right after each."""
    claims: list[Claim] = []
    for m in ANNOTATION_RE.finditer(text):
        parts = m.group(1).split("=")
        if len(parts) < 2:
            continue
        values: list[Fraction | None] = []
        for part in parts:
            try:
                values.append(evaluate(part))
            except ExpressionError:
                values.append(None)  # algebra such as 9x-5+x: not arithmetic, not checked
        for k in range(len(parts) - 1):
            stated = parts[k + 1].strip()
            value = values[k]
            if value is None or not _NUMBER_RE.fullmatch(stated.lstrip("-")):
                continue
            claims.append(Claim("annotation", parts[k].strip(), stated, value, m.start(), m.end()))
        result = values[-1]
        shown = _DISPLAYED_RE.match(text, m.end())
        if result is not None and shown and _NUMBER_RE.fullmatch(parts[-1].strip().lstrip("-")):
            claims.append(
                Claim("display", parts[0].strip(), shown.group(1).strip(), result, m.start(), shown.end())
            )
    return claims


def strip_annotations(text: str) -> str:
    """The text a reader sees: calculator annotations removed."""
    return ANNOTATION_RE.sub("", text)


def claims(text: str) -> list[Claim]:
    """Every arithmetic claim in ``text``: annotations, displayed results and inline claims, in text order.

    An inline claim that repeats an annotation of the same place (``48/2 = <<48/2=24>>24``) is kept once.
    """
    found = annotation_claims(text)
    # Inline claims are read in the text as shown; ``origin`` maps each shown character back to the original.
    shown_chars: list[str] = []
    origin: list[int] = []
    pos = 0
    for m in [*ANNOTATION_RE.finditer(text), None]:
        stop = m.start() if m else len(text)
        shown_chars.append(text[pos:stop])
        origin.extend(range(pos, stop))
        pos = m.end() if m else pos
    shown = "".join(shown_chars)
    seen = {(_key(c.expression), parse_number(c.stated)) for c in found if c.kind == "annotation"}
    for c in inline_claims(shown):
        if (_key(c.expression), parse_number(c.stated)) in seen:
            continue
        found.append(Claim(c.kind, c.expression, c.stated, c.value, origin[c.start], origin[c.end - 1] + 1))
    return sorted(found, key=lambda c: c.start)


def _key(expression: str) -> str:
    return re.sub(r"[\s$,]", "", expression).replace("×", "*").replace("x", "*").replace("÷", "/")


# --------------------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """A line of a response, or a sentence of a long line: the unit a judgment points at."""

    index: int
    text: str  # as written, annotations included
    start: int  # character offset in the response

    @property
    def shown(self) -> str:
        return " ".join(strip_annotations(self.text).split())


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_LABEL = re.compile(r"^\s*(?:[#*_]*\s*)?(?:step\s*)?\d+\s*[.):]\s*", re.I)


def split_steps(text: str) -> list[Step]:
    """Non-empty lines, and the sentences of a line (a paragraph answer is many steps)."""
    steps: list[Step] = []
    pos = 0
    for line in text.splitlines(keepends=True):
        line_start = pos
        pos += len(line)
        body = line.rstrip("\r\n")
        cuts = [0, *(m.end() for m in _SENTENCE_END.finditer(body)), len(body)]
        for a, b in zip(cuts, cuts[1:]):
            piece = body[a:b]
            lead = len(piece) - len(piece.lstrip())
            piece = piece.strip()
            if piece:
                steps.append(Step(len(steps), piece, line_start + a + lead))
    return steps


def _numbers(text: str) -> list[tuple[str, Fraction]]:
    out = []
    for m in re.finditer(r"-?\$?(?:" + _NUMBER + r")%?", text):
        try:
            out.append((m.group(), parse_number(m.group())))
        except ExpressionError:
            continue
    return out


def _values_in(text: str) -> set[Fraction]:
    """Every number of a solution: the numbers written, and the values its annotations compute."""
    values = {v for _, v in _numbers(strip_annotations(text))}
    for m in ANNOTATION_RE.finditer(text):
        for part in m.group(1).split("="):
            try:
                values.add(evaluate(part))
            except ExpressionError:
                values.update(v for _, v in _numbers(part))
    return values | {-v for v in values}


def _occurs(stated: str, value: Fraction, pool: set[Fraction]) -> bool:
    """Whether a result occurs among ``pool``: whole numbers exactly, decimals up to their precision."""
    candidates = [value, value / 100] if stated.strip().endswith("%") else [value]
    if decimals(stated) == 0 and not stated.strip().endswith("%"):
        return value in pool
    unit = Fraction(1, 10 ** decimals(stated))
    return any(abs(c - g) < unit for c in candidates for g in pool)


def step_results(step: Step, question: str = "") -> list[tuple[str, Fraction]]:
    """What a step computes: the stated results of its claims; without any, the numbers it introduces that the
    question does not give (``Half of that is 5 miles``). Enumeration labels (``Step 2:``) are not results."""
    stated = [(c.stated, parse_number(c.stated)) for c in claims(step.text) if c.kind != "display"]
    if stated:
        return stated
    given = {v for _, v in _numbers(question)}
    return [(s, v) for s, v in _numbers(_LABEL.sub("", step.shown)) if v not in given]


# --------------------------------------------------------------------------------------------------------------
# The judge
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ArithmeticVerdict:
    """The arithmetic judge's finding on one response."""

    correct: bool
    judgment: str | None
    gold: str
    final_answer: str | None
    errors: list[tuple[Step, Claim]] = field(default_factory=list)  # wrong calculations, in order
    blamed: Step | None = None  # the step the judgment names first (None: only the final answer is blamed)
    reason: str = ""  # "correct", "arithmetic", "divergence", "final-answer" or "no-answer"

    def to_dict(self) -> dict:
        return {
            "reason": self.reason,
            "final_answer": self.final_answer,
            "gold": self.gold,
            "blamed_step": self.blamed.shown if self.blamed else None,
            "blamed_step_index": self.blamed.index if self.blamed else None,
            "errors": [{"step": s.shown, **c.to_dict()} for s, c in self.errors],
        }


def _quote(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return f'"{text}"' if len(text) <= limit else f'"{text[: limit - 3]}..."'


def _gold_step_missing(gold_steps: list[Step], seen: set[Fraction]) -> Step | None:
    """The first gold step that computes something the response had not reached: where the paths part."""
    for step in gold_steps:
        results = step_results(step)
        if results and not any(_occurs(s, v, seen) for s, v in results):
            return step
    return None


def judge_response(
    response: str, reference: str, *, question: str = "", rule: str = "authors"
) -> ArithmeticVerdict:
    """Check a response's arithmetic and final answer against a GSM8K-style gold solution (``... #### N``)."""
    gold = (
        gold_answer(reference)
        if "####" in reference
        else (reference.strip() if to_decimal(reference) is not None else None)
    )
    if gold is None:
        raise ValueError("the reference has no final number ('#### N') to compare the answer with")
    gold_value = parse_number(gold)
    final = extract(response, rule)
    final_ok = final is not None and to_decimal(final) is not None and parse_number(final) == gold_value

    steps = split_steps(response)
    errors = [(step, c) for step in steps for c in claims(step.text) if not c.ok]
    if final_ok and not errors:
        return ArithmeticVerdict(True, None, gold, final, reason="correct")

    if final is None:
        answer_part = f"The response never states a final answer (a last line '#### <number>'); the correct answer is {gold}."
    elif final_ok:
        answer_part = f"The final answer {final} happens to be right, but the work that leads to it is not."
    else:
        answer_part = f"The final answer {final} is wrong: the correct answer is {gold}."

    if errors:
        step, claim = errors[0]
        parts = [f"The step {_quote(step.shown)} is wrong: {claim.describe()}."]
        others = [(s, c) for s, c in errors[1:] if s.index != step.index][:2]
        for s, c in others:
            parts.append(f"The step {_quote(s.shown)} is also wrong: {c.describe()}.")
        if len(errors) > 1 + len(others):
            parts.append("There are further calculation mistakes after these.")
        if not final_ok:
            parts.append("Everything built on a wrong value inherits the mistake.")
        parts.append(answer_part)
        return ArithmeticVerdict(False, " ".join(parts), gold, final, errors, step, "arithmetic")

    gold_pool = _values_in(reference)
    gold_steps = [s for s in split_steps(reference) if "####" not in s.text]
    seen: set[Fraction] = set()
    for step in steps:
        results = step_results(step, question)
        off = [(s, v) for s, v in results if not _occurs(s, v, gold_pool)]
        if off:
            stated = off[0][0]
            right = _gold_step_missing(gold_steps, seen)
            how = "its arithmetic is right, but it arrives at" if claims(step.text) else "it states"
            parts = [
                f"The step {_quote(step.shown)} is wrong: {how} {stated}, a quantity that a correct solution of this "
                "problem never produces, so the reasoning goes astray here."
            ]
            if right is not None:
                parts.append(f"At this point a correct solution reasons instead: {_quote(right.shown)}.")
            parts.append(answer_part)
            return ArithmeticVerdict(False, " ".join(parts), gold, final, [], step, "divergence")
        seen.update(v for _, v in results)

    # Every result occurs in the gold solution (a right quantity used for the wrong question, as in "40 + 20 = 60
    # trackball mice" where 60 is the other mice): name the step where the wrong final value is first reached.
    blamed = None
    parts = []
    if final is not None:
        final_value = parse_number(final)
        blamed = next((s for s in steps if any(v == final_value for _, v in step_results(s, question))), None)
        blamed = blamed or next((s for s in reversed(steps) if final in s.shown), None)
    if blamed is not None and blamed is not steps[-1]:
        parts.append(
            f"The step {_quote(blamed.shown)} arrives at {final}, which is not what the question asks for."
        )
    parts += [
        answer_part,
        "Every calculation in the response is right, so the mistake is in how the problem was set up.",
    ]
    solution = " ".join(s.shown for s in gold_steps)
    if solution:
        parts.append(f"A correct solution goes: {_quote(solution, 600)}.")
    reason = "no-answer" if final is None else "final-answer"
    return ArithmeticVerdict(False, " ".join(parts), gold, final, [], blamed, reason)


def iter_alarms(text: str) -> Iterator[Claim]:
    """The wrong claims of a text (used to check that gold solutions raise none)."""
    return (c for c in claims(text) if not c.ok)
