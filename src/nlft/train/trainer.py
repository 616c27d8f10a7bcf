"""The NLFT trainer: ``transformers.Trainer`` with the NLFT loss, its collator and callbacks.

Each step scores every record's response under X_base (with gradient; hidden states kept for clustering),
X_std (no gradient) and, for wrong records, X_judge (no gradient), then gives every record its own loss
(``loss.record_loss``) whatever the batch mix (Q2). The batch loss is the mean over records, normalised by the
number of records in the whole accumulated batch across processes, so 1 x batch 4 and 4 x batch 1 take the
same step, and several processes the same step as one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from ..method.loss import record_loss
from ..method.scoring import REFERENCE_PROBS, score_responses
from ..prompts import EncodedRecord
from ..runs import EPOCHS_DIR

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


@dataclass
class NLFTCollator:
    """Right-pads the X_base, X_std and (wrong records only) X_judge sequences of a batch of encoded records."""

    pad_token_id: int

    def _pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids, mask

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        responses = [f["response_ids"] for f in features]
        batch: dict[str, Any] = {
            "ids": [f["id"] for f in features],
            "correct": [bool(f["correct"]) for f in features],
            "response_lens": [len(r) for r in responses],
        }
        for kind in ("base", "std"):
            prompts = [f[f"{kind}_prompt_ids"] for f in features]
            batch[f"{kind}_input_ids"], batch[f"{kind}_attention_mask"] = self._pad(
                [p + r for p, r in zip(prompts, responses)]
            )
            batch[f"{kind}_prompt_lens"] = [len(p) for p in prompts]
        rows = [i for i, f in enumerate(features) if not f["correct"]]
        batch["judge_rows"] = rows
        if rows:
            prompts = [features[i]["judge_prompt_ids"] for i in rows]
            batch["judge_input_ids"], batch["judge_attention_mask"] = self._pad(
                [p + responses[i] for p, i in zip(prompts, rows)]
            )
            batch["judge_prompt_lens"] = [len(p) for p in prompts]
        return batch


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


def records_fingerprint(records: Sequence[EncodedRecord], model_name: str) -> str:
    """Identifies the token sequences and base model that cached reference probabilities belong to."""
    h = hashlib.sha256(model_name.encode())
    for r in records:
        h.update(r.id.encode())
        for kind in r.kinds:
            h.update(bytes(str(r.prompt_ids[kind]), "ascii"))
        h.update(bytes(str(r.response_ids), "ascii"))
    return h.hexdigest()


def check_reference_probs(mode: str, model=None) -> None:
    """``mode`` is one of ``REFERENCE_PROBS``, and ``initial`` (which scores with the adapter disabled) has a
    LoRA model to disable the adapter of."""
    if mode not in REFERENCE_PROBS:
        raise ValueError(f"reference_probs must be {', '.join(REFERENCE_PROBS)}, not {mode!r}")
    if mode == "initial" and model is not None and not hasattr(model, "disable_adapter"):
        raise ValueError(
            "reference_probs=initial scores with the LoRA adapter disabled, so it needs LoRA (use_peft); "
            "for full fine-tuning use cached, which scores the model as it was before training"
        )


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def eval_batches(
    model,
    records: Sequence[EncodedRecord],
    collator: NLFTCollator,
    score: Callable[[dict[str, Any]], Any],
    *,
    batch_size: int = 4,
    progress: bool = False,
    desc: str = "scoring",
) -> Iterator[tuple[list[EncodedRecord], Any]]:
    """``score(batch)`` of each batch of ``records`` (collated, on the model's device), with ``model`` in eval
    mode (no dropout) and without gradient; the model's mode is restored afterwards.

    The one scoring loop outside training steps: the reference-probability cache, the saliency snapshots and
    ``nlft saliency`` all go through it.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=len(records), desc=desc, unit="record", disable=not progress) as bar:
            for start in range(0, len(records), max(batch_size, 1)):
                part = list(records[start : start + max(batch_size, 1)])
                batch = to_device(collator([r.to_features() for r in part]), device)
                yield part, score(batch)
                bar.update(len(part))
    finally:
        model.train(was_training)


def compute_reference_cache(
    model,
    records: Sequence[EncodedRecord],
    collator: NLFTCollator,
    *,
    batch_size: int = 4,
    chunk_size: int = 1024,
    progress: bool = True,
) -> dict[str, dict[str, torch.Tensor | None]]:
    """p_std (and p_judge for wrong records) of every record under the frozen base model (adapter disabled).

    For ``reference_probs: cached``: computed once before training, stored with the run, reused on resume.
    """
    mode = "initial" if hasattr(model, "disable_adapter") else "live"  # before training, live is the base

    def score(batch):
        return scoring_probs(model, batch, reference_probs=mode, chunk_size=chunk_size)

    cache: dict[str, dict[str, torch.Tensor | None]] = {}
    by_width = sorted(records, key=lambda r: r.width)  # neighbours of similar length: little padding
    for part, (p_std, p_judge) in eval_batches(
        model, by_width, collator, score, batch_size=batch_size, progress=progress, desc="reference probs"
    ):
        for i, rec in enumerate(part):
            judge = p_judge.get(i)
            cache[rec.id] = {"std": p_std[i].cpu(), "judge": judge.cpu() if judge is not None else None}
    return cache


