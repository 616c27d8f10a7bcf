"""Text generation back-ends shared by sampling (``nlft sample``), judging and evaluation (``nlft eval``).

* ``HFBackend``: a transformers model, batched with left padding, greedy or sampled with a seed.
* ``OpenAIBackend``: any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, ...) through the official
  ``openai`` client, with bounded concurrency. The client already retries 408/409/429/5xx, timeouts and
  connection errors with exponential backoff and jitter; replies that arrive but are malformed (no choices, no
  text) are retried here the same way. A request that still fails is returned as a failure, not raised, so a
  long job records it and goes on. The API key is read from the environment and never logged or stored.

A ``Request`` carries either chat ``messages`` or a raw ``text`` prompt (few-shot completion protocols).
Both back-ends yield ``(request, Completion)`` pairs as they finish, so callers can write each one at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from ..options import NON_NEGATIVE, POSITIVE, SECONDS, json_object, opt
from .loading import DTYPES

logger = logging.getLogger(__name__)


@dataclass
class SamplingSettings:
    """How to decode. ``temperature == 0`` is greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_new_tokens, bool)
            or not isinstance(self.max_new_tokens, int)
            or self.max_new_tokens < 1
        ):
            raise ValueError(
                f"--max-new-tokens must be a whole number of at least 1, got {self.max_new_tokens!r}"
            )
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"--temperature must be a finite number >= 0, got {self.temperature}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class Request:
    key: str
    messages: list[dict[str, str]] | None = None  # chat: [{"role": ..., "content": ...}]
    text: str | None = None  # raw prompt for completion-style protocols

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise ValueError(f"request {self.key}: give exactly one of messages or text")


@dataclass
class Completion:
    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text up to the first stop string (as lm-eval does)."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if s and i != -1:
            cut = min(cut, i)
    return text[:cut]


def _stable_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


# A shared prompt prefix shorter than this is computed with the rest: a cache of its own would not pay.
MIN_SHARED_PREFIX = 16


