"""Continuous batching: the decode loop behind ``HFBackend`` for decoder models that use the standard cache API.

``model.generate`` on a batch runs until its longest answer ends, and its cache grows by concatenation, copying
every layer's keys and values at every step (on a CPU that copy costs as much as the matmuls). This loop instead

* keeps one key/value buffer per layer, ``[rows, kv heads, width, head dim]``, written in place;
* refills a row as soon as its answer ends: the next prompts (longest first) are prefilled together and their keys
  and values copied into the free rows, right-aligned at the column being written, so that every row writes the
  same column each step; a row's own positions (``position_ids``) and a 4D attention mask keep each row to its own
  columns, so a row computes exactly what it would alone (greedy answers match ``model.generate``'s);
* computes the prompt prefix every request shares (the chat template's system prompt) once for the whole run, and
  copies its cache into each newcomer;
* shifts the columns still in use to the left when the buffer's width is reached (at most every ``MARGIN`` steps).

Sampling draws each row's tokens from a generator seeded by its request's key, so a request's sample does not
depend on which others share its batch. Models whose attention is not the standard ``past_key_values.update`` path
(sliding windows, logit soft-capping, flash-attention kernels that take no 4D mask) use ``model.generate``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence

import torch

# Model types whose attention writes through ``past_key_values.update`` and reads a 4D mask as given.
MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral"})
ATTENTION = frozenset({"sdpa", "eager"})
# Free columns kept at the right of the buffer after a shift: the most steps between two shifts.
MARGIN = 64


def supports(model) -> bool:
    """Whether ``model`` can run on this loop (otherwise ``model.generate`` serves it)."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    sliding = getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True)
    return (
        getattr(text, "model_type", None) in MODEL_TYPES
        and getattr(text, "_attn_implementation", None) in ATTENTION
        and not sliding
    )


class SlotCache:
    """Keys and values of every layer in preallocated buffers; ``update`` writes the new states at column
    ``write`` and returns the columns up to the end of what was written (the model's attention reads them)."""

    def __init__(self, rows: int, width: int):
        self.rows, self.width, self.write = rows, width, 0
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if layer_idx not in self.keys:
            shape = (self.rows, key_states.shape[1], self.width, key_states.shape[-1])
            self.keys[layer_idx] = key_states.new_zeros(shape)
            self.values[layer_idx] = value_states.new_zeros(
                (self.rows, value_states.shape[1], self.width, value_states.shape[-1])
            )
        end = self.write + key_states.shape[-2]
        self.keys[layer_idx][:, :, self.write : end] = key_states
        self.values[layer_idx][:, :, self.write : end] = value_states
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.write

    def layers(self) -> list[int]:
        return sorted(self.keys)


def _mask(allowed: torch.Tensor, dtype: torch.dtype, boolean: bool) -> torch.Tensor:
    """A 4D attention mask from ``allowed`` (rows, queries, keys): boolean for sdpa, additive for eager."""
    allowed = allowed[:, None]
    if boolean:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)


