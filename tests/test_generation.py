import pytest

from nlft.generation import HFBackend, Request, SamplingSettings, cut_at_stop
from nlft.modeling import load_model
from nlft.tiny import save_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def requests():
    return [
        Request(
            "a",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2+3?"},
            ],
        ),
        Request(
            "b",
            messages=[{"role": "user", "content": "A much longer question about apples and pears, please?"}],
        ),
        Request("c", text="Question: 1+1?\nAnswer:"),
    ]


def test_batched_left_padded_greedy_equals_one_by_one(tiny_dir):
    model, tok, _ = load_model(tiny_dir, device="cpu")
    settings = SamplingSettings(max_new_tokens=12)
    batched = {r.key: c.text for r, c in HFBackend(model, tok, settings, batch_size=3).generate(requests())}
    single = {r.key: c.text for r, c in HFBackend(model, tok, settings, batch_size=1).generate(requests())}
    assert batched == single
    assert all(isinstance(t, str) for t in batched.values())


def test_sampling_is_seeded(tiny_dir):
    model, tok, _ = load_model(tiny_dir, device="cpu")

    def run(seed):
        return [
            c.text
            for _, c in HFBackend(
                model, tok, SamplingSettings(max_new_tokens=10, temperature=1.0, seed=seed)
            ).generate(requests())
        ]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_request_needs_exactly_one_prompt_form():
    with pytest.raises(ValueError, match="exactly one"):
        Request("x")
    with pytest.raises(ValueError, match="exactly one"):
        Request("x", messages=[], text="t")


def test_cut_at_stop():
    assert cut_at_stop("A: 5\n\nQuestion: next", ["Question:", "\n\n"]) == "A: 5"
    assert cut_at_stop("no stop", ["Question:"]) == "no stop"