class HFBackend:
    """Batched generation with a transformers causal LM (and optional PEFT adapter)."""

    def __init__(
        self,
        model,
        tokenizer,
        settings: SamplingSettings | None = None,
        *,
        batch_size: int = 32,
        renderer=None,
        sort: bool = True,
        share_prefix: bool = True,
        continuous: bool = True,
    ):
        from ..prompts import PromptRenderer

        self.continuous = continuous
        self.sort = sort
        self.share_prefix = share_prefix
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings or SamplingSettings()
        self.batch_size = batch_size
        self.renderer = renderer or PromptRenderer(tokenizer)
        eos = {self.renderer.eos_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            eos.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = sorted(eos)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]

    @property
    def seeds_each_request(self) -> bool:
        """Whether a sampled request's text depends only on its key and seed (the continuous loop), not on the
        batch it shares (``model.generate``: one seed per batch)."""
        from . import decoding

        return self.continuous and decoding.supports(self.model)

    def prompt_ids(self, request: Request) -> list[int]:
        if request.messages is not None:
            system = next((m["content"] for m in request.messages if m["role"] == "system"), "")
            user = "\n\n".join(m["content"] for m in request.messages if m["role"] == "user")
            return self.renderer.prompt_ids(system, user)
        return self.tokenizer(request.text, add_special_tokens=True).input_ids

    def generate(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Completion]]:
        """Completions of ``requests``, in the order they finish (each with its request).

        Prompts are taken longest first, so that little of a batch is padding, and the prompt prefix they all share
        (the chat template's system prompt, the same for every question) is computed once. Models on the standard
        cache path run on ``decoding.ContinuousBatcher``: ``batch_size`` rows in flight, a row refilled with the
        next prompt as soon as its answer ends. Others run ``model.generate`` batch by batch, each batch's shared
        prefix computed once and its cache handed to every row."""
        from . import decoding

        requests = list(requests)
        encoded = self._fit([self.prompt_ids(r) for r in requests], requests)
        order = (
            sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
            if self.sort
            else range(len(requests))
        )
        order = list(order)
        if self.seeds_each_request:
            batcher = decoding.ContinuousBatcher(
                self.model,
                rows=self.batch_size,
                max_new_tokens=self.settings.max_new_tokens,
                eos_ids=self.eos_ids,
                pad_id=self.pad_id,
                choose=self._chooser(requests),
                stopped=self._stopped if self.settings.stop else None,
            )
            for i, new in batcher.run(encoded, order, self._shared_prefix(encoded)):
                yield requests[i], self._completion(new)
            return
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            batch = [requests[i] for i in chosen]
            for request, new in zip(batch, self._generate_batch(batch, [encoded[i] for i in chosen])):
                yield request, self._completion(new)

    def context(self) -> int | None:
        """The longest sequence the model takes (its position embeddings), if its config says."""
        config = getattr(self.model, "config", None)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        value = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    def _fit(self, encoded: list[list[int]], requests: list[Request]) -> list[list[int]]:
        """Prompts longer than the model's context (less the new tokens) cut from the left as training cuts them
        (``prompts.fit_left``), and said so; one that leaves no room at all is refused."""
        from ..prompts import fit_left

        context = self.context()
        if context is None:
            return encoded
        budget = context - self.settings.max_new_tokens
        long = [r.key for r, ids in zip(requests, encoded) if len(ids) > budget]
        if not long:
            return encoded
        if budget < 16:
            raise ValueError(
                f"--max-new-tokens {self.settings.max_new_tokens} leaves {max(budget, 0)} of the model's {context} "
                "positions for the prompt; ask for fewer new tokens"
            )
        logger.warning(
            "%d prompt(s) longer than the model's context (%d positions, %d of them for new tokens) were cut from "
            "the left, as training cuts them: %s",
            len(long), context, self.settings.max_new_tokens, ", ".join(long[:5]) + (" ..." if len(long) > 5 else ""),
        )  # fmt: skip
        bos = self.tokenizer.bos_token_id
        return [fit_left(ids, budget, bos) for ids in encoded]

    def _chooser(self, requests: list[Request]):
        """The next-token rule of the continuous loop: argmax, or a draw from each request's own generator
        (seeded by its key: a request samples the same text whatever else is in flight), after temperature and
        top-p as ``model.generate`` applies them."""
        import torch

        s = self.settings
        if s.greedy:
            return lambda logits, _: logits.argmax(-1).tolist()
        generators: dict[int, torch.Generator] = {}

        def choose(logits, indices):
            logits = logits / s.temperature
            if s.top_p < 1:
                ordered, positions = torch.sort(logits, descending=False, dim=-1)
                cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
                drop = cumulative <= 1 - s.top_p
                drop[..., -1:] = False  # the most likely token always stays
                logits = logits.masked_fill(drop.scatter(1, positions, drop), float("-inf"))
            # Inverse-CDF draws: one uniform number from each request's generator (a multinomial per row costs
            # more than the forward pass), the first token whose cumulative probability exceeds it.
            cumulative = logits.softmax(dim=-1).cumsum(dim=-1)
            for i in indices:
                if i not in generators:
                    generators[i] = torch.Generator().manual_seed(_stable_seed(s.seed, requests[i].key))
            uniform = torch.stack([torch.rand((), generator=generators[i]) for i in indices])
            drawn = torch.searchsorted(cumulative, (uniform * cumulative[:, -1]).unsqueeze(1), right=True)
            return drawn.clamp_(max=cumulative.shape[-1] - 1).squeeze(1).tolist()

        return choose

    def _stopped(self, new: list[int]) -> bool:
        """Whether the end of a row's new tokens holds a stop string (the text is cut there afterwards)."""
        tail = self.tokenizer.decode(new[-16:], skip_special_tokens=True)
        return any(stop and stop in tail for stop in self.settings.stop)

    def _completion(self, new: list[int]) -> Completion:
        s = self.settings
        finish = "length"
        for j, tok in enumerate(new):
            if tok in self.eos_ids:
                new, finish = new[:j], "stop"
                break
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        if s.stop:
            cut = cut_at_stop(text, s.stop)
            finish = "stop" if cut != text else finish
            text = cut
        return Completion(text, finish_reason=finish)

    def _generate_batch(self, batch: list[Request], encoded: list[list[int]]) -> list[list[int]]:
        """The new tokens of each row of one batch."""
        import torch

        device = next(self.model.parameters()).device
        s = self.settings
        shared = self._shared_prefix(encoded)
        suffixes = [ids[shared:] for ids in encoded]
        width = shared + max(len(e) for e in suffixes)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (ids, suffix) in enumerate(zip(encoded, suffixes)):
            # [shared prefix][padding][own suffix]: every prompt ends where generation starts, and the prefix sits
            # at the same positions in every row, so one cache of it serves them all.
            input_ids[i, :shared] = torch.tensor(ids[:shared], dtype=torch.long)
            attention[i, :shared] = 1
            input_ids[i, width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
            attention[i, width - len(suffix) :] = 1
        kwargs: dict[str, Any] = dict(
            max_new_tokens=s.max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            do_sample=not s.greedy,
        )
        if s.greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=None)
            # Seeded by the batch's first key: a rerun of the same batch samples the same text.
            torch.manual_seed(_stable_seed(s.seed, batch[0].key))
        if s.stop:
            kwargs.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            if shared:
                cache = self.model(
                    input_ids=input_ids[:1, :shared].to(device), use_cache=True
                ).past_key_values
                cache.batch_repeat_interleave(len(batch))
                kwargs["past_key_values"] = cache
            out = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs
            )
        return [out[i, width:].tolist() for i in range(len(batch))]

    def _shared_prefix(self, encoded: list[list[int]]) -> int:
        """How many first tokens every prompt of a batch shares (0: not worth a cache of its own)."""
        if not self.share_prefix or len(encoded) < 2:
            return 0
        first, most = encoded[0], min(len(e) for e in encoded) - 1  # every row keeps a token of its own
        n = 0
        while n < most and all(e[n] == first[n] for e in encoded):
            n += 1
        return n if n >= MIN_SHARED_PREFIX else 0