def _pass(inputs: dict, parts: list[tuple[str, int]], pad_id: int = 0):
    """One padded batch of the (kind, record row) sequences in ``parts``: (input_ids, attention_mask,
    prompt_lens, response_lens). The sequences of one forward: the X_base rows (and, with ``incorrect_sft: judge``,
    the X_judge rows) of the training pass, or the X_std and X_judge rows of the scoring pass."""
    judge_at = {row: i for i, row in enumerate(inputs["judge_rows"])}
    seqs, prompt_lens, response_lens = [], [], []
    for kind, row in parts:
        i = judge_at[row] if kind == "judge" else row
        mask = inputs[f"{kind}_attention_mask"][i]
        seqs.append(inputs[f"{kind}_input_ids"][i, : int(mask.sum())])
        prompt_lens.append(inputs[f"{kind}_prompt_lens"][i])
        response_lens.append(inputs["response_lens"][row])
    width = max(len(x) for x in seqs)
    ids = seqs[0].new_full((len(seqs), width), pad_id)
    mask = torch.zeros_like(ids)
    for r, x in enumerate(seqs):
        ids[r, : len(x)] = x
        mask[r, : len(x)] = 1
    return ids, mask, prompt_lens, response_lens


def _score_pass(
    model, inputs: dict, parts, chunk_size: int, *, want_hidden: bool = False
) -> list[torch.Tensor]:
    ids, mask, prompt_lens, response_lens = _pass(inputs, parts)
    scored = score_responses(
        model, ids, mask, prompt_lens, response_lens, want_hidden=want_hidden, chunk_size=chunk_size
    )
    return scored


def scoring_probs(
    net,
    inputs: dict,
    *,
    reference_probs: str = "live",
    reference_cache: dict[str, dict[str, torch.Tensor]] | None = None,
    chunk_size: int = 1024,
) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
    """p_std for every record and p_judge for the wrong ones (by batch row), by ``reference_probs`` (Q6).

    One forward without gradient scores the X_std and X_judge sequences together: every process runs exactly
    one, whatever mix of records its batch holds, so sharded engines see the same collectives everywhere.
    """
    rows = inputs["judge_rows"]
    if reference_probs == "cached":
        if reference_cache is None:
            raise ValueError("reference_probs=cached needs the cached probabilities")
        device = inputs["base_input_ids"].device
        entries = [reference_cache[i] for i in inputs["ids"]]
        p_std = [e["std"].to(device) for e in entries]
        return p_std, {r: entries[r]["judge"].to(device) for r in rows}
    check_reference_probs(reference_probs, net)
    adapter_off = net.disable_adapter() if reference_probs == "initial" else nullcontext()
    n = len(inputs["ids"])
    parts = [("std", r) for r in range(n)] + [("judge", r) for r in rows]
    was_training = net.training
    net.eval()  # scoring probabilities without dropout
    try:
        with torch.no_grad(), adapter_off:
            probs = [lp.exp() for lp in _score_pass(net, inputs, parts, chunk_size).split()]
    finally:
        net.train(was_training)
    return probs[:n], dict(zip(rows, probs[n:]))


