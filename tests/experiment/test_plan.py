"""Cells, nested subsets that grow by prefixes and cover distinct questions, and the folder's identity."""

import json

import pytest

from nlft.experiment import ExperimentOptions, nested_subsets, run_experiment
from nlft.records import Record


def test_nested_subsets_keep_the_ratio_and_grow_by_prefixes():
    pool = [Record(id=f"c{i}", question="q", response="r", reference="r", correct=True) for i in range(20)]
    pool += [
        Record(id=f"w{i}", question="q", response="r", reference="r", judgment="j", correct=False)
        for i in range(10)
    ]
    pool += [
        Record(id="u", question="q", response="r", reference="r", correct=False)
    ]  # wrong, unjudged: left out
    subsets = nested_subsets(pool, [6, 12, 24], (2, 1), seed=0)
    for size, records in subsets.items():
        assert len(records) == size and sum(not r.is_correct for r in records) == size // 3
        assert "u" not in {r.id for r in records}
    small, large = ({r.id for r in subsets[n]} for n in (6, 24))
    assert small <= large
    with pytest.raises(ValueError, match="more --pool-questions"):
        nested_subsets(pool, [60], (2, 1), seed=0)


def test_nested_subsets_cover_distinct_questions_before_a_second_answer_to_any():
    # 8 questions answered 3 times each, every answer correct: a set of 8 takes one answer of each question.
    pool = [
        Record(id=f"q{q}-s{k}", question=f"question {q}", response="r", reference="r", correct=True,
               extra={"question_id": f"q{q}"})
        for q in range(8) for k in range(3)
    ]  # fmt: skip
    pool += [
        Record(id=f"w{q}-s{k}", question=f"question {q}", response="r", reference="r", judgment="j",
               correct=False, extra={"question_id": f"q{q}"})
        for q in range(4) for k in range(3)
    ]  # fmt: skip
    subsets = nested_subsets(pool, [12, 18], (2, 1), seed=0)
    small = subsets[12]
    assert sorted(r.extra["question_id"] for r in small if r.is_correct) == [f"q{q}" for q in range(8)]
    assert sorted(r.extra["question_id"] for r in small if not r.is_correct) == [f"q{q}" for q in range(4)]
    assert {r.id for r in small} <= {r.id for r in subsets[18]}


def test_a_folder_of_another_experiment_is_refused(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps({"fixed": {"model": "other", "task": "mini-math"}}))
    with pytest.raises(ValueError, match="other settings.*model 'other'"):
        run_experiment(ExperimentOptions(out=str(out), device="cpu"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no experiment folder"):
        run_experiment(ExperimentOptions(out=str(tmp_path / "mine"), device="cpu"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
