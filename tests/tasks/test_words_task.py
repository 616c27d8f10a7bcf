"""A task whose answers are words, not numbers, runs through the whole pipeline: the Task is the only grader.

``colours`` asks what colour a thing is; an answer is right when its last word is the gold colour. It goes through
``nlft sample`` (graded as it arrives), a judge-free ``nlft data build`` (the correct answers only), ``nlft eval``
(accuracy by the task's own rule) and the correctness reward of the on-policy methods.
"""

from __future__ import annotations

import json

import pytest

from nlft import tasks
from nlft.cli import main
from nlft.records import Question
from nlft.tasks import Grade, Task

THINGS = {
    "the sky": "blue", "grass": "green", "snow": "white", "coal": "black", "a banana": "yellow",
    "a tomato": "red", "an orange": "orange", "a plum": "purple",
}  # fmt: skip
KEY = "sk-words-test-0000000000"


class ColourTask(Task):
    name = "colours"
    description = "what colour is a thing? (a test task whose answers are words)"
    rules = ("last-word",)
    default_rule = "last-word"

    def load(self, split: str, limit: int | None = None) -> list[Question]:
        self.check_split(split)
        items = list(THINGS.items())[: 4 if split == "train" else None]
        qs = [Question(f"colour-{split}-{i}", f"What colour is {t}?", c) for i, (t, c) in enumerate(items)]
        return qs[:limit] if limit else qs

    def gold(self, question: Question) -> str:
        if not question.reference or not question.reference.strip().isalpha():
            raise ValueError("no colour to grade against")
        return question.reference.strip().lower()

    def grade(self, response: str, question: Question, rule: str | None = None) -> Grade:
        words = response.lower().replace(".", " ").split()
        said = words[-1] if words else None
        right = said == self.gold(question)
        return Grade(
            self.gold(question), {"last-word": said}, {"last-word": right}, rule or self.default_rule
        )


def reply(text: str) -> str:
    """Right about the first half of the things, wrong (always 'grey') about the rest."""
    thing = text.removeprefix("What colour is ").removesuffix("?")
    index = list(THINGS).index(thing)
    return f"It is {THINGS[thing]}." if index % 2 == 0 else "It is grey."


def run(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out + out.err


@pytest.fixture
def colours(monkeypatch):
    monkeypatch.setitem(tasks._REGISTERED, ColourTask.name, ColourTask)
    monkeypatch.setenv("NLFT_WORDS_KEY", KEY)
    return ColourTask()


def test_a_task_with_word_answers_samples_builds_evaluates_and_rewards(tmp_path, colours, capsys):
    from ..fake_openai import FakeOpenAI

    assert "colours" in tasks.task_names() and isinstance(tasks.grader_for("colours"), ColourTask)
    served = ["--backend", "openai", "--api-key-env", "NLFT_WORDS_KEY"]
    with FakeOpenAI(reply, api_key=KEY) as server:
        # sample: graded by the task as the answers arrive
        samples = tmp_path / "samples.jsonl"
        code, text = run(
            ["sample", "colours", "--split", "train", "--model", "m", *served, "--base-url", server.url, "--out", str(samples),
             "--no-progress"], capsys)  # fmt: skip
        assert code == 0, text
        rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["id"])
        assert [r["correct"] for r in rows] == [True, False, True, False]
        assert rows[0]["grade"]["extracted"] == {"last-word": "blue"} and rows[0]["grade"]["gold"] == "blue"

        # a judge-free build: the correct answers only
        code, text = run(["data", "build", str(samples), "--size", "2", "--ratio", "correct",
                          "--out", str(tmp_path / "data")], capsys)  # fmt: skip
        assert code == 0, text
        built = [json.loads(line) for line in (tmp_path / "data" / "nlft.jsonl").read_text().splitlines()]
        assert sorted(r["response"] for r in built) == ["It is blue.", "It is white."]

        # eval: accuracy by the task's own rule
        out = tmp_path / "eval"
        code, text = run(["eval", "m", *served, "--base-url", server.url, "--data", "colours:test",
                          "--out", str(out), "--quiet"], capsys)  # fmt: skip
        assert code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"] == {"last-word": 0.5} and summary["correct"] == {"last-word": 4}
    assert "lm_eval_exact_match" not in summary  # GSM8K's lm-eval scores belong to the numeric tasks

    # the correctness reward of grpo/sdpo grades by the same task
    from nlft.train.methods import CorrectnessReward

    reward = CorrectnessReward(colours)
    assert reward(["q"] * 3, ["It is blue.", "grey", "Blue"], reference=["blue"] * 3) == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="unknown extraction rule 'authors'"):
        CorrectnessReward(colours, "authors")


def test_a_numeric_task_still_grades_by_the_gsm8k_rules():
    task = tasks.get_task("mini-math")
    q = task.load("test", limit=1)[0]
    g = task.grade(f"so the answer is\n#### {task.gold(q)}", q)
    assert g.correct and set(g.matches) == {"strict", "flexible", "authors"} and g.lm_eval["strict"]
    assert not task.grade("#### -1", q, "strict").correct
