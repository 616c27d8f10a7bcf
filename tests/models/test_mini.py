"""``nlft:mini``: the shipped model matches its script, loads wherever a model is accepted, and has the
properties NLFT needs (the cheap ones pinned here; `nlft check nlft:mini` measures them all)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys

import pytest
import torch

from nlft.models.loading import load_model
from nlft.models.mini import MINI_DIR, MINI_MODEL, PRETRAIN_LOG
from nlft.tasks import get_task

from ..conftest import REPO


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("pretrain_mini", REPO / "scripts" / "pretrain_mini.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pretrain_mini"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("pretrain_mini", None)


@pytest.fixture(scope="module")
def rebuilt(script):
    return script.build_tokenizer(script.Settings())


@pytest.fixture(scope="module")
def mini():
    model, tokenizer, _ = load_model(MINI_MODEL, dtype="float32", device="cpu")
    return model.eval(), tokenizer


@pytest.mark.slow
def test_the_script_rebuilds_the_shipped_tokenizer(rebuilt, tmp_path):
    rebuilt.save_pretrained(tmp_path)
    shipped = json.loads((MINI_DIR / "tokenizer.json").read_text())
    again = json.loads((tmp_path / "tokenizer.json").read_text())
    assert again["model"]["vocab"] == shipped["model"]["vocab"]
    assert again["model"]["merges"] == shipped["model"]["merges"]
    assert again["added_tokens"] == shipped["added_tokens"]
    assert (tmp_path / "chat_template.jinja").read_text() == (MINI_DIR / "chat_template.jinja").read_text()


def test_digits_are_single_tokens(mini):
    _, tokenizer = mini
    ids = tokenizer("She had 12345 apples and 7 more.", add_special_tokens=False).input_ids
    pieces = [tokenizer.decode([i]) for i in ids]
    assert all(sum(c.isdigit() for c in p) <= 1 for p in pieces)
    assert tokenizer.decode(ids) == "She had 12345 apples and 7 more."


def test_the_shipped_config_is_the_scripts(script, rebuilt):
    shipped = json.loads((MINI_DIR / "config.json").read_text())
    expected = script.model_config(rebuilt, script.Settings()).to_dict()
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "tie_word_embeddings",
        "model_type",
    ):
        assert shipped[key] == expected[key], key
    log = json.loads((MINI_DIR / PRETRAIN_LOG).read_text())
    assert log["settings"] == json.loads(json.dumps(dataclasses.asdict(script.Settings())))


@pytest.mark.slow
def test_the_first_pretraining_steps_are_rebuilt_exactly(script, rebuilt):
    """Deterministic pretraining: the script's first steps reproduce the shipped log's losses."""
    settings = script.Settings()
    threads = torch.get_num_threads()
    try:
        _, rows = script.train(settings, rebuilt, steps=2, evaluate=False, log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    shipped = json.loads((MINI_DIR / PRETRAIN_LOG).read_text())["log"]
    for row, logged in zip(rows, shipped[:2]):
        assert row["step"] == logged["step"] and row["kind"] == logged["kind"]
        assert row["loss"] == pytest.approx(logged["loss"], abs=1e-3)


@pytest.mark.slow
def test_mini_solves_some_problems_and_reads_the_standard_answer(mini):
    """The cheap properties: some test problems solved and some not (room for NLFT), and the standard answer
    in the prompt (X_std) makes the gold solution likelier than the question alone (X_base): the summed log
    probability of its tokens rises, on the median problem and on average."""
    from nlft.evals.protocols import PaperProtocol
    from nlft.models.generation import HFBackend, SamplingSettings
    from nlft.prompts import RecordEncoder
    from nlft.records import Record

    model, tokenizer = mini
    task = get_task("mini-math")
    questions = task.load("test", limit=40)
    prompted = PaperProtocol("math").build(questions)
    backend = HFBackend(model, tokenizer, SamplingSettings(max_new_tokens=200), batch_size=40)
    texts = {r.key: c.text or "" for r, c in backend.generate([p.request for p in prompted])}
    right = sum(task.grade(texts[p.request.key], q).correct for p, q in zip(prompted, questions))
    assert 4 <= right <= 32, right  # between 10% and 80% of 40

    encoder = RecordEncoder(tokenizer, "math")
    gains = []
    for q in questions:
        rec = encoder.encode(
            Record(id=q.id, question=q.question, response=q.reference, reference=q.reference, correct=True)
        )
        logp = {}
        for kind in ("base", "std"):
            ids = torch.tensor([rec.prompt_ids[kind] + rec.response_ids])
            with torch.no_grad():
                logits = model(ids).logits[0, :-1].log_softmax(-1)
            start = len(rec.prompt_ids[kind])
            targets = ids[0, start:]
            logp[kind] = logits[start - 1 :].gather(1, targets[:, None]).sum().item()
        gains.append(logp["std"] - logp["base"])
    # Teacher-forced, the gold solution is already likely under X_base (its steps follow from the ones before);
    # the standard answer in the prompt still makes it likelier, by a margin, on more problems than not.
    assert sorted(gains)[len(gains) // 2] > 0.1, gains
    assert sum(gains) / len(gains) > 0.1, gains