def batch_scores(
    model,
    inputs: dict,
    *,
    reference_probs: str = "live",
    reference_cache: dict[str, dict[str, torch.Tensor]] | None = None,
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

    def __init__(
        self,
        *args,
        reference_cache: dict[str, dict[str, torch.Tensor]] | None = None,
        reference_records: Sequence[EncodedRecord] | None = None,
        reference_file: str | Path | None = None,
        reference_fingerprint: str = "",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.weighting = self.args.weighting()
        self.reference_cache = reference_cache
        self._reference = (list(reference_records or []), reference_file, reference_fingerprint)
        if self.args.reference_probs == "cached" and reference_cache is None and not reference_records:
            raise ValueError(
                "reference_probs=cached needs the cached probabilities or the records to compute them"
            )
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def _ensure_reference_cache(self, model) -> None:
        """``reference_probs: cached``: the base model's p_std/p_judge of every record, computed at the first step
        through the prepared model, by every process alike (sharded engines need every rank in every forward);
        the main process stores them with the run."""
        if self.args.reference_probs != "cached" or self.reference_cache is not None:
            return
        import io

        from ..jsonl import atomic_write_bytes

        records, path, fingerprint = self._reference
        self.reference_cache = compute_reference_cache(
            self.accelerator.unwrap_model(model),
            records,
            self.data_collator,
            batch_size=self.args.per_device_eval_batch_size,
            chunk_size=self.args.logits_chunk_size,
            progress=self.is_world_process_zero() and not self.args.disable_tqdm,
        )
        if path is not None and self.is_world_process_zero():
            buffer = io.BytesIO()
            torch.save({"fingerprint": fingerprint, "records": self.reference_cache}, buffer)
            atomic_write_bytes(path, buffer.getvalue())

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
        self._ensure_reference_cache(model)
        return batch_scores(
            model,
            inputs,
            reference_probs=self.args.reference_probs,
            reference_cache=self.reference_cache,
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


def load_reference_cache(path: Path, fingerprint: str) -> dict[str, dict[str, torch.Tensor | None]] | None:
    """The cached reference probabilities stored in ``path``, if they belong to ``fingerprint`` (records + model)."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, weights_only=True)
    except Exception as exc:  # a damaged file is recomputed, not trusted
        logger.warning("%s: unreadable (%s); computing it again", path, exc)
        return None
    if not isinstance(stored, dict) or stored.get("fingerprint") != fingerprint:
        logger.warning("%s belongs to other records or another model; computing it again", path)
        return None
    return stored["records"]


class TrainerAware(TrainerCallback):
    """A callback that needs the trainer it runs in (to save through it, or to score with it); ``nlft.train.run``
    binds it once the trainer exists."""

    trainer: Trainer | None = None

    def bind(self, trainer: Trainer) -> None:
        self.trainer = trainer


def save_atomically(trainer: Trainer, target: str | Path) -> Path:
    """``trainer.save_model`` into ``target`` so that it appears whole or not at all: written beside it as
    ``.<name>.partial`` and renamed (a kill mid-save leaves only that temporary folder, of our own naming, which
    the next save replaces). Every process calls it (sharded engines gather the weights); the main one writes."""
    import shutil

    target = Path(target)
    partial = target.with_name(f".{target.name}.partial")
    main = trainer.is_world_process_zero()
    if main and partial.is_dir() and not partial.is_symlink():
        shutil.rmtree(partial)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(partial))
    if main:
        if target.is_dir() and not target.is_symlink():
            old = target.with_name(f".{target.name}.old")
            if old.is_dir():
                shutil.rmtree(old)
            os.rename(target, old)
            os.rename(partial, target)
            shutil.rmtree(old)
        else:
            os.rename(partial, target)
    trainer.accelerator.wait_for_everyone()
    return target


class SaveEveryEpoch(TrainerAware):
    """Saves the adapter (or model) at each whole epoch's end to ``RUN/epochs/epoch-N`` (the reference did too).

    A run that ends inside an epoch (``max_steps``) saves no ``epoch-N`` for that part: its last weights are the
    run's own. A run resumed from the checkpoint of an epoch's last step writes that epoch's save if a kill took
    it (the checkpoint is saved before the epoch's end is reached)."""

    def __init__(self, run_dir: str | Path, on_saved=None):
        self.run_dir = Path(run_dir)
        self.on_saved = on_saved

    @staticmethod
    def whole_epoch(state) -> int | None:
        epoch = state.epoch or 0.0
        return int(round(epoch)) if epoch >= 1 and abs(epoch - round(epoch)) < 1e-6 else None

    def _save(self, state, epoch: int) -> None:
        target = self.run_dir / EPOCHS_DIR / f"epoch-{epoch}"
        save_atomically(self.trainer, target)
        if self.on_saved is not None and state.is_world_process_zero:
            self.on_saved(epoch, target)

    def on_train_begin(self, args, state, control, **kwargs):
        epoch = self.whole_epoch(state) if state.global_step > 0 else None
        if epoch is None:
            return control
        missing = state.is_world_process_zero and not (self.run_dir / EPOCHS_DIR / f"epoch-{epoch}").is_dir()
        if args.world_size > 1:  # every process takes part in the save, so all must decide alike
            from accelerate.utils import broadcast_object_list

            box = [missing]
            broadcast_object_list(box, from_process=0)
            missing = box[0]
        if missing:
            self._bound()
            self._save(state, epoch)
        return control

    def _bound(self) -> None:
        if self.trainer is None:
            raise RuntimeError("SaveEveryEpoch needs its trainer (bind it)")

    def on_epoch_end(self, args, state, control, **kwargs):
        self._bound()
        epoch = self.whole_epoch(state)
        if epoch is not None:
            self._save(state, epoch)
        return control


class PlannedStepsDone(Exception):
    """Raised by ``StopWhenDone``: the resumed checkpoint is the run's last step; there is nothing left to train."""


class StopWhenDone(TrainerCallback):
    """transformers, resumed from a checkpoint saved at the run's last step where that step is inside an epoch
    (``max_steps``), trains one step more: its loop looks for the end only after a step. This stops it before that
    step, once the checkpoint's weights are loaded (``on_train_begin``); ``nlft.train.run`` then saves them. Put it
    after the callbacks that act at the start of training."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise PlannedStepsDone(state.global_step)
        return control
