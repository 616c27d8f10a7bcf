"""GSM8K (Cobbe et al., 2021; MIT): the hub dataset ``openai/gsm8k``, or a local folder of ``<split>.jsonl``."""

from __future__ import annotations

import os
from pathlib import Path

from ..gsm8k import HUB_ID, load_gsm8k
from ..records import Question
from .base import Task


class GSM8KTask(Task):
    name = "gsm8k"
    description = "GSM8K grade-school math word problems (the hub dataset openai/gsm8k, or a local folder)"

    def __init__(self, source: str | os.PathLike | None = None):
        self.source = Path(source) if source is not None else None

    def load(self, split: str, limit: int | None = None) -> list[Question]:
        if self.source is None:
            try:
                return load_gsm8k(split, None, limit=limit)
            except ConnectionError as exc:
                raise FileNotFoundError(
                    f"gsm8k: could not fetch {HUB_ID} ({exc}); pass a local folder holding {split}.jsonl"
                ) from None
        return load_gsm8k(split, self.source, limit=limit)

    def check_split(self, split: str) -> None:
        if self.source is not None and self.source.is_file():
            if split != "test":
                raise ValueError(f"{self.source}: holds GSM8K test questions only (split 'test'), not '{split}'")
        elif self.source is not None and not (self.source / f"{split}.jsonl").is_file():
            raise FileNotFoundError(f"{self.source}: no {split}.jsonl (GSM8K split '{split}')")