BACKENDS = ("hf", "openai")


@dataclass
class BackendOptions:
    """Where text comes from: a local transformers model or an OpenAI-compatible server."""

    backend: str = opt(
        "hf", choices=BACKENDS, help="hf: transformers generate; openai: an OpenAI-compatible server"
    )
    model: str = opt(
        "", help="hf: a hub id, model folder, adapter or run folder; openai: the served model name"
    )
    adapter: str | None = opt(None, help="hf: a LoRA adapter folder on top of --model")
    base_url: str | None = opt(
        None,
        help="openai: the server, e.g. http://localhost:8000/v1 for vLLM or SGLang; unset: the OpenAI API",
    )
    api_key_env: str = opt(
        "OPENAI_API_KEY", help="openai: environment variable holding the API key (never logged or stored)"
    )
    concurrency: int = opt(8, type=POSITIVE, help="openai: requests in flight")
    timeout: float = opt(
        120.0,
        type=SECONDS,
        help="openai: seconds one request may take, streamed or not (connecting included)",
    )
    max_retries: int = opt(
        5,
        type=NON_NEGATIVE,
        help="openai: retries of a failed request (429, 5xx, timeouts, malformed replies), with exponential "
        "backoff and jitter",
    )
    stream: bool = opt(False, help="openai: stream replies")
    batch_size: int = opt(
        32,
        type=POSITIVE,
        help="hf: prompts generated at once (on the continuous loop, a row whose answer ends takes the next prompt)",
    )
    dtype: str = opt("auto", choices=DTYPES, help="hf: weight dtype")
    device: str | None = opt(None, help="hf: cuda, mps or cpu; unset: the best available")
    trust_remote_code: bool = opt(False, help="hf: allow the model's own Python code (off by default)")
    chat_template: str | None = opt(
        None,
        help="hf: a chat template (built-in 'llama3' or a Jinja file) instead of the tokenizer's (needed where "
        "it has none)",
    )
    extra_body: dict[str, Any] | None = opt(
        None,
        type=json_object,
        metavar="JSON",
        help="openai: server-specific request fields, e.g. '{\"do_sample\": true}' for transformers serve",
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend '{self.backend}': choose from {', '.join(BACKENDS)}")
        for name, low in (("concurrency", 1), ("max_retries", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be a whole number of at least {low}, got {value!r}"
                )
        if not (isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"--timeout must be a positive number of seconds, got {self.timeout!r}")

    def describe(self) -> dict[str, Any]:
        """What identifies the text source in results files (never the key)."""
        out: dict[str, Any] = {"backend": self.backend, "model": self.model}
        if self.adapter:
            out["adapter"] = self.adapter
        return out


def make_backend(options: BackendOptions, settings: SamplingSettings, templates=None):
    """An ``HFBackend`` or ``OpenAIBackend`` for ``options``: the one place a back-end is built (sampling,
    judging and evaluation all come here, with the same options and defaults). ``templates`` (a template set;
    default math) gives the layout for tokenizers without a chat template, as the trainer renders it."""
    if options.backend not in BACKENDS:
        raise ValueError(f"backend '{options.backend}': choose from {', '.join(BACKENDS)}")
    if not options.model:
        raise ValueError(
            "no model given (--model): a hub id or folder for hf, the served model name for openai"
        )
    if options.backend == "openai":
        return OpenAIBackend(
            options.model,
            base_url=options.base_url,
            api_key_env=options.api_key_env,
            settings=settings,
            concurrency=options.concurrency,
            timeout=options.timeout,
            max_retries=options.max_retries,
            stream=options.stream,
            extra_body=options.extra_body,
        )
    from ..prompts import PromptRenderer, TemplateSet
    from .loading import load_model

    model, tokenizer, _ = load_model(
        options.model,
        options.adapter,
        dtype=options.dtype,
        device=options.device,
        trust_remote_code=options.trust_remote_code,
    )
    # The trainer renders X_base with this renderer; sampling through it gives the same prompt tokens.
    template_set = TemplateSet.load(templates)
    renderer = PromptRenderer(tokenizer, chat_template=options.chat_template, plain_format=template_set.plain)
    return HFBackend(model, tokenizer, settings, batch_size=options.batch_size, renderer=renderer)


def describe_backend(backend) -> dict[str, Any]:
    """What a results file records about a back-end built without ``BackendOptions`` (library use)."""
    if isinstance(backend, HFBackend):
        return {
            "backend": "hf",
            "model": str(getattr(backend.model, "name_or_path", "") or type(backend.model).__name__),
        }
    return {"backend": "openai", "model": str(getattr(backend, "model", ""))}


class MalformedReply(Exception):
    """A reply that arrived but can't be used: no choices, no text, a stream cut off before its finish reason."""


class _StreamBroken(Exception):
    """A stream that failed after it had started."""


class _Deadline(Exception):
    """The whole request took longer than ``timeout``."""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


# Statuses worth another attempt (as the openai client and most SDKs retry them); others are final.
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


def _retry_after(headers) -> float | None:
    """Seconds a server asks us to wait (``retry-after-ms`` or ``retry-after``), capped at a minute."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return min(60.0, max(0.0, float(value) * scale))
        except ValueError:
            return None
    return None


class OpenAIBackend:
    """An OpenAI-compatible endpoint (chat completions, or completions for raw text prompts).

    ``timeout`` bounds each request as a whole — connecting, waiting and reading, streamed or not: a server that
    drips one byte (or one event) a second is cut off when the time is up, not waited on forever. Failed
    attempts are retried here (the client's own retries are off, so that ``attempts`` counts them all) with
    exponential backoff and jitter, honouring a server's ``retry-after``: 408/409/429/5xx, timeouts,
    connection errors, replies that are not valid JSON or lack the text, and streams that break, send an error
    event or end without a finish reason. Other HTTP errors (400, 401, 404, ...) are final at once, with the
    server's own message. A request that still fails comes back as a ``Completion`` with ``error`` set; nothing
    is raised, so a long job records it and goes on. The API key is never logged or stored, and is removed from
    any message a server echoes it in, whatever its length.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        settings: SamplingSettings | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 5,
        stream: bool = False,
        extra_body: dict[str, Any] | None = None,
    ):
        import openai

        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"--timeout must be a positive number of seconds, got {timeout}")
        if concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"--max-retries must be 0 or more, got {max_retries}")
        key = os.environ.get(api_key_env)
        if not key:
            if base_url is None:
                raise ValueError(
                    f"no API key: set the environment variable {api_key_env} (or point --base-url at your own server)"
                )
            key = "EMPTY"  # local servers (vLLM, SGLang) accept any key
            self._secrets: list[str] = []
        else:
            # Kept only to scrub it from error messages a server might echo back; never logged or stored.
            self._secrets = [key]
        self.client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
        self.model = model
        self.settings = settings or SamplingSettings()
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.stream = stream
        self.extra_body = extra_body or {}

    def _params(self, request: Request) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": s.max_new_tokens,
            "temperature": max(s.temperature, 0.0),
        }
        if s.top_p < 1.0:
            params["top_p"] = s.top_p
        if s.stop:
            params["stop"] = list(s.stop)[:4]  # the API takes at most four
        if not s.greedy:
            # One seed per request, not one per run: servers that honour seeds (vLLM, SGLang) would otherwise give
            # every sample of the same prompt the same text.
            params["seed"] = _stable_seed(s.seed, request.key) & 0x7FFFFFFF
        if self.extra_body:
            params["extra_body"] = self.extra_body
        if self.stream and request.messages is not None:
            params["stream"] = True
        return params

    def _read(self, response, deadline: float) -> bytes:
        """The whole body, cut off at ``deadline`` (a watchdog closes the connection, so a stalled read returns)."""
        import threading

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), response.http_response.close)
        timer.daemon = True
        timer.start()
        parts: list[bytes] = []
        try:
            for part in response.iter_bytes():
                parts.append(part)
                if time.monotonic() > deadline:
                    raise _Deadline()
        except _Deadline:
            raise
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise _Deadline() from None
            raise _StreamBroken(
                f"connection broke while reading the reply: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            timer.cancel()
        return b"".join(parts)

    @staticmethod
    def _parse_reply(body: bytes, chat: bool) -> tuple[str, str | None]:
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MalformedReply(f"reply is not JSON ({body[:60]!r})") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise MalformedReply("reply has no choices")
        choice = choices[0]
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        if not isinstance(text, str):
            raise MalformedReply(
                "reply has no choices[0].message.content" if chat else "reply has no choices[0].text"
            )
        return text, choice.get("finish_reason")

    @staticmethod
    def _parse_stream(body: bytes) -> tuple[str, str | None]:
        parts, finish, events = [], None, 0
        for line in body.decode("utf-8", "replace").splitlines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            events += 1
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError:
                raise _StreamBroken(f"stream broke after {events} events: an event is not JSON") from None
            if isinstance(chunk, dict) and "error" in chunk:
                message = (
                    (chunk["error"] or {}).get("message")
                    if isinstance(chunk["error"], dict)
                    else chunk["error"]
                )
                raise _StreamBroken(
                    f"stream broke after {events} events: the server sent an error ({message})"
                )
            for choice in (chunk.get("choices") or []) if isinstance(chunk, dict) else []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    parts.append(delta["content"])
                finish = choice.get("finish_reason") or finish
        if finish is None:
            raise MalformedReply(f"stream ended after {events} events without a finish reason (cut off)")
        return "".join(parts), finish

    def _once(self, request: Request) -> tuple[str, str | None]:
        import openai

        params = self._params(request)
        deadline = time.monotonic() + self.timeout
        chat = request.messages is not None
        api = self.client.chat.completions if chat else self.client.completions
        payload = {"messages": request.messages} if chat else {"prompt": request.text}
        try:
            with api.with_streaming_response.create(**payload, **params) as response:
                body = self._read(response, deadline)
        except openai.APIStatusError as exc:
            message = exc.message
            body_error = exc.body.get("error") if isinstance(exc.body, dict) else exc.body
            if isinstance(body_error, dict) and body_error.get("message"):
                message = (
                    f"{message} ({body_error['message']})"
                    if body_error["message"] not in message
                    else message
                )
            elif isinstance(body_error, str) and body_error and body_error not in message:
                message = f"{message} ({body_error[:200]})"
            raise _HTTPError(exc.status_code, message, _retry_after(exc.response.headers)) from None
        except openai.APITimeoutError:
            raise _Deadline() from None
        if params.get("stream"):
            return self._parse_stream(body)
        return self._parse_reply(body, chat)

    def _call(self, request: Request) -> Completion:
        import openai

        attempt = 0
        while True:
            attempt += 1
            wait = None
            try:
                text, finish = self._once(request)
                if self.settings.stop:
                    text = cut_at_stop(text, self.settings.stop)
                return Completion(text, finish_reason=finish, attempts=attempt)
            except _HTTPError as exc:
                error = f"HTTP {exc.status}: {exc}"
                if exc.status not in RETRY_STATUSES:
                    return Completion(None, error=self._redact(error), attempts=attempt)
                wait = exc.retry_after
            except _Deadline:
                error = f"timed out: no complete reply within --timeout {self.timeout:g}s"
            except (MalformedReply, _StreamBroken) as exc:
                error = f"{'broken stream' if isinstance(exc, _StreamBroken) else 'malformed reply'}: {exc}"
            except openai.APIConnectionError as exc:
                error = f"connection failed: {exc}"
            if attempt > self.max_retries:
                return Completion(
                    None, error=self._redact(f"{error} (after {attempt} attempts)"), attempts=attempt
                )
            if wait is None:
                wait = min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.75 + 0.5 * random.random())
            time.sleep(wait)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return _redact(text)

    def generate(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Completion]]:
        """Run requests with at most ``concurrency`` in flight; yield each as it completes."""
        pending: dict[Future, Request] = {}
        it = iter(requests)
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            for request in it:
                pending[pool.submit(self._call, request)] = request
                if len(pending) >= self.concurrency:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    request = pending.pop(fut)
                    yield request, fut.result()
                    nxt = next(it, None)
                    if nxt is not None:
                        pending[pool.submit(self._call, nxt)] = nxt
        except BaseException:
            # Ctrl-C, or the caller stopping: queued requests are cancelled and those in flight abandoned, not
            # waited for (every finished one was already written by the caller).
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def _redact(text: str) -> str:
    """Drop anything that looks like a bearer key from an error message before it is shown or stored."""
    import re

    return re.sub(r"(sk-[A-Za-z0-9_\-]{6})[A-Za-z0-9_\-]+", r"\1…", text)[:500]
