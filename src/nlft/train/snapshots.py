"""Saliency snapshots: the probe records' weighting inputs at a training step, for ``nlft studio``.

Snapshots are ``RUN/saliency/step-NNNNNNNN.pt`` files (``torch.save`` of plain tensors, lists and strings, read
back with ``weights_only=True``), written atomically so a reader never sees half a file. ``SaliencySnapshots``
(a ``TrainerCallback``) writes them every K steps through ``NLFTTrainer.score_batch``, so the weights a snapshot
gives are the trainer's weights for that record at that step.
"""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..jsonl import atomic_write_bytes
from ..method.weighting import WeightingConfig
from ..runs import SALIENCY_DIR
from .probes import ProbeRecord

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
_SNAPSHOT_NAME = re.compile(r"step-(\d+)\.pt")


# --------------------------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The probe records' weighting inputs at one training step, and the settings the run trained with."""

    step: int
    records: list[ProbeRecord]
    weighting: WeightingConfig
    epoch: float | None = None
    reference_probs: str = "live"
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "reference_probs": self.reference_probs,
            "created": self.created,
            "weighting": self.weighting.to_dict(),
            "records": [r.to_dict() for r in self.records],
        }


def snapshot_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / SALIENCY_DIR


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    return snapshot_dir(run_dir) / f"step-{step:08d}.pt"


def write_snapshot(run_dir: str | Path, snap: Snapshot) -> Path:
    """Store ``snap`` as ``RUN/saliency/step-N.pt``, atomically (the studio may be reading the folder)."""
    buffer = io.BytesIO()
    torch.save(snap.to_dict(), buffer)
    path = snapshot_path(run_dir, snap.step)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def list_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of every complete snapshot, by step. Temporary files of a write in progress start with '.'."""
    root = snapshot_dir(run_dir)
    found = []
    for path in root.iterdir() if root.is_dir() else []:
        m = _SNAPSHOT_NAME.fullmatch(path.name)
        if m and path.is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot file; a file that is not one is named in the error."""
    path = Path(path)
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises several unrelated types for a damaged or foreign file
        raise ValueError(f"{path}: not a readable saliency snapshot ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{path}: not a saliency snapshot of format {SNAPSHOT_FORMAT}")
    try:
        return Snapshot(
            step=int(data["step"]),
            records=[ProbeRecord.from_dict(r) for r in data["records"]],
            weighting=WeightingConfig(**data["weighting"]),
            epoch=data["epoch"],
            reference_probs=str(data["reference_probs"]),
            created=float(data["created"]),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: damaged saliency snapshot (field {exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: damaged saliency snapshot ({exc})") from None


def find_snapshot(spec: str | Path, step: int | None = None) -> Path:
    """A snapshot file, or the snapshot of ``step`` (default: the newest) of a run folder."""
    spec = Path(spec)
    if spec.is_file():
        return spec
    found = dict(list_snapshots(spec))
    if not found:
        raise FileNotFoundError(
            f"{spec}: no saliency snapshots (saliency/step-N.pt); train with --saliency_steps K"
        )
    if step is None:
        return found[max(found)]
    if step not in found:
        raise FileNotFoundError(
            f"{spec}: no snapshot of step {step} (stored: {', '.join(map(str, sorted(found)))})"
        )
    return found[step]


# --------------------------------------------------------------------------------------------------------------
# The training callback
# --------------------------------------------------------------------------------------------------------------
