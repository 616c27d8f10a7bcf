import importlib.util
import json
import random
import re
from fractions import Fraction

import pytest

from nlft.data.arithmetic import (
    ExpressionError,
    agrees,
    annotation_claims,
    claims,
    evaluate,
    inline_claims,
    iter_alarms,
    judge_response,
    split_steps,
    strip_annotations,
)

from ..conftest import REPO, need_shared

# --------------------------------------------------------------------------------------------------------------
# The safe evaluator
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("48/2", 24),
        ("0.1+0.2", Fraction(3, 10)),  # exact, not float
        ("2+3*4", 14),
        ("(2+3)*4", 20),
        ("-5+3", -2),
        ("+30+46+38+11+18", 143),  # GSM8K writes continuation annotations with a leading +
        ("3*+6", 18),
        ("560//10", 56),
        ("2**10", 1024),
        ("2^3", 8),
        ("6 × 7 ÷ 2 − 1", 20),
        (".5*4", 2),
        ("5.", 5),
    ],
)
def test_evaluate_is_exact_arithmetic(expression, value):
    assert evaluate(expression) == value


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os').system('echo pwned')",
        "().__class__.__bases__[0].__subclasses__()",
        "open('/etc/passwd').read()",
        "lambda: 1",
        "[1, 2]",
        "'1' + '2'",
        "1 if 1 else 2",
        "a + 1",
        "1e308*10",
        "0x10",
        "1_000",
        "1j",
        "True + 1",
        "9**9**9",
        "10**64**2",
        "(10**60)**64",
        "*".join(["9**64"] * 30),  # within the length limit, but too large a number
        "1/0",
        "5//0",
        "0**-1",
        "2**0.5",
        "1" * 300,
        "(" * 150 + "1" + ")" * 150,
        "1+\n1",
    ],
)
def test_evaluate_refuses_anything_but_bounded_arithmetic(hostile):
    with pytest.raises(ExpressionError):
        evaluate(hostile)


def test_evaluate_allows_large_but_bounded_powers():
    assert evaluate("2**64") == 2**64
    assert evaluate("(-2)**-3") == Fraction(-1, 8)


# --------------------------------------------------------------------------------------------------------------
# Claims in text
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stated", "ok"),
    [
        (Fraction(1, 6), "0.17", True),  # rounded up
        (Fraction(1, 6), "0.16", True),  # truncated
        (Fraction(1, 6), "0.18", False),
        (Fraction(50, 12), "5", True),  # buses: rounded up to whole
        (Fraction(56), "57", False),  # a different whole number is always wrong
        (Fraction(56), "56.0", True),
        (Fraction(4, 5), "80%", True),
        (Fraction(80), "80%", True),
        (Fraction(1200), "$1,200", True),
    ],
)
def test_a_result_may_be_rounded_to_its_shown_precision_only(value, stated, ok):
    assert agrees(value, stated) is ok


def _inline(text):
    return [(c.expression, c.stated, c.ok) for c in inline_claims(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The capital is $5 / 30 = $0.17", [("$5 / 30", "$0.17", True)]),
        ("So 9x - 5 = 9*8 - 5 = 69", [("9*8 - 5", "69", False)]),
        ("Andy will be 11 x 2 = 22 years old.", [("11 x 2", "22", True)]),
        ("He pays 2 + 3 = 5 + 2 = 8 dollars", [("5 + 2", "8", False)]),  # only results written as numbers
        ("so -5 + 3 = -2", [("-5 + 3", "-2", True)]),
        ("She paid 20% * 50 = 10", [("20% * 50", "10", True)]),
        ("He spends $1 / 2 = 50 cents", [("$1 / 2", "50", True)]),
        ("his salary was $2000 / 2/3 = $3000", [("$2000 / 2/3", "$3000", True)]),
        ("In all 7*8 = 57.", [("7*8", "57", False)]),
        ("So x = 8", []),  # algebra, nothing to compute
        ("So 10x = 80", []),
        ("2x + 3 = 7", []),
        ("the sun sets at 6:00+48=6:48 PM", []),  # a clock, not a sum
        ("60 students x 2/3 = 40 students", []),  # the left part is in prose
        ("3 apples + 4 apples = 7 apples", []),
        ("The range is 60-46 = 14kg", [("60-46", "14", True)]),  # a unit glued on
        ("he has 100/2= 50-foot sections", [("100/2", "50", True)]),
        ("It holds 24000/6=4000 6 megabyte pictures", [("24000/6", "4000", True)]),
        ("he uses 600 x 30 = 18 000 watts", [("600 x 30", "18 000", True)]),
        ("so 192 / 1.2 = 1.2Y / 1.2", []),
        ("no arithmetic here = 5", []),
    ],
)
def test_inline_claims_read_prose_arithmetic_and_skip_algebra_and_fragments(text, expected):
    assert sorted(_inline(text)) == sorted(expected)


