"""Lean per-token log-probabilities of a response under a prompt (docs/method.md section 2, Q3).

NLFT needs, for every response token, log P(y_t | prompt, y_<t) under up to three prompts, and the X_base
hidden state that predicts it. The authors' code kept a full-vocabulary fp32 softmax of all three sequences
for backward. Here:

* the model runs as usual (through its own ``forward``, so DDP, FSDP and PEFT wrappers see the call), with
  ``logits_to_keep=1`` so that it computes no logits of its own; a forward hook on the decoder takes the final
  hidden states;
* the output head is applied only at the positions that predict response tokens, a chunk of tokens at a time,
  so at most ``[chunk, vocab]`` logits exist at once, whatever the batch;
* for a plain linear head, d log p / d h = W[y] - softmax(hW) W is formed inside each forward chunk and kept
  (``[tokens, hidden]``, the size of h itself), so backward needs neither the logits nor a recompute;
  heads with soft-capping or scaling fall back to per-chunk activation checkpointing;
* scoring passes (X_std, X_judge) run under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Where the scoring probabilities p_std / p_judge come from (docs/method.md Q6): the current model each step
# (the reference), the frozen base model (LoRA adapter disabled), or computed once before training.
REFERENCE_PROBS = ("live", "initial", "cached")


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers causal-LM module inside DDP/FSDP/accelerate and PEFT wrappers."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    if hasattr(inner, "get_base_model"):  # PeftModel
        inner = inner.get_base_model()
    return inner


def _head_transform(config) -> tuple[float | None, float]:
    """(soft-cap, scale) the model applies to its logits after the head; (None, 1.0) for most models."""
    cap = getattr(config, "final_logit_softcapping", None)
    scale = 1.0
    if getattr(config, "logit_scale", None):  # Cohere multiplies
        scale *= float(config.logit_scale)
    if getattr(config, "logits_scaling", None):  # Granite divides
        scale /= float(config.logits_scaling)
    return cap, scale


class _LinearTokenLogProb(torch.autograd.Function):
    """log_softmax(h W^T + b)[y] row by row, chunked; gradient for h (and W, b when they train)."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk):
        n = h.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=h.device)
        want_h = ctx.needs_input_grad[0]
        dh = torch.empty_like(h) if want_h else None
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            # One [chunk, vocab] buffer, transformed in place: the element-wise passes over it cost as much as the
            # matmul when each allocates a fresh tensor of that size.
            logits = F.linear(h[s:e], weight, bias).float()
            logits.sub_(logits.amax(dim=-1, keepdim=True))  # shifted: exp can't overflow
            target = logits.gather(1, targets[s:e, None]).squeeze(1)
            total = logits.exp_().sum(dim=-1)
            out[s:e] = target - total.log()
            if want_h:
                probs = logits.div_(total[:, None]).to(weight.dtype)
                dh[s:e] = (weight[targets[s:e]] - probs @ weight).to(h.dtype)
            del logits
        want_w = ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2])
        ctx.chunk = chunk
        ctx.has_bias = bias is not None
        ctx.save_for_backward(
            dh, h if want_w else None, weight if want_w else None, bias if want_w else None, targets
        )
        return out

    @staticmethod
    def backward(ctx, grad_out):
        dh, h, weight, bias, targets = ctx.saved_tensors
        grad_h = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_h = grad_out[:, None].to(dh.dtype) * dh
        if h is not None:  # the head trains (full fine-tuning): recompute chunk by chunk
            gw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            gb = (
                torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device)
                if ctx.has_bias
                else None
            )
            for s in range(0, h.shape[0], ctx.chunk):
                e = min(s + ctx.chunk, h.shape[0])
                hc = h[s:e].float()
                g = grad_out[s:e].float()
                probs = torch.softmax(F.linear(h[s:e], weight, bias).float(), dim=-1)
                coeff = -probs * g[:, None]  # d/dlogits of g * logp: g * (onehot - probs)
                coeff.scatter_add_(1, targets[s:e, None], g[:, None])
                gw += coeff.T @ hc
                if gb is not None:
                    gb += coeff.sum(0)
            grad_w = gw.to(weight.dtype) if ctx.needs_input_grad[1] else None
            grad_b = gb.to(bias.dtype) if gb is not None and ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b, None, None


def token_logprobs(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, *, chunk_size: int = 1024, config=None
) -> torch.Tensor:
    """log P(target | hidden) for each row of ``hidden`` ``[N, H]`` through the output ``head``; float32 ``[N]``."""
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    cap, scale = _head_transform(config) if config is not None else (None, 1.0)
    plain = type(head) is nn.Linear and cap is None and scale == 1.0
    if plain:
        return _LinearTokenLogProb.apply(hidden, head.weight, head.bias, targets, chunk_size)

    def chunk_fn(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = head(h).float() * scale
        if cap:
            logits = cap * torch.tanh(logits / cap)
        return logits.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)

    parts = []
    for s in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[s : s + chunk_size], targets[s : s + chunk_size]
        parts.append(
            checkpoint(chunk_fn, h, y, use_reentrant=False) if torch.is_grad_enabled() else chunk_fn(h, y)
        )
    return torch.cat(parts)


@contextmanager
def _capture_final_hidden(decoder: nn.Module):
    box: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        box["h"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    handle = decoder.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


@dataclass
class Scored:
    """Per-token results for a batch of sequences, flattened over their response tokens."""

    logp: torch.Tensor  # [N] float32
    hidden: torch.Tensor | None  # [N, H] detached final hidden states that predict each token
    lengths: list[int]  # response tokens per row

    def split(self) -> list[torch.Tensor]:
        return list(torch.split(self.logp, self.lengths))

    def split_hidden(self) -> list[torch.Tensor]:
        assert self.hidden is not None
        return list(torch.split(self.hidden, self.lengths))


def response_index(
    prompt_lens: Sequence[int], response_lens: Sequence[int], device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, position) of the hidden states that predict response tokens: position p predicts token p + 1."""
    rows, cols = [], []
    for b, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        rows.append(torch.full((r,), b, dtype=torch.long))
        cols.append(torch.arange(p - 1, p + r - 1, dtype=torch.long))
    return torch.cat(rows).to(device), torch.cat(cols).to(device)


def score_responses(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_lens: Sequence[int],
    response_lens: Sequence[int],
    *,
    want_hidden: bool = False,
    chunk_size: int = 1024,
) -> Scored:
    """Run ``model`` on right-padded sequences and score their response tokens.

    Gradient flows when it is enabled by the caller (the X_base training pass); wrap scoring passes in
    ``torch.no_grad()``.
    """
    lm = causal_lm(model)
    decoder = lm.get_decoder()
    with _capture_final_hidden(decoder) as box:
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1, use_cache=False)
    hs = box.pop("h")
    rows, cols = response_index(prompt_lens, response_lens, hs.device)
    selected = hs[rows, cols]
    targets = input_ids.to(hs.device)[rows, cols + 1]
    del hs
    logp = token_logprobs(
        selected, lm.get_output_embeddings(), targets, chunk_size=chunk_size, config=lm.config
    )
    return Scored(logp, selected.detach() if want_hidden else None, list(response_lens))
