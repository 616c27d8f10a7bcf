"""Callbacks of a training run: saving whole epochs atomically, stopping a resumed run that has nothing left to
train, and the saliency snapshots of the probe records that ``nlft studio`` shows (their file format is
``snapshots``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from transformers import Trainer, TrainerCallback

from ..prompts import EncodedRecord
from ..records import Record
from ..runs import EPOCHS_DIR
from .batches import eval_batches
from .probes import ProbeRecord, probe_records
from .snapshots import Snapshot, write_snapshot

logger = logging.getLogger(__name__)


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


def choose_probe(records: Sequence[EncodedRecord], k: int) -> list[EncodedRecord]:
    """``k`` records to follow, wrong and correct alternating in data order, so that both kinds are shown."""
    wrong = [r for r in records if not r.correct]
    right = [r for r in records if r.correct]
    out: list[EncodedRecord] = []
    while len(out) < k and (wrong or right):
        for pool in (wrong, right):
            if pool and len(out) < k:
                out.append(pool.pop(0))
    return out


class SaliencySnapshots(TrainerAware):
    """Every ``every`` optimizer steps (and at the start and the end of training) stores a ``Snapshot`` of the
    probe records in ``RUN/saliency/``, scored by the trainer's own ``score_batch``.

    The model is scored in eval mode without gradient, so dropout does not make the snapshot random, by every
    process alike — under sharded engines (FSDP, ZeRO-3) each forward gathers parameters from all of them — and
    the main process writes the file. ``nlft.train.run`` binds the ``NLFTTrainer``.
    """

    def __init__(
        self, run_dir: str | Path, probe: Sequence[EncodedRecord], texts: dict[str, Record], every: int
    ):
        if every < 1:
            raise ValueError(f"saliency snapshots every {every} steps: must be at least 1")
        missing = [r.id for r in probe if r.id not in texts]
        if missing:
            raise ValueError(f"saliency probe records without their text: {', '.join(missing)}")
        self.run_dir = Path(run_dir)
        self.probe = list(probe)
        self.texts = texts
        self.every = every
        self._last_step: int | None = None

    def snapshot(self, step: int, epoch: float | None, write: bool = True) -> Path | None:
        trainer = self.trainer
        if trainer is None or not hasattr(trainer, "score_batch"):
            raise RuntimeError("SaliencySnapshots needs its NLFTTrainer (set .trainer)")
        model = trainer.model
        records: list[ProbeRecord] = []
        for part, scores in eval_batches(
            model,
            self.probe,
            trainer.data_collator,
            lambda batch: trainer.score_batch(model, batch),
            batch_size=trainer.args.per_device_train_batch_size,
        ):
            records += probe_records(scores, part, self.texts, trainer.processing_class)
        snap = Snapshot(
            step=step,
            records=records,
            weighting=trainer.weighting,
            epoch=epoch,
            reference_probs=trainer.args.reference_probs,
        )
        self._last_step = step
        if not write:
            return None
        path = write_snapshot(self.run_dir, snap)
        logger.debug("saliency snapshot of step %d: %s", step, path)
        return path

    def on_train_begin(self, args, state, control, **kwargs):
        self.snapshot(state.global_step, state.epoch, write=state.is_world_process_zero)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.snapshot(state.global_step, state.epoch, write=state.is_world_process_zero)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._last_step != state.global_step:
            self.snapshot(state.global_step, state.epoch, write=state.is_world_process_zero)
        return control


def snapshot_callback(
    run_dir: str | Path, records: Sequence[EncodedRecord], texts: Sequence[Record], every: int, probe: int
) -> SaliencySnapshots:
    """The callback ``nlft train`` adds when ``saliency_steps > 0``: ``probe`` of ``records`` every ``every`` steps."""
    if probe < 1:
        raise ValueError(f"saliency_probe must be at least 1, got {probe}")
    chosen = choose_probe(records, probe)
    wanted = {r.id for r in chosen}
    return SaliencySnapshots(run_dir, chosen, {t.id: t for t in texts if t.id in wanted}, every)
