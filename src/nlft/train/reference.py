"""Where p_std and p_judge come from (``reference_probs``, docs/method.md Q6), in one place: the setting's values
and its check, the scoring pass that produces them, and the cache a run keeps of them (``RUN/reference_probs.pt``).

* ``live``     the current model, every step (the reference's behaviour);
* ``initial``  the frozen base model: the same model with its LoRA adapter disabled;
* ``cached``   the base model's probabilities, computed once before training and stored with the run.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from ..jsonl import atomic_write_bytes
from ..prompts import EncodedRecord
from .batches import NLFTCollator, _score_pass, eval_batches

logger = logging.getLogger(__name__)

REFERENCE_PROBS = ("live", "initial", "cached")

Probs = Mapping[
    str, Mapping[str, torch.Tensor | None]
]  # record id -> {"std": p_std, "judge": p_judge or None}


def check_reference_probs(mode: str, model=None, *, allow_cached: bool = True) -> None:
    """``mode`` is one of ``REFERENCE_PROBS`` (``cached`` only where there is a run to cache in), and ``initial``
    (which scores with the adapter disabled) has a LoRA model to disable the adapter of. The one check of the
    setting: the training config, the trainer and ``nlft saliency`` call it."""
    if not allow_cached and mode == "cached":
        raise ValueError("reference_probs must be live or initial here: nothing is cached outside training")
    if mode not in REFERENCE_PROBS:
        raise ValueError(f"reference_probs must be {', '.join(REFERENCE_PROBS)}, not {mode!r}")
    if mode == "initial" and model is not None and not hasattr(model, "disable_adapter"):
        raise ValueError(
            "reference_probs=initial scores with the LoRA adapter disabled, so it needs LoRA (use_peft); "
            "for full fine-tuning use cached, which scores the model as it was before training"
        )


def scoring_probs(
    net,
    inputs: dict,
    *,
    reference_probs: str = "live",
    reference_cache: Probs | None = None,
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


class ReferenceCache:
    """The ``cached`` reference probabilities of one run: p_std (and p_judge for wrong records) of every record
    under the base model, stored in ``path`` with the fingerprint of the records' token sequences and the base
    model they belong to. A stored file of other records or another model, or a damaged one, is computed again,
    never trusted."""

    def __init__(self, path: str | Path | None, records: Sequence[EncodedRecord], model_name: str):
        self.path = Path(path) if path is not None else None
        self.records = list(records)
        self.fingerprint = self.fingerprint_of(self.records, model_name)
        self.probs: Probs | None = self._load()

    @staticmethod
    def fingerprint_of(records: Sequence[EncodedRecord], model_name: str) -> str:
        """Identifies the token sequences and base model that cached reference probabilities belong to."""
        h = hashlib.sha256(model_name.encode())
        for r in records:
            h.update(r.id.encode())
            for kind in r.kinds:
                h.update(bytes(str(r.prompt_ids[kind]), "ascii"))
            h.update(bytes(str(r.response_ids), "ascii"))
        return h.hexdigest()

    def _load(self) -> Probs | None:
        path = self.path
        if path is None or not path.is_file():
            return None
        try:
            stored = torch.load(path, weights_only=True)
        except Exception as exc:  # a damaged file is recomputed, not trusted
            logger.warning("%s: unreadable (%s); computing it again", path, exc)
            return None
        if not isinstance(stored, dict) or stored.get("fingerprint") != self.fingerprint:
            logger.warning("%s belongs to other records or another model; computing it again", path)
            return None
        return stored["records"]

    def ensure(
        self, model, collator: NLFTCollator, *, batch_size: int, chunk_size: int, progress: bool, main: bool
    ) -> Probs:
        """The probabilities: those read back, else computed now with ``model`` (every process alike: sharded
        engines need every rank in every forward) and stored by the ``main`` process."""
        if self.probs is None:
            self.probs = compute_reference_probs(
                model, self.records, collator, batch_size=batch_size, chunk_size=chunk_size, progress=progress
            )
            if self.path is not None and main:
                buffer = io.BytesIO()
                torch.save({"fingerprint": self.fingerprint, "records": self.probs}, buffer)
                atomic_write_bytes(self.path, buffer.getvalue())
        return self.probs


def compute_reference_probs(
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