def test_annotation_and_the_number_displayed_after_it_are_both_checked():
    found = annotation_claims(
        "leaving 60 pens - 98 pens = <<60-98=-38>>38 pens; <<48/2=24>>24 clips; <<9x-5+x=14x-5>>"
    )
    assert [(c.kind, c.expression, c.stated, c.ok) for c in found] == [
        ("annotation", "60-98", "-38", True),
        ("display", "60-98", "38", False),
        ("annotation", "48/2", "24", True),
        ("display", "48/2", "24", True),
    ]


def test_an_inline_claim_repeating_its_annotation_is_reported_once():
    text = "She sold 48/2 = <<48/2=25>>25 clips in May."
    assert [c.kind for c in claims(text) if not c.ok] == ["annotation"]  # not a second, "inline" copy
    assert [c.kind for c in claims(text)] == ["annotation", "display"]  # (the display agrees with it)
    assert all(text[c.start : c.end].startswith(("48/2", "<<")) for c in claims(text))


def test_steps_are_lines_and_the_sentences_of_a_long_line():
    steps = split_steps("Let's go.\n\nHe has 3 + 4 = 7 apples. Then 7 * 2 = 14 pears.\n#### 14")
    assert [s.text for s in steps] == [
        "Let's go.",
        "He has 3 + 4 = 7 apples.",
        "Then 7 * 2 = 14 pears.",
        "#### 14",
    ]
    assert [s.index for s in steps] == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------------------------
# The judge
# --------------------------------------------------------------------------------------------------------------

GOLD = (
    "Half the distance from his apartment to work is 10 miles / 2 = <<10/2=5>>5 miles\n"
    "The gym is 2 more miles than this distance so is 2 + 5 = <<2+5=7>>7 miles away from his apartment\n#### 7"
)


def test_a_right_answer_with_right_arithmetic_is_correct():
    verdict = judge_response("Half is 10/2 = 5 miles.\nThe gym is 5 + 2 = 7 miles away.\n#### 7", GOLD)
    assert verdict.correct and verdict.judgment is None and verdict.reason == "correct"


def test_an_arithmetic_error_is_named_with_its_step_claim_and_right_value():
    response = (
        "Half of 10 is 10/2 = <<10/2=5>>5 miles.\nThe gym is 5 + 2 = <<5+2=8>>8 miles away.\nThe answer is 8."
    )
    verdict = judge_response(response, GOLD)
    assert not verdict.correct and verdict.reason == "arithmetic"
    assert verdict.blamed.shown == "The gym is 5 + 2 = 8 miles away."
    assert '"The gym is 5 + 2 = 8 miles away."' in verdict.judgment
    assert "5+2 = 8, but 5+2 = 7" in verdict.judgment
    assert "The final answer 8 is wrong: the correct answer is 7." in verdict.judgment


def test_a_right_calculation_on_the_wrong_quantity_is_blamed_where_the_path_leaves_the_gold_one():
    response = (
        "The distance from his apartment to work is 10 miles\n"
        "Half of that distance is 10/2 = <<10/2=5>>5 miles\n"
        "The gym is 2 miles more than the distance to work, 10+2 = <<10+2=12>>12 miles\n"
        "The answer is 12."
    )
    verdict = judge_response(response, GOLD, question="The distance to work is 10 miles. ...")
    assert verdict.reason == "divergence"
    assert verdict.blamed.index == 2
    assert "it arrives at 12" in verdict.judgment
    assert (
        '"The gym is 2 more miles than this distance so is 2 + 5 = 7 miles away from his apartment"'
        in verdict.judgment
    )
    assert "the correct answer is 7" in verdict.judgment


def test_no_final_answer_is_said_so():
    verdict = judge_response(
        "Half is 10/2 = 5 miles and the gym is 2 + 5 = 7 miles further", GOLD.replace("#### 7", "#### 9")
    )
    assert not verdict.correct
    assert verdict.final_answer == "7"  # the last number stands in for a missing '####' (the authors' rule)
    verdict = judge_response("I cannot tell.", GOLD)
    assert verdict.reason == "no-answer" and "never states a final answer" in verdict.judgment


def test_a_reference_without_a_final_number_is_an_error():
    with pytest.raises(ValueError, match="final number"):
        judge_response("#### 3", "just prose")


@pytest.mark.timeout(30)
def test_hostile_responses_are_judged_quickly_without_executing_anything():
    hostile = [
        "<<__import__('os').system('touch /tmp/nlft-pwned')=0>>0\n#### 1",
        "So " + "9**" * 60 + "9 = 1\n#### 1",
        "x = " + "(" * 5000 + "\n#### 1",
        "1+" * 20000 + "1 = 3\n#### 1",
        "<<" + "1*" * 5000 + "1=1>>1\n#### 1",
    ]
    for text in hostile:
        verdict = judge_response(text, GOLD)
        assert verdict.judgment  # judged (the final answer 1 is wrong), no exception, no hang


