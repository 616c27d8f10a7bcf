"""The lean scoring path must equal the plain full-logits computation, values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nlft.method.scoring import response_index, score_responses, token_logprobs
from nlft.models.tiny import build_tiny_model


def reference_logprobs(hidden, head, targets, cap=None):
    logits = head(hidden).float()
    if cap:
        logits = cap * torch.tanh(logits / cap)
    return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_logprobs_and_gradients_equal_full_logits(bias, chunk):
    torch.manual_seed(0)
    n, h, v = 23, 16, 50
    head = nn.Linear(h, v, bias=bias).double()
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, v, (n,))
    upstream = torch.randn(n, dtype=torch.float64)

    got = token_logprobs(hidden, head, targets, chunk_size=chunk)
    (got.double() * upstream).sum().backward()
    g_h, g_w = hidden.grad.clone(), head.weight.grad.clone()
    g_b = head.bias.grad.clone() if bias else None
    hidden.grad = None
    head.zero_grad()

    want = reference_logprobs(hidden, head, targets)
    (want.double() * upstream).sum().backward()
    assert torch.allclose(got.double(), want.double(), atol=1e-6)
    assert torch.allclose(g_h, hidden.grad, atol=1e-6)
    assert torch.allclose(g_w, head.weight.grad, atol=1e-5)
    if bias:
        assert torch.allclose(g_b, head.bias.grad, atol=1e-5)


def test_softcapped_head_falls_back_and_matches():
    class Cfg:
        final_logit_softcapping = 3.0

    torch.manual_seed(1)
    head = nn.Linear(8, 30).double()
    hidden = torch.randn(9, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 30, (9,))
    got = token_logprobs(hidden, head, targets, chunk_size=4, config=Cfg())
    got.sum().backward()
    g = hidden.grad.clone()
    hidden.grad = None
    want = reference_logprobs(hidden, head, targets, cap=3.0)
    want.sum().backward()
    assert torch.allclose(got.double(), want.double(), atol=1e-6) and torch.allclose(
        g, hidden.grad, atol=1e-6
    )


def test_frozen_head_gets_no_gradient_and_no_logits_are_kept():
    head = nn.Linear(8, 30)
    head.requires_grad_(False)
    hidden = torch.randn(5, 8, requires_grad=True)
    out = token_logprobs(hidden, head, torch.randint(0, 30, (5,)), chunk_size=2)
    # The only tensors saved for backward are d logp/dh ([N, H]) and the targets: nothing of vocabulary size.
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    assert saved and all(t.numel() <= 5 * 8 for t in saved)
    out.sum().backward()
    assert head.weight.grad is None and hidden.grad is not None


def test_response_index_points_at_predicting_positions():
    rows, cols = response_index([3, 5], [2, 1], "cpu")
    assert rows.tolist() == [0, 0, 1] and cols.tolist() == [2, 3, 4]


def test_score_responses_equals_model_logits_on_tiny_llama():
    model = build_tiny_model(seed=3).double()
    torch.manual_seed(0)
    a = torch.randint(10, 4000, (9,))
    b = torch.randint(10, 4000, (6,))
    prompt_lens, response_lens = [5, 2], [4, 4]
    ids = torch.zeros(2, 9, dtype=torch.long)
    mask = torch.zeros(2, 9, dtype=torch.long)
    ids[0, :9], mask[0, :9] = a, 1
    ids[1, :6], mask[1, :6] = b, 1  # right padded
    scored = score_responses(model, ids, mask, prompt_lens, response_lens, want_hidden=True, chunk_size=3)
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    want = []
    for row, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        lp = torch.log_softmax(logits[row, p - 1 : p + r - 1], -1)
        want.append(lp.gather(1, ids[row, p : p + r, None]).squeeze(1))
    assert torch.allclose(scored.logp.double(), torch.cat(want).double(), atol=1e-5)
    assert scored.hidden.shape == (8, model.config.hidden_size) and scored.split()[1].shape == (4,)


def test_lora_gradients_through_score_responses_equal_full_logits():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = build_tiny_model(seed=4).double()
    model = get_peft_model(
        base,
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["gate_proj", "up_proj", "down_proj"], init_lora_weights=False
        ),
    )
    ids = torch.randint(10, 4000, (1, 12))
    mask = torch.ones_like(ids)
    scored = score_responses(model, ids, mask, [4], [8], chunk_size=3)
    scored.logp.sum().backward()
    lean = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    full = torch.log_softmax(logits[0, 3:11], -1).gather(1, ids[0, 4:12, None]).sum()
    full.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(lean[name], p.grad, atol=1e-6), name
    assert F.mse_loss(scored.logp.double().sum(), full.detach()) < 1e-10


def test_scaled_and_softcapped_heads_take_the_lean_path_with_exact_weight_gradients():
    class Cfg:
        final_logit_softcapping = 3.0
        logit_scale = 0.5

    torch.manual_seed(2)
    head = nn.Linear(8, 30, bias=True).double()
    hidden = torch.randn(9, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 30, (9,))
    upstream = torch.randn(9, dtype=torch.float64)
    got = token_logprobs(hidden, head, targets, chunk_size=4, config=Cfg())
    assert type(got.grad_fn).__name__ == "_LinearTokenLogProbBackward"  # no recompute fallback
    (got.double() * upstream).sum().backward()
    grads = hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()
    hidden.grad = None
    head.zero_grad()
    logits = 3.0 * torch.tanh(head(hidden) * 0.5 / 3.0)
    want = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    (want * upstream).sum().backward()
    assert torch.allclose(got.double(), want, atol=1e-6)
    for a, b in zip(grads, (hidden.grad, head.weight.grad, head.bias.grad)):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("arch", ["gemma2", "gpt2", "qwen3", "phi3"])
def test_full_fine_tuning_gradients_through_the_model_equal_full_logits(arch):
    """Inside the model's own forward, on architectures with tied, soft-capped or Conv1D heads and layers."""
    from nlft.models.tiny import build_tiny_architecture

    torch.manual_seed(0)
    model = (
        build_tiny_architecture(arch, seed=5).double().eval()
    )  # no dropout: the two passes see one function
    ids = torch.randint(10, 4000, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    scored = score_responses(model, ids, mask, [4, 3], [8, 6], chunk_size=5)
    (scored.logp.sum() + scored.anchor).backward()
    lean = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits.double()
    full = (
        torch.log_softmax(logits[0, 3:11], -1).gather(1, ids[0, 4:12, None]).sum()
        + torch.log_softmax(logits[1, 2:8], -1).gather(1, ids[1, 3:9, None]).sum()
    )
    full.backward()
    assert torch.allclose(scored.logp.double().sum(), full.detach(), atol=1e-5)  # log-probs are float32
    moved = 0
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(lean[name], p.grad, atol=1e-6, rtol=1e-5), name
            moved += int(p.grad.abs().sum() > 0)
    assert moved == len(lean) > 5  # the head (tied to the embedding where it is) and the final norm included
