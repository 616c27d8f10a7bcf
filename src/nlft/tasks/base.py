"""The ``Task`` interface (see ``nlft.tasks``): questions by split, their gold answers, and grading."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..records import Question


@dataclass(frozen=True)
class Grade:
    """An answer graded against the gold answer by every rule of its task; ``correct`` follows the chosen rule.

    For the numeric tasks (``tasks.answers``):

    ``matches`` compares the extracted number with the gold one as values (``"18.0"`` equals ``"18"``).
    ``lm_eval`` is lm-eval's own scoring of its two filters, an exact string match after its normalisation
    (``"18.0"`` does not equal ``"18"``), so that results can be set beside published lm-eval numbers.
    """

    gold: str
    extracted: dict[str, str | None]
    matches: dict[str, bool]
    rule: str
    lm_eval: dict[str, bool] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.matches[self.rule]

    def to_dict(self) -> dict:
        return {
            "gold": self.gold,
            "extracted": self.extracted,
            "matches": self.matches,
            "lm_eval": self.lm_eval,
            "rule": self.rule,
        }


class Task:
    """A question set with gold answers, by split, and the one way its answers are graded.

    Everything that grades or reads a gold answer — sampling, evaluation, the reward of on-policy methods, the
    importers — goes through a task: ``gold`` and ``grade``. ``rules`` names the ways a response's answer can be
    read (a task with one way has one rule); ``correct`` of a grade follows ``default_rule`` unless told."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    rules: ClassVar[tuple[str, ...]]
    default_rule: ClassVar[str]

    def load(self, split: str, limit: int | None = None) -> list[Question]:
        """The questions of ``split`` in a fixed order (ids stable across runs), the first ``limit`` of them."""
        raise NotImplementedError

    def gold(self, question: Question) -> str:
        """The gold answer a response to ``question`` is graded against (``ValueError``, saying why, if none)."""
        raise NotImplementedError

    def grade(self, response: str, question: Question, rule: str | None = None) -> Grade:
        """``response`` graded against ``question``'s gold answer by every rule; ``correct`` follows ``rule``."""
        raise NotImplementedError

    def check_rule(self, rule: str) -> None:
        if rule not in self.rules:
            raise ValueError(f"unknown extraction rule '{rule}' (choose from {', '.join(self.rules)})")

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"task {self.name} has no split '{split}' (it has {', '.join(self.splits)})")