# --------------------------------------------------------------------------------------------------------------
# Real data: the GSM8K gold solutions, perturbed gold solutions, MathCritique
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gold_solutions():
    root = need_shared("data", "gsm8k")
    out = []
    for split in ("train", "test"):
        with open(root / f"{split}.jsonl", encoding="utf-8") as fh:
            out += [json.loads(line)["answer"] for line in fh]
    return out


@pytest.mark.shared
def test_no_alarm_on_any_calculator_annotation_of_gsm8k_gold(gold_solutions):
    n_annotations = n_displayed = 0
    alarms = []
    for solution in gold_solutions:
        for claim in annotation_claims(solution):
            n_annotations += claim.kind == "annotation"
            n_displayed += claim.kind == "display"
            if not claim.ok:
                alarms.append((claim.expression, claim.stated, solution[:80]))
    assert len(gold_solutions) == 7473 + 1319
    assert n_annotations > 27_900 and n_displayed > 27_900
    assert alarms == []


_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>=]*)>>(\$?)([\d.]+)")


def _perturb(solution: str, rng: random.Random) -> tuple[str, str, str] | None:
    """Change the result of one calculator annotation (and the number displayed after it) by at least two units
    of its last digit, so that no rounding makes it right. Returns (perturbed text, expression, new result)."""
    matches = [
        m
        for m in _ANNOTATION.finditer(solution)
        if m.group(2) == m.group(4) and re.fullmatch(r"\d+(\.\d+)?", m.group(2))
    ]
    if not matches:
        return None
    m = rng.choice(matches)
    shown = m.group(2)
    places = len(shown.split(".")[1]) if "." in shown else 0
    delta = Fraction(rng.choice([-1, 1]) * rng.choice([2, 3, 5, 9, 10, 100]), 10**places)
    new = Fraction(shown) + delta
    if new < 0:
        new = Fraction(shown) + abs(delta)
    new_text = f"{float(new):.{places}f}" if places else str(int(new))
    text = solution[: m.start()] + f"<<{m.group(1)}={new_text}>>{m.group(3)}{new_text}" + solution[m.end() :]
    return text, m.group(1), new_text


@pytest.mark.shared
def test_every_planted_arithmetic_error_in_perturbed_gold_solutions_is_caught(gold_solutions):
    rng = random.Random(1234)
    sample = rng.sample(gold_solutions, 1500)
    planted = caught = inline_planted = inline_caught = 0
    missed = []
    for solution in sample:
        perturbed = _perturb(solution, rng)
        if perturbed is None:
            continue
        text, expression, new = perturbed
        planted += 1
        if any(c.expression == expression.strip() and c.stated == new for c in iter_alarms(text)):
            caught += 1
        else:
            missed.append((expression, new, text))
        verdict = judge_response(
            text, solution
        )  # the final answer still matches: the judge must still object
        assert not verdict.correct and verdict.reason == "arithmetic", text
        # The same mistake written only in prose ("48/2 = 26"), where the text shows the whole calculation inline
        # (not glued to a word on its left, nor continuing a prose product such as "60 students x 2/3").
        shown = strip_annotations(text)
        lhs = (
            re.escape(expression)
            .replace(r"\*", r"\s*[*x×]\s*")
            .replace("/", r"\s*/\s*")
            .replace(r"\+", r"\s*\+\s*")
        )
        whole = r"(?:^|(?<=\s))(?<!\bx )(?<!\bX )(?<!times )(?<!and )\$?"
        if re.search(whole + lhs + r"\s*=\s*\$?" + re.escape(new) + r"(?![\d.])", shown, re.M):
            inline_planted += 1
            inline_caught += any(c.stated.lstrip("$") == new for c in iter_alarms(shown))
    assert planted > 1300
    assert missed == [] and caught == planted
    assert inline_planted > 400 and inline_caught == inline_planted


def _load_bench():
    spec = importlib.util.spec_from_file_location("judge_agreement", REPO / "bench" / "judge_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared
def test_mathcritique_every_wrong_answer_gets_a_judgment_and_the_blamed_step_mostly_agrees(capsys):
    path = need_shared("data", "mathcritique", "mathcritique_gsm8k_triples.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    bench = _load_bench()
    result = bench.agreement(rows)
    counts = result["counts"]
    assert counts["judged"] == 100 and counts["with a judgment"] == 100
    for _, verdict, _ in result["details"]:
        assert verdict.judgment and not verdict.correct
        if verdict.blamed is not None:
            assert (
                f'"{verdict.blamed.shown}"' in verdict.judgment
                or verdict.blamed.shown[:200] in verdict.judgment
            )
    agree = counts["critique marks it Wrong"]
    with capsys.disabled():
        print(f"\n[arithmetic judge vs MathCritique] blamed step marked Wrong by the critique: {agree}/100")
    assert agree >= 75  # 84 when written; a drop means the blame logic broke
