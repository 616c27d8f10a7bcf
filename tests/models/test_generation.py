import pytest

from nlft.models.generation import HFBackend, Request, SamplingSettings, cut_at_stop
from nlft.models.loading import load_model
from nlft.models.tiny import save_tiny_model


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


@pytest.mark.slow
def test_a_shared_prompt_prefix_computed_once_gives_the_same_greedy_answers_as_plain_batches():
    """nlft:mini on mini-math under the paper protocol: every prompt starts with the same system prompt, computed
    once per batch and its cache handed to every row; the answers equal plain left-padded batches' token for token
    (here the longest-first order is off on one side too, so batches differ in make-up as well)."""
    from nlft.evals.protocols import PaperProtocol
    from nlft.tasks import get_task

    model, tok, _ = load_model("nlft:mini", device="cpu", dtype="float32")
    prompted = PaperProtocol("math").build(get_task("mini-math").load("test", limit=12))
    reqs = [p.request for p in prompted]
    settings = SamplingSettings(max_new_tokens=60)
    fast = HFBackend(model, tok, settings, batch_size=6)
    plain = HFBackend(model, tok, settings, batch_size=6, sort=False, share_prefix=False, continuous=False)
    shared = fast._shared_prefix([fast.prompt_ids(r) for r in reqs])
    assert shared >= 16 and plain._shared_prefix([plain.prompt_ids(r) for r in reqs]) == 0
    got = {r.key: (c.text, c.finish_reason) for r, c in fast.generate(reqs)}
    want = {r.key: (c.text, c.finish_reason) for r, c in plain.generate(reqs)}
    assert got == want and any(text for text, _ in got.values())
    sampled = HFBackend(
        model, tok, SamplingSettings(max_new_tokens=20, temperature=1.0, seed=3), batch_size=6
    )
    assert [c.text for _, c in sampled.generate(reqs)] == [c.text for _, c in sampled.generate(reqs)]


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


# --------------------------------------------------------------------------------------------------------------
# OpenAIBackend against a local chat-completions server with scripted faults
# --------------------------------------------------------------------------------------------------------------

SECRET = "sk-test-0123456789abcdefSECRET"
TRANSIENT = ["429", "500", "slow", "bad-json", "no-choices", "null-content", "html"]
STREAM_TRANSIENT = ["429", "500", "slow", "stream-cut", "stream-garbage", "stream-error", "stream-stall"]


def _scripted(text: str, attempt: int) -> str:
    """'fault:NAME:N' in a prompt: the first N attempts fail with NAME, later ones succeed."""
    import re

    m = re.search(r"fault:([\w-]+):(\d+)", text)
    if m and attempt <= int(m.group(2)):
        return m.group(1)
    return "ok"


def _backend(server, monkeypatch, **kwargs):
    from nlft.models.generation import OpenAIBackend

    monkeypatch.setenv("NLFT_TEST_KEY", SECRET)
    options = dict(
        base_url=server.url, api_key_env="NLFT_TEST_KEY", timeout=0.5, max_retries=2, concurrency=4
    )
    options.update(kwargs)
    return OpenAIBackend("served-model", **options)


