"""Tasks: where questions with gold answers come from, and how a response to one is graded.

A ``Task`` (``tasks/base.py``) loads its questions by split, says what the gold answer of a question is and grades a
response; it is the only way nlft grades (sampling, evaluation, the reward of on-policy methods, the importers).
Two ship: ``gsm8k`` (the hub dataset, or a local folder of ``<split>.jsonl`` files) and ``mini-math`` (the project's
own synthetic world of grade-school word problems, ``tasks/mini_math.py``); both grade numbers the GSM8K way
(``tasks/answers.py``). ``nlft sample``, ``nlft eval``, ``nlft data make`` and ``nlft data import gold`` accept a task
by name. A third task is one new module in this package with a ``Task`` subclass that sets ``name``: it is found
there; a task defined elsewhere is added with ``register_task``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Grade, Task

# The first 50 GSM8K test questions, shipped in the package (not the training records ``records.SAMPLE_RECORDS``).
SAMPLE_QUESTIONS_SPEC = "nlft:sample"

__all__ = ["Grade", "Task", "get_task", "grader_for", "register_task", "task_names"]

_REGISTERED: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Make ``cls`` (a ``Task`` subclass with a ``name``) known by its name; usable as a class decorator."""
    _REGISTERED[cls.name] = cls
    return cls


def _registry() -> dict[str, type[Task]]:
    """Every task: the ``Task`` subclasses of this package's modules that name themselves (found, not listed),
    then those registered from elsewhere."""
    import importlib
    import pkgutil

    from .answers import NumericTask

    found: dict[str, type[Task]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Task)
                and value.__module__ == module.__name__
                and value not in (Task, NumericTask)
                and "name" in vars(value)
            ):
                found[value.name] = value
    return {**found, **_REGISTERED}


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


def grader_for(spec: str | os.PathLike, *, gsm8k_dir: str | os.PathLike | None = None) -> Task:
    """The task that grades the questions of ``spec``: the task it names, else (a question file or a dataset, which
    name none) numeric answers graded the GSM8K way."""
    task = get_task(spec, gsm8k_dir=gsm8k_dir)
    if task is not None:
        return task
    from .answers import NumericTask

    return NumericTask()
