"""Lean per-token log-probabilities of a response under a prompt (docs/method.md section 2, Q3).

NLFT needs, for every response token, log P(y_t | prompt, y_<t) under up to three prompts, and the X_base
hidden state that predicts it. The authors' code kept a full-vocabulary fp32 softmax of all three sequences
for backward. Here:

* the model runs as usual, through its own ``forward`` (so DDP, FSDP, DeepSpeed and PEFT wrappers see one
  ordinary call), and its output head computes NLFT's numbers **inside that forward**: while ``score_responses``
  runs, the head's ``forward`` takes the final hidden states, picks the positions that predict response tokens
  and returns their log-probabilities (``_LeanHead``). The head's parameters are therefore used where every
  engine has gathered them (FSDP2 unshards a unit for its forward, ZeRO-3 fetches a module's parameters for its
  forward), and its backward hooks fire in the usual order: the model's output — a zero placeholder the lean
  values flow into, added to the loss as ``Scored.anchor`` — is what backward starts from, so engines re-gather
  the head (full fine-tuning) before its gradient is computed, and release it after the final norm's backward;
* the head is applied only at those positions, a chunk of tokens at a time, so at most ``[chunk, vocab]``
  logits exist at once, whatever the batch;
* d log p / d h is formed inside each forward chunk and kept (``[tokens, hidden]``, the size of h itself), so
  backward needs neither the logits nor a recompute; soft-capped (Gemma 2) and scaled (Cohere, Granite) heads
  take the same path, their transform differentiated analytically;
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


def _transformed(z: torch.Tensor, cap: float | None, scale: float) -> torch.Tensor:
    """The model's logits from the head's output ``z`` (float32, transformed in place): scaled, soft-capped."""
    if scale != 1.0:
        z.mul_(scale)
    if cap:
        z.div_(cap).tanh_().mul_(cap)
    return z


class _LinearTokenLogProb(torch.autograd.Function):
    """log_softmax(T(h W^T + b))[y] row by row, chunked, with T the model's logit transform (scale, soft-cap);
    gradient for h (and W, b when they train)."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk, cap, scale):
        n = h.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=h.device)
        want_h = ctx.needs_input_grad[0]
        dh = torch.empty_like(h) if want_h else None
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            # One [chunk, vocab] buffer, transformed in place: the element-wise passes over it cost as much as the
            # matmul when each allocates a fresh tensor of that size.
            logits = _transformed(F.linear(h[s:e], weight, bias).float(), cap, scale)
            capped = logits.clone() if (want_h and cap) else None  # cap * tanh(.), for the tanh' factor
            logits.sub_(logits.amax(dim=-1, keepdim=True))  # shifted: exp can't overflow
            target = logits.gather(1, targets[s:e, None]).squeeze(1)
            total = logits.exp_().sum(dim=-1)
            out[s:e] = target - total.log()
            if want_h:
                coeff = logits.div_(total[:, None]).neg_()  # d log p / d logits = onehot - softmax
                coeff.scatter_add_(1, targets[s:e, None], torch.ones_like(target)[:, None])
                if cap:
                    coeff.mul_(
                        capped.div_(cap).square_().neg_().add_(1.0)
                    )  # d cap*tanh(u/cap) / du = 1 - tanh^2
                    del capped
                if scale != 1.0:
                    coeff.mul_(scale)
                dh[s:e] = (coeff.to(weight.dtype) @ weight).to(h.dtype)
            del logits
        want_w = ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2])
        ctx.chunk, ctx.cap, ctx.scale = chunk, cap, scale
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
                logits = _transformed(F.linear(h[s:e], weight, bias).float(), ctx.cap, ctx.scale)
                coeff = (
                    -torch.softmax(logits, dim=-1) * g[:, None]
                )  # d/dlogits of g * logp: g * (onehot - probs)
                coeff.scatter_add_(1, targets[s:e, None], g[:, None])
                if ctx.cap:
                    coeff.mul_(1.0 - (logits / ctx.cap).square_())
                if ctx.scale != 1.0:
                    coeff.mul_(ctx.scale)
                gw += coeff.T @ hc
                if gb is not None:
                    gb += coeff.sum(0)
            grad_w = gw.to(weight.dtype) if ctx.needs_input_grad[1] else None
            grad_b = gb.to(bias.dtype) if gb is not None and ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b, None, None, None, None


