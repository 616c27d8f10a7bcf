"""The run folder: what ``nlft train`` writes and what ``eval``, ``saliency`` and ``studio`` read.

RUN/
  run.json              method, base model, data, template set, max_length, epochs written so far;
                        `nlft eval` reads base_model, method, epochs and, when present, templates
                        (the prompt set) and chat_template (one named instead of the tokenizer's)
  config.yaml           the resolved training configuration (loadable by ``nlft train --config``)
  adapter/              the final LoRA adapter (PEFT ``save_pretrained``) and tokenizer
  model/                instead of adapter/, the full model when trained without LoRA
  epochs/epoch-1/ ...   the adapter (or model) at the end of every epoch
  checkpoint-N/         transformers Trainer checkpoints (optimizer, scheduler, RNG) for --resume
  logs/                 TensorBoard event files
  reference_probs.pt    p_std / p_judge computed before training (reference_probs: cached)
  saliency/             weighting snapshots of the probe records (nlft studio)
  eval/                 evaluation results (nlft eval)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
EPOCHS_DIR = "epochs"
LOGS_DIR = "logs"
SALIENCY_DIR = "saliency"
EVAL_DIR = "eval"
REFERENCE_PROBS_FILE = "reference_probs.pt"


@dataclass
class Checkpoint:
    """Where a model's parameters are: a base model, plus an adapter folder when it was trained with LoRA."""

    base_model: str
    adapter: Path | None = None
    label: str = "final"
    epoch: float | None = None


@dataclass
class Run:
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def base_model(self) -> str:
        return self.info["base_model"]

    @property
    def method(self) -> str:
        return self.info.get("method", "?")

    @property
    def templates(self) -> str | None:
        """The prompt template set training used (a built-in name or a YAML path), if recorded."""
        return self.info.get("templates")

    @property
    def chat_template(self) -> str | None:
        """A chat template named for training instead of the tokenizer's, if recorded."""
        return self.info.get("chat_template")

    def final(self) -> Checkpoint:
        if (self.path / ADAPTER_DIR).is_dir():
            return Checkpoint(self.base_model, self.path / ADAPTER_DIR, "final")
        if (self.path / MODEL_DIR).is_dir():
            return Checkpoint(str(self.path / MODEL_DIR), None, "final")
        raise FileNotFoundError(
            f"{self.path}: no {ADAPTER_DIR}/ or {MODEL_DIR}/ yet (has training finished?)"
        )

    def epochs(self) -> list[Checkpoint]:
        """Every per-epoch save, in epoch order."""
        root = self.path / EPOCHS_DIR
        found = []
        for d in root.glob("epoch-*") if root.is_dir() else []:
            m = re.fullmatch(r"epoch-(\d+(?:\.\d+)?)", d.name)
            if not m or not d.is_dir():
                continue
            epoch = float(m.group(1))
            if (d / "adapter_config.json").exists():
                found.append(Checkpoint(self.base_model, d, d.name, epoch))
            elif (d / "config.json").exists():
                found.append(Checkpoint(str(d), None, d.name, epoch))
        return sorted(found, key=lambda w: w.epoch)


def is_run(path: str | Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def load_run(path: str | Path) -> Run:
    path = Path(path)
    file = path / RUN_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path}: not a run folder (no {RUN_FILE}); train one with `nlft train`")
    return Run(path, json.loads(file.read_text(encoding="utf-8")))


def resolve_checkpoint(model: str, adapter: str | None = None) -> Checkpoint:
    """``model`` may be a hub id, a model folder, an adapter folder or a run folder."""
    path = Path(model)
    if adapter is not None:
        return Checkpoint(model, Path(adapter))
    if is_run(path):
        return load_run(path).final()
    if (path / "adapter_config.json").is_file():
        cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        return Checkpoint(cfg["base_model_name_or_path"], path)
    return Checkpoint(model)
