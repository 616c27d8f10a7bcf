"""The NLFT trainer: ``transformers.Trainer`` with the NLFT loss (its batches, scores and reference probabilities
are ``batches``, ``scores`` and ``reference``; the run's callbacks ``callbacks``).

Each step scores every record's response under X_base (with gradient; hidden states kept for clustering),
X_std (no gradient) and, for wrong records, X_judge (no gradient), then gives every record its own loss
(``loss.record_loss``) whatever the batch mix (Q2). The batch loss is the mean over records, normalised by the
number of records in the whole accumulated batch across processes, so 1 x batch 4 and 4 x batch 1 take the
same step, and several processes the same step as one.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from transformers import Trainer

from ..method.loss import record_loss
from .reference import Probs, ReferenceCache, check_reference_probs
from .scores import BatchScores, batch_scores

logger = logging.getLogger(__name__)

METRICS = (
    "sft_loss",
    "nlft_loss",
    "correct_loss",
    "incorrect_loss",
    "blamed_fraction",
    "salient_fraction",
    "cluster_fraction",
    "mean_weight_correct",
    "mean_weight_incorrect",
)


def _length_grouped_base():
    from transformers.trainer_pt_utils import LengthGroupedSampler

    return LengthGroupedSampler


class SeededLengthGroupedSampler(_length_grouped_base()):
    """transformers' ``LengthGroupedSampler`` with an order that depends only on the seed and the epoch. Its own
    draws from the global RNG, whose state a resumed run does not share at that point, so a run killed
    mid-epoch resumed onto another order; this one replays the same batches."""

    def __init__(self, batch_size: int, *, seed: int, **kwargs):
        super().__init__(batch_size, **kwargs)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class NLFTTrainer(Trainer):
    """``Trainer`` whose loss is NLFT's. ``args`` is an ``NLFTConfig``."""

    # compute_loss normalises by the records of the whole accumulated batch itself.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, reference_cache: ReferenceCache | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.weighting = self.args.weighting()
        check_reference_probs(self.args.reference_probs)
        if self.args.reference_probs == "cached" and reference_cache is None:
            raise ValueError("reference_probs=cached needs the run's ReferenceCache")
        self.reference_cache = reference_cache
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def _reference_probs(self, model) -> Probs | None:
        """``reference_probs: cached``: the base model's p_std/p_judge of every record, read back or computed at the
        first step through the prepared model, by every process alike; the main process stores them with the run."""
        if self.args.reference_probs != "cached":
            return None
        return self.reference_cache.ensure(
            self.accelerator.unwrap_model(model),
            self.data_collator,
            batch_size=self.args.per_device_eval_batch_size,
            chunk_size=self.args.logits_chunk_size,
            progress=self.is_world_process_zero() and not self.args.disable_tqdm,
            main=self.is_world_process_zero(),
        )

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and self.args.per_device_train_batch_size == 1
        ):
            # One record per micro-batch pads nothing; grouping would only sort the order. (sft_config agrees.)
            from torch.utils.data import RandomSampler

            return RandomSampler(dataset)
        if self.args.train_sampling_strategy == "group_by_length":
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return SeededLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                dataset=dataset,
                lengths=dataset["length"],
                seed=seed,
            )
        return super()._get_train_sampler(train_dataset)

    # -- normalisation ------------------------------------------------------------------------------------------
    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """Records in the accumulated batch, summed over processes (what the mean is taken over)."""
        if not batch_samples or "ids" not in batch_samples[0]:
            return None
        count = torch.tensor(sum(len(b["ids"]) for b in batch_samples), device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    # -- the loss ------------------------------------------------------------------------------------------------
    def score_batch(self, model, inputs: dict) -> BatchScores:
        """Everything the weighting and the loss need for each record of a collated batch.

        ``compute_loss`` and the saliency snapshots (``nlft studio``) both call this, so the weights a snapshot
        shows are the trainer's weights for that record at that step.
        """
        return batch_scores(
            model,
            inputs,
            reference_probs=self.args.reference_probs,
            reference_cache=self._reference_probs(model),
            chunk_size=self.args.logits_chunk_size,
            judge_grad=self.args.incorrect_sft == "judge",
            scoring_model=self.accelerator.unwrap_model(model),
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        scores = self.score_batch(model, inputs)
        total = scores.anchor
        for rec in scores:
            out = record_loss(
                rec.correct,
                rec.p_base,
                rec.p_std,
                rec.p_judge,
                rec.hidden,
                self.weighting,
                loss_scale=args.loss_scale,
                incorrect_sft=args.incorrect_sft,
                p_judge_grad=rec.p_judge_grad,
                uniform=args.uniform_weights,
            )
            total = out.loss if total is None else total + out.loss
            self._track(rec.correct, out)
        if num_items_in_batch is not None:
            # DDP averages gradients over processes; scaling by their number makes the step the mean over all
            # records of the accumulated batch on every process.
            loss = total / num_items_in_batch * self.accelerator.num_processes
        else:
            loss = total / len(inputs["ids"])
        return (loss, {"loss": loss.detach()}) if return_outputs else loss

    # -- metrics ------------------------------------------------------------------------------------------------
    def _add(self, name: str, value: float, count: int = 1) -> None:
        self._sums[name] += float(value)
        self._counts[name] += count

    def _track(self, correct: bool, out) -> None:
        if not self.model.training:
            return
        w = out.weights
        n = max(w.n, 1)
        self._add("sft_loss", out.sft.item())
        self._add("nlft_loss", out.weighted.item())
        self._add("cluster_fraction", w.cluster.sum().item() / n)
        kind = "correct" if correct else "incorrect"
        self._add(f"{kind}_loss", out.loss.item())
        self._add("salient_fraction" if correct else "blamed_fraction", w.salient_fraction)
        self._add(f"mean_weight_{kind}", w.weight.sum().item(), w.n)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._counts and "loss" in logs:
            stats = torch.tensor(
                [[self._sums[k], float(self._counts[k])] for k in METRICS],
                dtype=torch.float64,
                device=self.args.device,
            )
            if self.args.world_size > 1:
                stats = self.accelerator.reduce(stats, reduction="sum")
            for k, (s, c) in zip(METRICS, stats.tolist()):
                if c:
                    logs[k] = round(s / c, 6)
            self._sums.clear()
            self._counts.clear()
        super().log(logs, start_time)
