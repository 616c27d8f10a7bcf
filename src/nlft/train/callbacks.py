"""Callbacks of a training run that the run folder needs: saving whole epochs atomically, and stopping a resumed
run that has nothing left to train."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import Trainer, TrainerCallback

from ..runs import EPOCHS_DIR


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
