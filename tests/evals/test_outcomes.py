"""Per-question outcomes of an evaluation: read from items.jsonl, judged, and written compactly without loss."""

import json

import pytest

from nlft.evals.outcomes import Outcomes, from_items, read_outcomes

REFERENCE = "She has 3+4=<<3+4=7>>7 apples.\nShe eats 2: 7-2=<<7-2=5>>5.\n#### 5"


def item(qid, response, correct, strict, finish="stop"):
    return {
        "id": qid, "question": "Ann has 3 apples and gets 4. She eats 2. How many are left?", "gold": "5",
        "response": response, "finish_reason": finish,
        "extracted": {"strict": strict, "flexible": strict, "authors": strict},
        "correct": {"strict": correct and strict is not None, "flexible": correct, "authors": correct},
    }  # fmt: skip


def test_outcomes_tell_format_length_and_the_judges_verdict():
    items = [
        item("q2", "3+4=8 apples, then 8-2=6.\n#### 6", False, "6"),  # a wrong sum
        item("q1", "3+4=7, then 7-2=5.\n#### 5", True, "5"),
        item("q3", "She has seven apples", False, None, finish="length"),  # no number at all
    ]
    refs = {q: REFERENCE for q in ("q1", "q2", "q3")}
    o = from_items(items, refs)
    assert o.ids == ["q1", "q2", "q3"]  # question order, not the file's
    assert o.correct["authors"] == [True, False, False]
    assert o.formatted == [True, True, False]
    assert o.truncated == [False, False, True]
    assert o.verdict == ["correct", "arithmetic", "no-answer"]
    assert o.chars == [len("3+4=7, then 7-2=5.\n#### 5"), len("3+4=8 apples, then 8-2=6.\n#### 6"), 20]
    assert o.share("authors") == pytest.approx(1 / 3)
    assert o.share("arithmetic") == pytest.approx(1 / 3)
    assert o.share("formatted") == pytest.approx(2 / 3)
    encoded = o.encode()
    assert encoded["authors"] == "100" and encoded["verdict"] == "can"
    assert Outcomes.decode(json.loads(json.dumps(encoded))) == o


def test_a_question_without_a_reference_or_answered_twice_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no reference"):
        from_items([item("q1", "#### 5", True, "5")], {})
    with pytest.raises(ValueError, match="more than once"):
        from_items([item("q1", "#### 5", True, "5")] * 2, {"q1": REFERENCE})
    (tmp_path / "summary.json").write_text(json.dumps({"complete": False}))
    with pytest.raises(ValueError, match="not complete"):
        read_outcomes(tmp_path, {"q1": REFERENCE})
