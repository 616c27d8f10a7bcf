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
import logging
import os
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class SamplingSettings:
    """How to decode. ``temperature == 0`` is greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

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


class HFBackend:
    """Batched generation with a transformers causal LM (and optional PEFT adapter)."""

    def __init__(
        self,
        model,
        tokenizer,
        settings: SamplingSettings | None = None,
        *,
        batch_size: int = 8,
        renderer=None,
    ):
        from .prompts import PromptRenderer

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

    def prompt_ids(self, request: Request) -> list[int]:
        if request.messages is not None:
            system = next((m["content"] for m in request.messages if m["role"] == "system"), "")
            user = "\n\n".join(m["content"] for m in request.messages if m["role"] == "user")
            return self.renderer.prompt_ids(system, user)
        return self.tokenizer(request.text, add_special_tokens=True).input_ids

    def generate(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Completion]]:
        import torch

        requests = list(requests)
        device = next(self.model.parameters()).device
        s = self.settings
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            encoded = [self.prompt_ids(r) for r in batch]
            width = max(len(e) for e in encoded)
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for i, ids in enumerate(encoded):  # left padding: every prompt ends where generation starts
                input_ids[i, width - len(ids) :] = torch.tensor(ids)
                attention[i, width - len(ids) :] = 1
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
                out = self.model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs
                )
            for i, request in enumerate(batch):
                new = out[i, width:].tolist()
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
                yield request, Completion(text, finish_reason=finish)


BACKENDS = ("hf", "openai")


@dataclass
class BackendOptions:
    """Where text comes from: a local transformers model or an OpenAI-compatible server."""

    backend: str = "hf"
    model: str = ""
    adapter: str | None = None  # hf: a LoRA adapter folder
    base_url: str | None = None  # openai: e.g. http://localhost:8000/v1 for vLLM
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8  # openai: requests in flight
    timeout: float = 120.0  # openai: seconds to wait for the server (connect, and each read)
    max_retries: int = 5
    stream: bool = False
    batch_size: int = 8  # hf
    dtype: str = "auto"
    device: str | None = None
    trust_remote_code: bool = False
    chat_template: str | None = None  # hf: a built-in name or a Jinja file, for tokenizers without one
    extra_body: dict[str, Any] | None = (
        None  # openai: server-specific request fields, e.g. {"do_sample": true}
    )

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
    from .modeling import load_model
    from .prompts import PromptRenderer, TemplateSet

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
    """A stream that failed after it had started; the client does not retry these, so we do."""


class OpenAIBackend:
    """An OpenAI-compatible endpoint (chat completions, or completions for raw text prompts).

    Retries: the ``openai`` client retries 408/409/429/5xx, timeouts and connection errors itself (exponential
    backoff with jitter, honouring ``retry-after``), up to ``max_retries`` times. Failures it can't see are
    retried here with the same policy: bodies that are not valid JSON or lack the text, and streams that break,
    send an error event or end without a finish reason. ``timeout`` bounds every wait for the server (connect,
    and each read; for a stream, the gap between two chunks). A request that still fails comes back as a
    ``Completion`` with ``error`` set; nothing is raised, so a long job records it and goes on.
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

        key = os.environ.get(api_key_env)
        if not key:
            if base_url is None:
                raise ValueError(
                    f"no API key: set the environment variable {api_key_env} (or point --base-url at your own server)"
                )
            key = "EMPTY"  # local servers (vLLM, SGLang) accept any key
        # Kept only to scrub it from error messages a server might echo back; never logged or stored.
        self._secrets = [key] if len(key) >= 8 else []
        self.client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=max_retries)
        self.model = model
        self.settings = settings or SamplingSettings()
        self.concurrency = max(1, concurrency)
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
        return params

    def _stream_chat(self, request: Request, params: dict[str, Any]) -> tuple[str, str | None]:
        import openai

        stream = self.client.chat.completions.create(messages=request.messages, stream=True, **params)
        parts, finish = [], None
        try:
            for chunk in stream:
                choices = getattr(chunk, "choices", None)
                if not choices:
                    continue
                choice = choices[0]
                delta = getattr(choice, "delta", None)
                if delta is not None and getattr(delta, "content", None):
                    parts.append(delta.content)
                finish = getattr(choice, "finish_reason", None) or finish
        except (openai.APIError, ValueError) as exc:
            raise _StreamBroken(
                f"stream broke after {len(parts)} chunks: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            stream.close()
        if finish is None:
            raise MalformedReply(f"stream ended after {len(parts)} chunks without a finish reason (cut off)")
        return "".join(parts), finish

    def _once(self, request: Request) -> tuple[str, str | None]:
        params = self._params(request)
        if request.messages is not None:
            if self.stream:
                return self._stream_chat(request, params)
            reply = self.client.chat.completions.create(messages=request.messages, **params)
            choices = getattr(reply, "choices", None)
            if (
                not choices
                or getattr(choices[0], "message", None) is None
                or choices[0].message.content is None
            ):
                raise MalformedReply("reply has no choices[0].message.content")
            return choices[0].message.content, choices[0].finish_reason
        reply = self.client.completions.create(prompt=request.text, **params)
        choices = getattr(reply, "choices", None)
        if not choices or getattr(choices[0], "text", None) is None:
            raise MalformedReply("reply has no choices[0].text")
        return choices[0].text, choices[0].finish_reason

    def _call(self, request: Request) -> Completion:
        import openai

        attempt = 0
        while True:
            attempt += 1
            try:
                text, finish = self._once(request)
                if self.settings.stop:
                    text = cut_at_stop(text, self.settings.stop)
                return Completion(text, finish_reason=finish, attempts=attempt)
            except (MalformedReply, _StreamBroken, openai.APIResponseValidationError, ValueError) as exc:
                # The client retried transport errors already; these it could not see, so they are retried here.
                if attempt > self.max_retries:
                    what = "broken stream" if isinstance(exc, _StreamBroken) else "malformed reply"
                    return Completion(
                        None, error=self._redact(f"{what} after {attempt} attempts: {exc}"), attempts=attempt
                    )
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.75 + 0.5 * random.random()))
            except openai.APIError as exc:
                status = getattr(exc, "status_code", None)
                what = f"HTTP {status}" if status else type(exc).__name__
                return Completion(None, error=self._redact(f"{what}: {exc}"), attempts=attempt)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return _redact(text)

    def generate(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Completion]]:
        """Run requests with at most ``concurrency`` in flight; yield each as it completes."""
        pending: dict[Future, Request] = {}
        it = iter(requests)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
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


def _redact(text: str) -> str:
    """Drop anything that looks like a bearer key from an error message before it is shown or stored."""
    import re

    return re.sub(r"(sk-[A-Za-z0-9_\-]{6})[A-Za-z0-9_\-]+", r"\1…", text)[:500]
