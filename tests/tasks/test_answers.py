import json
from itertools import combinations
from pathlib import Path

import pytest

from nlft.tasks.answers import (
    RULES,
    extract,
    gold_answer,
    grade,
    lm_eval_match,
    normalize_number,
    same_number,
)
from nlft.tasks.gsm8k import load_gsm8k

# Responses chosen to split the rules, with what each rule extracts and whether it is right, checked by hand;
# the strict/flexible verdicts were also confirmed with lm-eval's own filters and metric (scripts/lm_eval_parity.py).
TRICKY_FILE = Path(__file__).parents[1] / "fixtures" / "gsm8k_tricky.jsonl"
TRICKY = [json.loads(line) for line in TRICKY_FILE.read_text(encoding="utf-8").splitlines()]

# (text, strict, flexible, authors) -- expectations checked by hand.
CASES = [
    ("She has 5 apples.\n#### 5", "5", "5", "5"),
    ("The loss is 3 - 8 = -5 dollars.\n#### -5", "-5", "-5", "-5"),
    ("Each costs 2.5 so 2 * 2.5 = 5.0\n#### 5.0", "5.0", "5.0", "5.0"),
    ("Total is $1,200.\n#### $1,200.", None, "1200", "1200"),
    ("#### 1,200.", "1200", "1200", "1200"),
    ("First #### 12 then again #### 13", "12", "13", "12"),
    ("No marker here, the answer is 42.", None, "42", "42"),
    ("Nothing numeric at all.", None, None, None),
    ("#### no number after the marker", None, None, None),
    ("The answer is 15. That is 3 more than 12", None, "12", "12"),
    ("Revenue is 3.50 dollars\n####  7", None, "7", "7"),
    ("She pays $18.00 in total.", None, "18.00", "18.00"),
    ("It was -0.5 degrees", None, "-0.5", "-0.5"),
    ("#### 1,000,000", "1000000", "1000000", "1000000"),
]


@pytest.mark.parametrize(("text", "strict", "flexible", "authors"), CASES)
def test_extraction_rules_on_tricky_strings(text, strict, flexible, authors):
    assert extract(text, "strict") == strict
    assert extract(text, "flexible") == flexible
    assert extract(text, "authors") == authors


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("18.0", "18", True),
        ("$1,200.", "1200", True),
        ("-5", "-5.00", True),
        ("18", "18.5", False),
        (None, "1", False),
        ("abc", "abc", False),
    ],
)
def test_numeric_comparison(a, b, equal):
    assert same_number(a, b) is equal


def test_normalisation_keeps_value():
    assert normalize_number(" $1,234.50. ") == "1234.50"
    assert normalize_number("") is None


def test_gold_answer_needs_a_number():
    assert gold_answer("blah\n#### 1,000") == "1000"
    with pytest.raises(ValueError, match="no '#### <number>'"):
        gold_answer("no marker")
    with pytest.raises(ValueError):
        gold_answer("#### twelve")


def test_grade_reports_every_rule():
    g = grade("So 7 + 5 = 12.\nThe answer is 12.", "x\n#### 12")
    assert g.correct and g.gold == "12"
    assert g.matches == {"strict": False, "flexible": True, "authors": True}
    assert not grade("So 7 + 5 = 12.", "#### 12", rule="strict").correct


def test_every_gold_answer_of_both_splits_parses(gsm8k_dir):
    total = 0
    for split, expected in (("train", 7473), ("test", 1319)):
        questions = load_gsm8k(split, gsm8k_dir)
        assert len(questions) == expected
        for q in questions:
            assert q.extra["gold"] is not None
            # The gold number must also be what the strict and authors' rules read from the gold solution.
            assert same_number(extract(q.reference, "strict"), q.extra["gold"])
            assert same_number(extract(q.reference, "authors"), q.extra["gold"])
        total += len(questions)
    assert total == 7473 + 1319


def test_gsm8k_ids_are_stable_and_local_file_loads(write):
    rows = [{"question": "q1", "answer": "a\n#### 3"}, {"question": "q2", "answer": "b\n#### 4"}]
    path = write("test.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    qs = load_gsm8k("test", path)
    assert [q.id for q in qs] == ["gsm8k-test-00000", "gsm8k-test-00001"]
    assert [q.extra["gold"] for q in qs] == ["3", "4"]


def test_bad_gold_answer_names_the_row(write):
    path = write("test.jsonl", json.dumps({"question": "q", "answer": "no number"}) + "\n")
    with pytest.raises(ValueError, match=r"test.jsonl:line 1: field 'answer'"):
        load_gsm8k("test", path)


@pytest.mark.parametrize("case", TRICKY, ids=[c["why"] for c in TRICKY])
def test_rules_on_hand_checked_tricky_responses(case):
    g = grade(case["response"], case["gold"])
    assert g.extracted == case["extracted"]
    assert g.matches == case["correct"]  # values compared: "18.00" is 18
    assert g.lm_eval == case["lm_eval"]  # lm-eval's own scoring: strings compared


def test_tricky_set_separates_every_pair_of_rules():
    assert len(TRICKY) >= 30
    for a, b in combinations(RULES, 2):
        assert any(c["correct"][a] != c["correct"][b] for c in TRICKY), (a, b)


def test_lm_eval_comparison_is_on_strings():
    assert lm_eval_match("1,200.", "x\n#### 1,200")
    assert lm_eval_match("$18", "18")
    assert not lm_eval_match("18.00", "18")
    assert not lm_eval_match("42..", "42")  # lm-eval drops one final period only
    assert not lm_eval_match(None, "18")


def test_every_bad_row_is_reported_at_once_with_its_line(write):
    rows = [
        {"question": "ok", "answer": "1+1=2\n#### 2"},
        {"answer": "#### 3"},
        {"question": 7, "answer": "#### 4"},
        "not an object",
        {"question": "q", "answer": "no number"},
    ]
    path = write("train.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ValueError) as info:
        load_gsm8k("train", path)
    text = str(info.value)
    assert "5 invalid records" not in text  # four problems, on lines 2-5
    for expected in ("line 2: field 'question': missing", "line 3: field 'question': must be a non-empty string",
                     "line 4: expected a JSON object", "line 5: field 'answer'"):  # fmt: skip
        assert expected in text, expected


def test_gold_import_writes_no_bad_rows_and_mathcritique_reports_every_bad_line(tmp_path, write):
    from nlft.data.sources import from_mathcritique, gold_records
    from nlft.records import RecordError

    folder = tmp_path / "gsm"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"answer": "#### 3"}) + "\n")
    with pytest.raises(RecordError, match="field 'question'"):
        list(gold_records(str(folder), "train"))
    good = {"id": "a", "question": "q", "model_answer": "#### 1", "critique": "c", "gold_answer": "#### 2"}
    path = write(
        "mc.jsonl",
        "\n".join(
            [json.dumps(good), "[1, 2]", json.dumps(good), json.dumps({**good, "id": "b", "critique": ""})]
        )
        + "\n",
    )
    with pytest.raises(RecordError) as info:
        list(from_mathcritique(path))
    text = str(info.value)
    assert "line 2: expected a JSON object" in text
    assert "line 3 [id a]: field 'id': duplicate id 'a' (first on line 1)" in text
    assert "line 4: field 'critique'" in text