def _chat(key: str, text: str) -> Request:
    return Request(key, messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": text}])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_openai_backend_retries_every_transient_fault_and_answers_each_request_once(monkeypatch, stream):
    from ..fake_openai import FakeOpenAI

    faults = STREAM_TRANSIENT if stream else TRANSIENT
    with FakeOpenAI(
        lambda text: f"answer to {text.split()[0]}", _scripted, api_key=SECRET, slow_s=1.0
    ) as server:
        backend = _backend(server, monkeypatch, stream=stream)
        requests = [_chat(f"r{i}", f"q{i} fault:{fault}:1") for i, fault in enumerate(faults)]
        requests.append(_chat("clean", "qclean and no fault"))
        results = list(backend.generate(requests))
    assert sorted(r.key for r, _ in results) == sorted(r.key for r in requests)  # each once, none lost
    for request, completion in results:
        assert completion.ok, (request.key, completion.error)
        assert completion.text == f"answer to {request.messages[1]['content'].split()[0]}"
        assert completion.finish_reason == "stop"
    for fault in faults:
        assert server.served(fault) == 1  # the fault happened, and the request was then served
    assert all(body.get("stream", False) == stream for body in server.bodies)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_openai_backend_records_a_final_failure_per_request_without_raising(monkeypatch, stream):
    from ..fake_openai import FakeOpenAI

    faults = ["429", "500", "slow", "stream-cut" if stream else "bad-json", "echo-key"]
    with FakeOpenAI(lambda text: "fine", _scripted, api_key=SECRET, slow_s=1.0) as server:
        backend = _backend(server, monkeypatch, stream=stream, max_retries=1)
        requests = [_chat(f"bad-{f}", f"q fault:{f}:99") for f in faults] + [_chat("good", "q fine")]
        results = {r.key: c for r, c in backend.generate(requests)}
    assert set(results) == {r.key for r in requests}
    assert results["good"].ok and results["good"].text == "fine"
    for fault in faults:
        completion = results[f"bad-{fault}"]
        assert not completion.ok and completion.text is None and completion.error
    assert results["bad-429"].error.startswith("HTTP 429")
    assert results["bad-500"].error.startswith("HTTP 500")
    assert "timed out" in results["bad-slow"].error.lower()
    assert results["bad-echo-key"].error.startswith("HTTP 400")
    assert SECRET not in results["bad-echo-key"].error and "<redacted>" in results["bad-echo-key"].error


def test_openai_backend_never_logs_the_api_key(monkeypatch, caplog):
    import logging

    from ..fake_openai import FakeOpenAI

    monkeypatch.setenv("OPENAI_LOG", "debug")
    caplog.set_level(logging.DEBUG)
    with FakeOpenAI(lambda text: "fine", _scripted, api_key=SECRET) as server:
        backend = _backend(server, monkeypatch)
        results = list(backend.generate([_chat("a", "q fault:500:1"), _chat("b", "q fault:echo-key:9")]))
    assert len(results) == 2
    assert caplog.records  # the client and httpx did log at debug level
    assert SECRET not in caplog.text
    assert SECRET not in "".join(c.error or "" for _, c in results)


def test_openai_backend_seeds_each_request_so_samples_of_one_prompt_differ(monkeypatch):
    from ..fake_openai import FakeOpenAI

    with FakeOpenAI(lambda text: "x") as server:
        backend = _backend(
            server, monkeypatch, settings=SamplingSettings(temperature=0.7, seed=3), concurrency=1
        )
        list(backend.generate([_chat("q-s0", "same"), _chat("q-s1", "same"), _chat("q-s0", "same")]))
    seeds = [body["seed"] for body in server.bodies]
    assert seeds[0] == seeds[2] != seeds[1]  # per request key: stable on a rerun, different across samples
    assert all(body["temperature"] == 0.7 for body in server.bodies)


# -- a misbehaving server cannot hang a request (issue: hangs) ----------------------------------------------


@pytest.mark.slow  # seconds of real timeouts and retries
@pytest.mark.parametrize(("fault", "stream"), [("drip", False), ("sse-drip", True)])
def test_timeout_bounds_the_whole_request_even_when_the_server_keeps_dripping(monkeypatch, fault, stream):
    import time

    from ..fake_openai import FakeOpenAI

    with FakeOpenAI(lambda text: "fine", _scripted, api_key=SECRET) as server:
        backend = _backend(server, monkeypatch, stream=stream, timeout=1.5, max_retries=1)
        started = time.monotonic()
        [(request, completion)] = list(backend.generate([_chat("a", f"q fault:{fault}:99")]))
        took = time.monotonic() - started
    assert not completion.ok and "timed out" in completion.error
    assert completion.attempts == 2  # the first attempt and one retry, each cut off at 1.5 s
    assert took < 2 * 1.5 + 2.5, took  # two deadlines and one backoff, not the server's two minutes


def test_attempts_count_every_retry_and_final_http_errors_keep_the_servers_reason(monkeypatch):
    from ..fake_openai import FakeOpenAI

    with FakeOpenAI(lambda text: "fine", _scripted, api_key=SECRET) as server:
        backend = _backend(server, monkeypatch, max_retries=3)
        results = {
            r.key: c
            for r, c in backend.generate([_chat("r", "q fault:500:2"), _chat("p", "q fault:pinned:9")])
        }
    assert results["r"].ok and results["r"].attempts == 3  # two 500s retried, the third answered
    pinned = results["p"]
    assert not pinned.ok and pinned.attempts == 1  # a 400 is final: not retried
    assert pinned.error.startswith("HTTP 400") and "Server is pinned to model X" in pinned.error


def test_settings_that_cannot_be_sent_are_refused_before_any_request():
    with pytest.raises(ValueError, match="temperature"):
        SamplingSettings(temperature=float("nan"))
    with pytest.raises(ValueError, match="top-p"):
        SamplingSettings(top_p=5.0)
    with pytest.raises(ValueError, match="max-new-tokens"):
        SamplingSettings(max_new_tokens=0)
    from nlft.models.generation import BackendOptions

    for bad in ({"timeout": -1.0}, {"concurrency": -5}, {"max_retries": -1}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad)).replace("_", "-")):
            BackendOptions(**bad)


@pytest.mark.parametrize("key", ["k", "abc1234"])
def test_a_short_key_echoed_back_is_redacted_too(monkeypatch, key):
    from nlft.models.generation import OpenAIBackend

    from ..fake_openai import FakeOpenAI

    monkeypatch.setenv("NLFT_SHORT_KEY", key)
    with FakeOpenAI(lambda text: "fine", _scripted, api_key=key) as server:
        backend = OpenAIBackend(
            "m", base_url=server.url, api_key_env="NLFT_SHORT_KEY", timeout=5, max_retries=0
        )
        [(_, completion)] = list(backend.generate([_chat("a", "q fault:echo-key:9")]))
    assert "<redacted>" in completion.error and f"Bearer {key}" not in completion.error
