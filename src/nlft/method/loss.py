"""The NLFT loss (docs/method.md sections 3, 4 and 6) for one record, from per-token probabilities.

Per record::

    loss = loss_scale * (L_sft + L_x)
    correct:   L_sft = -(1/n) sum log p_base          L_x = -(1/n) sum w_t log p_base      (section 3)
    incorrect: L_sft = 0, or the aligned X_judge term  L_x = -(1/n) sum v_t log q_t         (section 4, Q1)

Both parts are a weighted negative log-likelihood, so the whole record loss is one weighted sum over tokens
(``token_coefficients``) — the shape of trl's DFT loss. A probability of exactly 0 inside a log becomes
``prob_floor`` (as the reference's ``+= 1e-5``, gradient included), so every input gives a finite loss (Q5).
A batch loss is the mean of its records' losses; the trainer keeps that true across gradient accumulation
and processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .weighting import TokenWeights, WeightingConfig, token_weights

IncorrectSFT = Literal["none", "judge"]


def floored_log(p: torch.Tensor, floor: float = 1e-5) -> torch.Tensor:
    """log p, with p == 0 replaced by ``floor`` (the gradient still flows, as in the reference)."""
    return torch.log(p + floor * (p == 0).to(p.dtype))


def weighted_nll(p_base: torch.Tensor, weights: TokenWeights, floor: float = 1e-5) -> torch.Tensor:
    """L_x = -(1/n) sum_t weight_t * log q_t with q_t = 1 - p_base,t on unlikely tokens, p_base,t elsewhere."""
    q = torch.where(weights.unlikely, 1 - p_base, p_base)
    return -(weights.weight.to(q.dtype) * floored_log(q, floor)).sum() / max(p_base.shape[0], 1)


def correct_loss(
    p_base: torch.Tensor, p_std: torch.Tensor, hidden: torch.Tensor, cfg: WeightingConfig | None = None
) -> torch.Tensor:
    """L_correct of section 3 (no SFT term, no loss scale): what the reference's ``correct_loss`` returns."""
    cfg = cfg or WeightingConfig()
    return weighted_nll(p_base, token_weights(True, p_base, p_std, None, hidden, cfg), cfg.prob_floor)


def incorrect_loss(
    p_base: torch.Tensor,
    p_std: torch.Tensor,
    p_judge: torch.Tensor,
    hidden: torch.Tensor,
    cfg: WeightingConfig | None = None,
) -> torch.Tensor:
    """L_incorrect of section 4 (no loss scale): what the reference's ``unlikelihood`` returns."""
    cfg = cfg or WeightingConfig()
    return weighted_nll(p_base, token_weights(False, p_base, p_std, p_judge, hidden, cfg), cfg.prob_floor)


@dataclass
class RecordLoss:
    """One record's loss and what went into it (for logging and the saliency map)."""

    loss: torch.Tensor  # loss_scale * (sft + x), with gradient
    sft: torch.Tensor  # L_sft (detached)
    weighted: torch.Tensor  # L_correct or L_incorrect (detached), logged as nlft_loss
    weights: TokenWeights


def record_loss(
    correct: bool,
    p_base: torch.Tensor,
    p_std: torch.Tensor,
    p_judge: torch.Tensor | None,
    hidden: torch.Tensor,
    cfg: WeightingConfig | None = None,
    *,
    loss_scale: float = 10.0,
    incorrect_sft: IncorrectSFT = "none",
    p_judge_grad: torch.Tensor | None = None,
    uniform: bool = False,
) -> RecordLoss:
    """The full per-record NLFT loss of section 6.

    ``p_base`` carries the gradient; ``p_std``/``p_judge`` are scoring probabilities (no gradient). With
    ``incorrect_sft="judge"`` a wrong record adds -mean log P(y_t | X_judge, y_<t) computed from
    ``p_judge_grad`` (the X_judge pass with gradient), the aligned form of the reference's misaligned term (Q1).
    ``uniform=True`` is the ablation with every weight 1 and no NLFT terms: ``loss_scale`` times plain SFT.
    """
    cfg = cfg or WeightingConfig()
    weights = token_weights(correct, p_base, p_std, p_judge, hidden, cfg)
    if uniform:
        sft = -floored_log(p_base, cfg.prob_floor).sum() / max(p_base.shape[0], 1)
        return RecordLoss(loss_scale * sft, sft.detach(), sft.new_zeros(()), weights)
    x = weighted_nll(p_base, weights, cfg.prob_floor)
    n = max(p_base.shape[0], 1)
    if correct:
        sft = -floored_log(p_base, cfg.prob_floor).sum() / n
    elif incorrect_sft == "judge":
        if p_judge_grad is None:
            raise ValueError("incorrect_sft='judge' needs the X_judge probabilities with gradient")
        sft = -floored_log(p_judge_grad, cfg.prob_floor).sum() / n
    elif incorrect_sft == "none":
        sft = p_base.new_zeros(())
    else:
        raise ValueError(f"incorrect_sft must be 'none' or 'judge', not {incorrect_sft!r}")
    return RecordLoss(loss_scale * (sft + x), sft.detach(), x.detach(), weights)
