"""The ``Task`` interface (see ``nlft.tasks``)."""

from __future__ import annotations

from typing import ClassVar

from ..records import Question
from .answers import Grade, grade, question_gold


class Task:
    """A question set with gold answers, by split."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def load(self, split: str, limit: int | None = None) -> list[Question]:
        """The questions of ``split`` in a fixed order (ids stable across runs), the first ``limit`` of them."""
        raise NotImplementedError

    def gold(self, question: Question) -> str:
        """The gold answer a response to ``question`` is graded against (``ValueError`` if there is none)."""
        return question_gold(question)

    def grade(self, response: str, question: Question, rule: str = "authors") -> Grade:
        """``response`` graded against ``question``'s gold answer by every rule; ``correct`` follows ``rule``."""
        return grade(response, self.gold(question), rule)

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"task {self.name} has no split '{split}' (it has {', '.join(self.splits)})")
