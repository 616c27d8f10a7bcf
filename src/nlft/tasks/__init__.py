"""Tasks: where questions with gold answers come from, and how a response to one is graded.

A ``Task`` loads its questions by split, says what the gold answer of a question is and grades a response. Two
ship: ``gsm8k`` (the hub dataset, or a local folder of ``<split>.jsonl`` files) and ``mini-math`` (the project's
own synthetic world of grade-school word problems, ``tasks/mini_math.py``). ``nlft sample``, ``nlft eval``,
``nlft data make`` and ``nlft data import gold`` accept a task by name; a third task is one new module here with a
``Task`` subclass, registered in ``TASKS``.

Both tasks grade the GSM8K way (``#### N``, by the rules of ``nlft.tasks.answers``); a task with another answer format
overrides ``gold`` and ``grade``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Task

# The first 50 GSM8K test questions, shipped in the package (not the training records ``records.SAMPLE_RECORDS``).
SAMPLE_QUESTIONS_SPEC = "nlft:sample"

__all__ = ["Task", "get_task", "task_names"]


def _registry() -> dict[str, type[Task]]:
    from .gsm8k import GSM8KTask
    from .mini_math import MiniMathTask

    return {cls.name: cls for cls in (GSM8KTask, MiniMathTask)}


def task_names() -> tuple[str, ...]:
    return tuple(_registry())


def get_task(spec: str | os.PathLike, *, gsm8k_dir: str | os.PathLike | None = None) -> Task | None:
    """The task ``spec`` names — a registered name (``gsm8k``, ``mini-math``), ``nlft:sample`` (the 50 GSM8K test
    questions shipped in the package) or a folder of GSM8K-style ``<split>.jsonl`` files — or None when it names
    none of these (a question file or a Hugging Face dataset)."""
    from .gsm8k import GSM8KTask

    registry = _registry()
    text = str(spec)
    if text == SAMPLE_QUESTIONS_SPEC:
        from .gsm8k import SAMPLE_GSM8K_TEST

        return GSM8KTask(SAMPLE_GSM8K_TEST)
    if text == GSM8KTask.name:
        return GSM8KTask(gsm8k_dir)
    if text in registry:
        return registry[text]()
    path = Path(text)
    if path.is_dir() and any((path / f"{s}.jsonl").is_file() for s in GSM8KTask.splits):
        return GSM8KTask(path)
    return None
