"""Each record's inputs to the weighting and the loss, from a collated batch: the X_base pass (with gradient in
training) and the reference pass (``reference.scoring_probs``). The trainer, the saliency snapshots and
``nlft saliency`` all call ``batch_scores``, so every view of the weights is the trainer's own."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .batches import _score_pass
from .reference import Probs, scoring_probs


@dataclass
class RecordScores:
    """One record's per-token inputs to the weighting: probabilities under the three prompts and hidden states."""

    id: str
    correct: bool
    p_base: torch.Tensor  # with gradient in training
    p_std: torch.Tensor
    p_judge: torch.Tensor | None  # wrong records only
    hidden: torch.Tensor  # X_base final hidden states predicting each token (detached)
    p_judge_grad: torch.Tensor | None = None  # incorrect_sft: judge


class BatchScores(list):
    """The ``RecordScores`` of a batch, in batch order, and the anchor of its training pass (``Scored.anchor``):
    a zero with gradient that the loss adds, so backward starts at the model's output."""

    def __init__(self, records=(), anchor: torch.Tensor | None = None):
        super().__init__(records)
        self.anchor = anchor


def batch_scores(
    model,
    inputs: dict,
    *,
    reference_probs: str = "live",
    reference_cache: Probs | None = None,
    chunk_size: int = 1024,
    judge_grad: bool = False,
    scoring_model=None,
) -> BatchScores:
    """Each record's inputs to the weighting and the loss, from a collated batch (``NLFTCollator``), with the
    anchor to add to the loss (``BatchScores.anchor``, from ``Scored.anchor``; None without gradient).

    The X_base pass runs through ``model`` (with gradient when enabled: the training pass), joined in one forward
    by the X_judge sequences when ``judge_grad`` (``incorrect_sft: judge``); the scoring pass through
    ``scoring_model`` (default ``model``). ``NLFTTrainer.score_batch`` and ``nlft saliency`` both call this.
    """
    n = len(inputs["ids"])
    rows = inputs["judge_rows"] if judge_grad else []
    parts = [("base", r) for r in range(n)] + [("judge", r) for r in rows]
    base = _score_pass(model, inputs, parts, chunk_size, want_hidden=True)
    logps, hiddens = base.split(), base.split_hidden()
    judge_with_grad = {r: lp.exp() for r, lp in zip(rows, logps[n:])}
    p_std, p_judge = scoring_probs(
        scoring_model if scoring_model is not None else model,
        inputs,
        reference_probs=reference_probs,
        reference_cache=reference_cache,
        chunk_size=chunk_size,
    )
    return BatchScores(
        (
            RecordScores(
                inputs["ids"][r],
                inputs["correct"][r],
                logps[r].exp(),
                p_std[r],
                p_judge.get(r),
                hiddens[r],
                judge_with_grad.get(r),
            )
            for r in range(n)
        ),
        anchor=base.anchor,
    )
