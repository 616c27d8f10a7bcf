"""The continuous-batching decode loop: the same greedy tokens as ``model.generate`` on each prompt alone, whatever
the rows, refills, shared prefix and buffer shifts; per-request seeds; the fallback for other attention paths."""

import pytest
import torch

from nlft.models import decoding
from nlft.models.generation import MIN_SHARED_PREFIX, HFBackend, Request, SamplingSettings
from nlft.models.tiny import build_tiny_architecture, build_tiny_model, load_tokenizer

SYSTEM = "You are a careful assistant who answers arithmetic questions step by step, then gives the number."


def chat(key: str, question: str) -> Request:
    return Request(
        key, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    )


def questions(n: int) -> list[Request]:
    # Prompts of different lengths: refills bring in shorter ones, and the first admission's width differs.
    return [chat(f"q{i}", f"What is {i} + {i * 7}?" + " Please think." * (i % 4)) for i in range(n)]


def alone(model, backend: HFBackend, request: Request, max_new: int) -> list[int]:
    """The new tokens ``model.generate`` gives one prompt with no padding and no batch: the reference."""
    ids = torch.tensor([backend.prompt_ids(request)])
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
            pad_token_id=backend.pad_id, eos_token_id=backend.eos_ids, temperature=None, top_p=None, top_k=None,
        )  # fmt: skip
    return out[0, ids.shape[1] :].tolist()


def continuous_tokens(model, backend: HFBackend, reqs: list[Request], rows: int, max_new: int):
    encoded = [backend.prompt_ids(r) for r in reqs]
    batcher = decoding.ContinuousBatcher(
        model, rows=rows, max_new_tokens=max_new, eos_ids=backend.eos_ids, pad_id=backend.pad_id,
        choose=lambda logits, _: logits.argmax(-1).tolist(),
    )  # fmt: skip
    order = sorted(range(len(reqs)), key=lambda i: -len(encoded[i]))
    return {reqs[i].key: new for i, new in batcher.run(encoded, order, backend._shared_prefix(encoded))}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_refilled_rows_give_each_prompt_the_tokens_it_gets_alone(attention):
    """2 rows for 9 prompts of 40 new tokens: rows are refilled 7 times and the buffer (prompt + 40 + 64 columns)
    is shifted several times; every prompt's tokens equal ``model.generate`` on it alone."""
    tok = load_tokenizer()
    model = build_tiny_model(seed=1, attn_implementation=attention).eval()
    backend = HFBackend(model, tok, SamplingSettings(max_new_tokens=40))
    reqs = questions(9)
    assert backend._shared_prefix([backend.prompt_ids(r) for r in reqs]) >= MIN_SHARED_PREFIX
    got = continuous_tokens(model, backend, reqs, rows=2, max_new=40)
    want = {r.key: alone(model, backend, r, 40) for r in reqs}
    assert got == want
    assert all(len(t) == 40 for t in got.values())  # random weights ramble: every row runs its 40 steps


def test_the_buffer_shifts_and_ends_as_wide_as_it_started(monkeypatch):
    tok = load_tokenizer()
    model = build_tiny_model(seed=1).eval()
    backend = HFBackend(model, tok, SamplingSettings(max_new_tokens=40))
    writes = []
    update = decoding.SlotCache.update

    def spy(self, k, v, layer_idx, *args, **kwargs):
        if layer_idx == 0 and self.rows == 2 and k.shape[-2] == 1:  # the decode steps' buffer
            writes.append((self.write, self.width))
        return update(self, k, v, layer_idx, *args, **kwargs)

    monkeypatch.setattr(decoding.SlotCache, "update", spy)
    continuous_tokens(model, backend, questions(9), rows=2, max_new=40)
    widths = {w for _, w in writes}
    assert len(widths) == 1  # one buffer for the whole run
    columns = [c for c, _ in writes]
    assert max(columns) == widths.pop() - 1  # the last column was written ...
    assert any(b < a for a, b in zip(columns, columns[1:]))  # ... and then the columns in use moved left


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_other_supported_architectures_match_generate(arch):
    tok = load_tokenizer()
    model = build_tiny_architecture(arch, seed=2).eval()
    assert decoding.supports(model)
    backend = HFBackend(model, tok, SamplingSettings(max_new_tokens=12))
    reqs = questions(5)
    assert continuous_tokens(model, backend, reqs, rows=3, max_new=12) == {
        r.key: alone(model, backend, r, 12) for r in reqs
    }


@pytest.mark.parametrize("arch", ["gpt2", "gemma2"])
def test_other_attention_paths_fall_back_to_generate(arch):
    tok = load_tokenizer()
    model = build_tiny_architecture(arch, seed=2).eval()
    assert not decoding.supports(model)
    backend = HFBackend(model, tok, SamplingSettings(max_new_tokens=8), batch_size=2)
    assert not backend.seeds_each_request
    reqs = questions(3)
    got = {r.key: c.text for r, c in backend.generate(reqs)}
    want = {r.key: tok.decode(alone(model, backend, r, 8), skip_special_tokens=True) for r in reqs}
    assert got == want