class ContinuousBatcher:
    """Generates the new tokens of many prompts with ``rows`` of them in flight (see the module's docstring).

    ``choose(logits, prompts)`` picks the next token of each listed prompt (by index) from its logits
    ``[len(prompts), vocab]``;
    ``stopped(tokens)`` says whether a row's new tokens already hold a stop string (checked after each step)."""

    def __init__(
        self,
        model,
        *,
        rows: int,
        max_new_tokens: int,
        eos_ids: Sequence[int],
        pad_id: int,
        choose: Callable[[torch.Tensor, list[int]], list[int]],
        stopped: Callable[[list[int]], bool] | None = None,
    ):
        self.model, self.rows, self.max_new = model, rows, max_new_tokens
        self.eos, self.pad_id, self.choose, self.stopped = set(eos_ids), pad_id, choose, stopped
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.boolean_mask = getattr(config, "_attn_implementation", "sdpa") == "sdpa"

    def _forward(self, ids, positions, allowed, cache) -> torch.Tensor:
        out = self.model(
            input_ids=ids.to(self.device),
            position_ids=positions.to(self.device),
            attention_mask=_mask(allowed, self.dtype, self.boolean_mask).to(self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()

    def run(self, prompts: Sequence[Sequence[int]], order: Sequence[int], shared: int = 0):
        """Yields ``(index, new tokens)`` as each prompt's answer ends; ``order`` is the admission order and
        ``shared`` the length of the prefix every prompt shares (0: none worth a cache of its own)."""
        with torch.inference_mode():
            yield from self._run(prompts, list(order), shared)

    def _prefix(self, prompt: Sequence[int], shared: int):
        cache = SlotCache(1, shared)
        ids = torch.tensor([list(prompt[:shared])])
        allowed = torch.ones(shared, shared, dtype=torch.bool).tril()[None]
        self._forward(ids, torch.arange(shared)[None], allowed, cache)
        return cache

    def _run(self, prompts, order, shared) -> Iterator[tuple[int, list[int]]]:
        if not order:
            return
        queue = deque(order)
        rows = min(self.rows, len(order))
        prefix = self._prefix(prompts[order[0]], shared) if shared else None
        longest = max(len(prompts[i]) for i in order)
        width = longest + self.max_new + MARGIN
        cache = SlotCache(rows, width)
        allowed = torch.zeros(rows, width, dtype=torch.bool)  # the columns each row attends to
        request: list[int | None] = [None] * rows  # which prompt each row holds
        start = [0] * rows  # each row's first column
        position = [0] * rows  # each row's next position
        new: list[list[int]] = [[] for _ in range(rows)]
        pending = [self.pad_id] * rows  # each row's next input token
        batch = max(1, rows // 8)  # refill once this many rows are free (one prefill serves them all)

        def shift(to: int) -> None:
            """Moves the columns in use so that the next one written is ``to``."""
            nonlocal allowed
            busy = [start[r] for r in range(rows) if request[r] is not None]
            first = min(busy) if busy else cache.write
            used = cache.write - first
            for layer in cache.layers():
                for store in (cache.keys, cache.values):
                    moved = store[layer][:, :, first : cache.write].clone()
                    store[layer][:, :, to - used : to] = moved
            kept = allowed[:, first : cache.write].clone()
            allowed.zero_()
            allowed[:, to - used : to] = kept
            for r in range(rows):
                if request[r] is not None:
                    start[r] += to - used - first
            cache.write = to

        def admit(free: list[int]) -> Iterator[tuple[int, list[int]]]:
            chosen = [queue.popleft() for _ in range(min(len(free), len(queue)))]
            free = free[: len(chosen)]
            suffixes = [list(prompts[i][shared:]) for i in chosen]
            span = max(map(len, suffixes))
            total = shared + span
            if cache.write < total:
                shift(total)
            n = len(chosen)
            local = SlotCache(n, total)
            ids = torch.full((n, span), self.pad_id, dtype=torch.long)
            positions = torch.zeros((n, span), dtype=torch.long)
            valid = torch.zeros((n, total), dtype=torch.bool)
            valid[:, :shared] = True
            for j, suffix in enumerate(suffixes):
                ids[j, span - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
                positions[j, span - len(suffix) :] = torch.arange(shared, shared + len(suffix))
                valid[j, total - len(suffix) :] = True
            if prefix is not None:
                for layer in prefix.layers():
                    local.keys[layer] = prefix.keys[layer].new_zeros(
                        (n, *prefix.keys[layer].shape[1:2], total, prefix.keys[layer].shape[-1])
                    )
                    local.values[layer] = torch.zeros_like(local.keys[layer])
                    local.keys[layer][:, :, :shared] = prefix.keys[layer]
                    local.values[layer][:, :, :shared] = prefix.values[layer]
                local.write = shared
            causal = torch.ones(span, total, dtype=torch.bool).tril(shared)
            attend = valid[:, None, :] & causal[None]
            # A padding query attends to itself: its output is never used, but a query that sees nothing gives NaN.
            attend[:, torch.arange(span), torch.arange(shared, total)] = True
            logits = self._forward(ids, positions, attend, local)
            first_tokens = self.choose(logits, chosen)
            at = cache.write - total
            rows_index = torch.tensor(free)
            for layer in local.layers():
                if layer not in cache.keys:
                    heads, dim = local.keys[layer].shape[1], local.keys[layer].shape[-1]
                    cache.keys[layer] = local.keys[layer].new_zeros((rows, heads, cache.width, dim))
                    cache.values[layer] = torch.zeros_like(cache.keys[layer])
                cache.keys[layer][rows_index, :, at : cache.write] = local.keys[layer]
                cache.values[layer][rows_index, :, at : cache.write] = local.values[layer]
            for j, (r, i) in enumerate(zip(free, chosen)):
                allowed[r].zero_()
                allowed[r, at : cache.write] = valid[j]
                request[r], start[r], position[r] = i, at, shared + len(suffixes[j])
                new[r] = []
            yield from take(free, first_tokens)

        def take(rows: list[int], tokens: list[int]) -> Iterator[tuple[int, list[int]]]:
            for r, token in zip(rows, tokens):
                new[r].append(token)
                pending[r] = token
                if (
                    token in self.eos
                    or len(new[r]) >= self.max_new
                    or (self.stopped is not None and self.stopped(new[r]))
                ):
                    done, request[r] = request[r], None
                    allowed[r].zero_()
                    yield done, new[r]

        yield from admit(list(range(rows)))
        while True:
            free = [r for r in range(rows) if request[r] is None]
            if queue and (len(free) >= batch or len(free) == rows):
                yield from admit(free)
                continue
            active = [r for r in range(rows) if request[r] is not None]
            if not active:
                return
            if cache.write + 1 > cache.width:
                shift(cache.write - min(start[r] for r in active))
            column = cache.write
            for r in active:
                allowed[r, column] = True
            ids = torch.tensor(pending, dtype=torch.long)[:, None]
            positions = torch.tensor(position, dtype=torch.long)[:, None]
            step_allowed = allowed[:, : column + 1].clone()
            step_allowed[:, column] = True  # free rows attend to themselves only: no empty softmax
            logits = self._forward(ids, positions, step_allowed[:, None, :], cache)
            cache.write += 1
            for r in active:
                position[r] += 1
            yield from take(active, self.choose(logits[active], [request[r] for r in active]))