def _plain_linear(head: nn.Module) -> bool:
    """A head whose computation is ``F.linear(h, head.weight, head.bias)`` on plain tensors (FSDP2's
    ``FSDPLinear`` is one while its unit is unsharded; PEFT's LoRA layers are not)."""
    weight = getattr(head, "weight", None)
    return (
        isinstance(head, nn.Linear)
        and isinstance(weight, torch.Tensor)
        and type(weight).__name__
        in (
            "Parameter",
            "Tensor",
        )
    )


def token_logprobs(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, *, chunk_size: int = 1024, config=None
) -> torch.Tensor:
    """log P(target | hidden) for each row of ``hidden`` ``[N, H]`` through the output ``head`` (and the model's
    logit transform, from ``config``); float32 ``[N]``. Called where the head's parameters are usable: inside
    the head's forward during ``score_responses``, or on a bare module."""
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    cap, scale = _head_transform(config) if config is not None else (None, 1.0)
    if _plain_linear(head):
        return _LinearTokenLogProb.apply(hidden, head.weight, head.bias, targets, chunk_size, cap, scale)

    # Any other head (a LoRA layer on the head, a custom class): its own forward, without module hooks, a chunk at
    # a time, recomputed in backward instead of keeping [chunk, vocab] logits.
    compute = type(head).forward

    def chunk_fn(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = _transformed(compute(head, h).float(), cap, scale)
        return logits.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)

    parts = []
    for s in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[s : s + chunk_size], targets[s : s + chunk_size]
        parts.append(
            checkpoint(chunk_fn, h, y, use_reentrant=False) if torch.is_grad_enabled() else chunk_fn(h, y)
        )
    return torch.cat(parts)


@contextmanager
def _lean_head(lm: nn.Module, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor, chunk_size: int):
    """While the model runs, its output head computes the log-probabilities of ``targets`` from the hidden states
    at (``rows``, ``cols``) instead of the logits, and leaves them in the yielded dict ("logp", "hidden").

    The head's forward is swapped on the instance, so the module is still *called* by the model's forward: every
    engine's hooks on it run as for any forward. What it returns to the model is a ``[batch, 1, 1]`` zero that
    depends on the lean values, so that the model's own logit post-processing runs on something harmless and
    backward from the model's output reaches the head first (see the module docstring)."""
    head = lm.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(lm).__name__} has no output head (get_output_embeddings): not a causal LM")
    box: dict[str, torch.Tensor] = {}
    before = head.__dict__.get("forward")

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        selected = x[rows.to(x.device), cols.to(x.device)]
        logp = token_logprobs(selected, head, targets.to(x.device), chunk_size=chunk_size, config=lm.config)
        box["logp"], box["hidden"] = logp, selected.detach()
        return logp.new_zeros((x.shape[0], 1, 1)).to(x.dtype) + (0.0 * logp.sum()).to(x.dtype)

    head.forward = forward
    try:
        yield box
    finally:
        if before is None:
            del head.forward
        else:
            head.forward = before


@dataclass
class Scored:
    """Per-token results for a batch of sequences, flattened over their response tokens."""

    logp: torch.Tensor  # [N] float32
    hidden: torch.Tensor | None  # [N, H] detached final hidden states that predict each token
    lengths: list[int]  # response tokens per row
    # A zero, with gradient, that passes through the model's output: add it to the loss so that backward
    # starts where engines expect it to (their pre-backward hooks on the model's outputs).
    anchor: torch.Tensor | None = None

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
    ``torch.no_grad()``. With gradient, add ``Scored.anchor`` to the loss.
    """
    lm = causal_lm(model)
    rows, cols = response_index(prompt_lens, response_lens, input_ids.device)
    targets = input_ids[rows, cols + 1]
    with _lean_head(lm, rows, cols, targets, chunk_size) as box:
        # logits_to_keep=0: the head is handed every position (a view), and picks the response ones itself.
        out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=0, use_cache=False)
    anchor = out.logits.sum() * 0.0 if torch.is_grad_enabled() else None
    return Scored(box["logp"], box["hidden"] if want_hidden else None, list(response_lens), anchor)