def test_a_requests_sample_does_not_depend_on_what_shares_its_batch():
    tok = load_tokenizer()
    model = build_tiny_model(seed=1).eval()
    settings = SamplingSettings(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=4)
    reqs = questions(6)
    together = {r.key: c.text for r, c in HFBackend(model, tok, settings, batch_size=4).generate(reqs)}
    apart = {r.key: c.text for r, c in HFBackend(model, tok, settings, batch_size=1).generate(reqs[::-1])}
    assert together == apart
    other_seed = HFBackend(model, tok, SamplingSettings(max_new_tokens=16, temperature=1.0, seed=5))
    assert {r.key: c.text for r, c in other_seed.generate(reqs)} != together
    assert len(set(together.values())) == len(reqs)  # seeded by key: prompts alike do not sample alike


def test_a_row_stops_at_a_stop_string_and_its_text_is_cut_there():
    tok = load_tokenizer()
    model = build_tiny_model(seed=1).eval()
    free = HFBackend(model, tok, SamplingSettings(max_new_tokens=30))
    reqs = questions(3)
    full = {r.key: c.text for r, c in free.generate(reqs)}
    # A stop string from the middle of the first answer: generation ends there, earlier than 30 tokens.
    text = full["q0"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip()
    steps = []
    stopped = HFBackend(model, tok, SamplingSettings(max_new_tokens=30, stop=(stop,)))
    original = stopped._stopped
    stopped._stopped = lambda new: steps.append(len(new)) or original(new)
    got = {r.key: c for r, c in stopped.generate(reqs[:1])}
    assert got["q0"].text == text[: text.index(stop)] and got["q0"].finish_reason == "stop"
    assert (
        len(full["q0"]) > 20 and max(steps) < 25
    )  # it ended at the stop string, well before the 30-token limit


def test_the_draws_follow_the_softmax_and_top_p_leaves_out_the_tail():
    """The continuous loop's sampler (inverse CDF, one uniform number per request): 4,000 requests' first draws
    from logits whose softmax is (0.5, 0.3, 0.15, 0.05); with top_p 0.8 the last two tokens are never drawn."""
    tok = load_tokenizer()
    model = build_tiny_model(seed=1).eval()
    reqs = [Request(f"r{i}", text="x") for i in range(4000)]
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(len(reqs), 4)
    draws = HFBackend(model, tok, SamplingSettings(temperature=1.0, seed=0))._chooser(reqs)(
        logits, list(range(4000))
    )
    share = torch.bincount(torch.tensor(draws), minlength=4).float() / len(draws)
    assert torch.allclose(share, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    nucleus = HFBackend(model, tok, SamplingSettings(temperature=1.0, top_p=0.8, seed=0))._chooser(reqs)
    kept = torch.bincount(torch.tensor(nucleus(logits, list(range(4000)))), minlength=4).float() / len(draws)
    assert kept[2:].sum() == 0 and torch.allclose(kept[:2], torch.tensor([0.625, 0.375]), atol=0.03)


def test_a_prompt_longer_than_the_context_is_cut_from_the_left_as_training_cuts_it(caplog):
    """Audit N-12: a 54,000-token question was generated from as it was and the garbage graded."""
    from nlft.prompts import fit_left

    tok = load_tokenizer()
    model = build_tiny_model(seed=1).eval()
    model.config.max_position_embeddings = 64
    backend = HFBackend(model, tok, SamplingSettings(max_new_tokens=8))
    long = chat("big", "How many? " + "lorem ipsum dolor " * 40)
    ids = backend.prompt_ids(long)
    assert len(ids) > 64
    with caplog.at_level("WARNING"):
        got = {r.key: c.text for r, c in backend.generate([long, Request("small", text="1+1=")])}
    assert "1 prompt(s) longer than the model's context" in caplog.text and "big" in caplog.text
    cut = fit_left(ids, 64 - 8, tok.bos_token_id)
    assert len(cut) == 56 and cut[0] == ids[0] and cut[1:] == ids[len(ids) - 55 :]
    with torch.inference_mode():
        want = model.generate(
            input_ids=torch.tensor([cut]), attention_mask=torch.ones(1, len(cut), dtype=torch.long), max_new_tokens=8,
            do_sample=False, pad_token_id=backend.pad_id, eos_token_id=backend.eos_ids, temperature=None, top_p=None,
            top_k=None,
        )[0, len(cut) :].tolist()  # fmt: skip
    assert got["big"] == backend._completion(want).text
    with pytest.raises(ValueError, match="ask for fewer new tokens"):
        list(HFBackend(model, tok, SamplingSettings(max_new_tokens=60)).generate([long]))
