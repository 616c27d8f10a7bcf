"""The run folder: what ``nlft train`` writes and what ``eval``, ``saliency`` and ``studio`` read.

RUN/
  run.json              method, base model, data, template set, max_length, epochs written so far
                        (local paths are stored absolute, or "./name" for what lies inside the run folder, so
                        that a run is read the same from any directory);
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


def stored_path(value: str, run_dir: Path) -> str:
    """How run.json stores a model or data reference: hub ids and built-in names as they are, local paths
    absolute, or relative to the run folder ("./name") when they lie inside it (the folder can then move)."""
    path = Path(value).expanduser()
    if not path.exists():
        return value
    path = path.resolve()
    root = run_dir.resolve()
    if path.is_relative_to(root):
        return "./" + str(path.relative_to(root))
    return str(path)


def resolve_stored(value: str, run_dir: Path) -> str:
    """The inverse of ``stored_path``: "./name" becomes a path inside the run folder."""
    if value.startswith("./"):
        return str(run_dir / value[2:])
    return value


@dataclass
class Run:
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def base_model(self) -> str:
        if not isinstance(self.info.get("base_model"), str):
            raise ValueError(f"{self.path / RUN_FILE}: damaged run file: no 'base_model'")
        return resolve_stored(self.info["base_model"], self.path)

    @property
    def data(self) -> str | None:
        data = self.info.get("data")
        return resolve_stored(data, self.path) if isinstance(data, str) else None

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
    from .files import read_json

    path = Path(path)
    file = path / RUN_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path}: not a run folder (no {RUN_FILE}); train one with `nlft train`")
    info = read_json(file, "run file")
    if not isinstance(info, dict):
        raise ValueError(f"{file}: damaged run file: not a JSON object")
    return Run(path, info)


def _owning_run(folder: Path) -> Run | None:
    """The run an adapter folder belongs to (RUN/adapter, RUN/checkpoint-N, RUN/epochs/epoch-N), if any."""
    if folder.name == ADAPTER_DIR or folder.name.startswith("checkpoint-"):
        candidate = folder.parent
    elif folder.parent.name == EPOCHS_DIR:
        candidate = folder.parent.parent
    else:
        return None
    return load_run(candidate) if is_run(candidate) else None


def resolve_checkpoint(model: str, adapter: str | None = None) -> Checkpoint:
    """``model`` may be a hub id, a model folder, an adapter folder or a run folder."""
    from .files import read_json

    path = Path(model)
    if adapter is not None:
        return Checkpoint(model, Path(adapter))
    if is_run(path):
        return load_run(path).final()
    if (path / "adapter_config.json").is_file():
        run = _owning_run(path)
        if run is not None:  # its adapter_config.json holds the base as the training cwd saw it
            return Checkpoint(run.base_model, path)
        cfg = read_json(path / "adapter_config.json", "adapter config")
        base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
        if not isinstance(base, str) or not base:
            raise ValueError(
                f"{path / 'adapter_config.json'}: damaged adapter config: no 'base_model_name_or_path'"
            )
        return Checkpoint(base, path)
    return Checkpoint(model)
