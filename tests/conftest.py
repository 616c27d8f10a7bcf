"""Shared fixtures. Tests that need ../shared skip with a reason where it is absent (a user's clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NLFT_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"


def need_shared(*parts: str) -> Path:
    """The path under ../shared, or a skip saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"needs {path} (the project's shared data folder beside the repo; absent on this machine)"
        )
    return path


@pytest.fixture(scope="session")
def tokenizer():
    from nlft.tiny import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    return need_shared("data", "gsm8k")


@pytest.fixture(scope="session")
def pool_200(gsm8k_dir):
    """200 real records: MathCritique's 100 wrong answers with critiques + 100 GSM8K train gold solutions."""
    from nlft.sources import from_mathcritique, gsm8k_gold_records

    wrong = list(from_mathcritique(need_shared("data", "mathcritique", "mathcritique_gsm8k_triples.jsonl")))
    used = {r.question for r in wrong}
    correct = list(gsm8k_gold_records("train", gsm8k_dir, exclude=used, limit=100))
    assert len(wrong) == 100 and len(correct) == 100
    return wrong + correct


@pytest.fixture
def write(tmp_path):
    """write(name, text_or_bytes) -> path of a file in tmp_path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return _write


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight Llama saved as a model folder (with the project tokenizer), shared by the session."""
    from nlft.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)
