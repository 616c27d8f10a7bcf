"""Typed configuration for ``nlft train``: YAML files plus command-line overrides (the trl convention).

Three dataclasses (and the settings class of each method that has one, ``methods.METHODS``), parsed together
by trl's ``TrlParser`` (``nlft train --config x.yaml --learning_rate 1e-4``):

* ``DataConfig``   what to train on and how to turn it into tokens, and which method (``methods.METHODS``);
* ``ModelConfig``  trl's model/LoRA/quantization settings, with NLFT's reference defaults (LoRA r 16, alpha 16,
                   dropout 0.05 on gate/up/down projections);
* ``NLFTConfig``   ``transformers.TrainingArguments`` plus every weighting constant (``WeightingConfig``) and
                   the NLFT loss settings. The SFT baseline reads the same training fields, so both methods
                   share one schedule, seed and LoRA.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field

from transformers import TrainingArguments
from trl import ModelConfig as TrlModelConfig

from ..method.weighting import WeightingConfig
from ..models.loading import DTYPES
from ..tasks import task_names
from .methods import METHODS, settings_classes
from .reference import REFERENCE_PROBS, check_reference_probs


@dataclass
class DataConfig:
    data: str | None = field(
        default=None,
        metadata={
            "help": "Training records (nlft.jsonl from `nlft data build`, any JSON/JSONL, a saved HF dataset or a hub id)."
        },
    )
    data_split: str = field(default="train", metadata={"help": "Split, for Hugging Face datasets."})
    method: str = field(
        default="nlft",
        metadata={
            "help": "The training method: "
            + "; ".join(f"{m.name}: {m.help}" for m in METHODS.values())
            + ".",
            "choices": list(METHODS),
        },
    )
    task: str = field(
        default="gsm8k",
        metadata={
            "help": "The task whose grader scores answers during training (the reward of on-policy methods such as "
            "grpo): its gold answers are the records' references. gsm8k and mini-math both grade '#### N' numbers.",
            "choices": list(task_names()),
        },
    )
    templates: str = field(
        default="math", metadata={"help": "Prompt template set: math, generic or a YAML file."}
    )
    chat_template: str | None = field(
        default=None, metadata={"help": "Chat template for tokenizers without one: 'llama3' or a Jinja file."}
    )
    eos_token: str | None = field(
        default=None, metadata={"help": "Token that ends a response (default: the tokenizer's EOS)."}
    )
    max_length: int = field(
        default=2048,
        metadata={"help": "Longest sequence; prompts are cut from the left to fit, responses never."},
    )
    skip_invalid: bool = field(
        default=False,
        metadata={
            "help": "Skip and count bad records (empty response, no room for the response, ...) instead of stopping."
        },
    )


@dataclass
class ModelConfig(TrlModelConfig):
    """trl's ``ModelConfig`` with the NLFT reference defaults."""

    dtype: str | None = field(
        default="auto",
        metadata={
            "help": "Weights dtype: " + ", ".join(DTYPES) + ".",
            "choices": list(DTYPES),
        },
    )
    use_peft: bool = field(
        default=True, metadata={"help": "Train LoRA adapters (the NLFT reference); false: full fine-tuning."}
    )
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (reference: 16)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Modules that get LoRA adapters. Default: the MLP projections of the architecture (the reference's "
            "gate_proj up_proj down_proj on Llama; gate_up_proj down_proj on Phi-3; c_fc c_proj of GPT-2's MLP)."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code from the hub (off unless you trust it)."}
    )


@dataclass
class NLFTConfig(TrainingArguments, WeightingConfig):
    """Training arguments for NLFT (and the SFT baseline): transformers' plus the NLFT settings."""

    loss_scale: float = field(
        default=10.0,
        metadata={
            "help": "Each record's loss is multiplied by this (reference 10; note it interacts with max_grad_norm, Q9)."
        },
    )
    reference_probs: str = field(
        default="live",
        metadata={
            "help": "Where p_std/p_judge come from: live (the current model each step, as the reference), initial (the "
            "frozen base model: adapter disabled), cached (computed once before training, stored in the run folder).",
            "choices": list(REFERENCE_PROBS),
        },
    )
    incorrect_sft: str = field(
        default="none",
        metadata={
            "help": "SFT term for wrong records: none (default), or judge: -mean log P(y|X_judge) aligned (the reference's term was misaligned, Q1).",
            "choices": ["none", "judge"],
        },
    )
    uniform_weights: bool = field(
        default=False,
        metadata={
            "help": "Ablation: every token weight 1 and no NLFT terms (plain SFT through the NLFT trainer)."
        },
    )
    logits_chunk_size: int = field(
        default=1024,
        metadata={
            "help": "Response tokens per output-head chunk: bounds the [tokens, vocab] logits held at once."
        },
    )
    saliency_steps: int = field(
        default=0,
        metadata={
            "help": "Every this many steps store the probe records' weighting inputs for `nlft studio` (0: off)."
        },
    )
    saliency_probe: int = field(
        default=4, metadata={"help": "How many records the saliency snapshots follow."}
    )
    live_weighting: bool = field(
        default=True,
        metadata={
            "help": "Let `nlft studio` change this run's weighting while it trains (applied at the next step, "
            "recorded with its step in weighting-schedule.json, named in config.yaml)."
        },
    )
    weighting_schedule: str | None = field(
        default=None,
        metadata={
            "help": "Weighting changes by step, replayed as the run trains: a JSON/YAML file or an inline JSON list "
            'of {"step": N, "settings": {...}} (what the studio\'s "apply to this run" records).'
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the run already in output_dir (its run.json, adapter, epochs, checkpoints, logs, "
            "snapshots and evaluations); without it an existing run is never replaced."
        },
    )

    # transformers' defaults, changed to what an NLFT run wants (docs/method.md section 8 where it says).
    output_dir: str | None = field(default="runs/nlft", metadata={"help": "The run folder."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (reference 5e-5)."})
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "Learning-rate schedule (reference cosine)."}
    )
    warmup_steps: float = field(
        default=0.1, metadata={"help": "Warmup: steps, or a fraction of all steps when < 1 (reference 10%%)."}
    )
    num_train_epochs: float = field(default=10.0, metadata={"help": "Epochs (reference 10)."})
    per_device_train_batch_size: int = field(
        default=1, metadata={"help": "Records per micro-batch and device."}
    )
    gradient_accumulation_steps: int = field(
        default=4, metadata={"help": "Micro-batches per optimizer step (reference: effective batch 4)."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every this many steps."})
    save_strategy: str = field(
        default="epoch", metadata={"help": "When to write resumable checkpoints: epoch, steps or no."}
    )
    report_to: None | str | list[str] = field(
        default="tensorboard", metadata={"help": "tensorboard (default), wandb, all or none."}
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "Record order: group_by_length (default: with per-device batches above 1, records of similar "
            "length share a micro-batch so the three passes pad less; with batch 1 nothing is padded and the "
            "order is random), random, sequential or batch_rebalance.",
            "choices": ["group_by_length", "random", "sequential", "batch_rebalance"],
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay false: the NLFT collator needs every column."}
    )
    save_only_model: bool = field(
        default=False, metadata={"help": "Keep optimizer/scheduler/RNG in checkpoints (needed to resume)."}
    )

    def __post_init__(self) -> None:
        WeightingConfig.__post_init__(self)
        check_reference_probs(self.reference_probs)
        if self.incorrect_sft not in ("none", "judge"):
            raise ValueError(f"incorrect_sft must be none or judge, not {self.incorrect_sft!r}")
        if self.logits_chunk_size < 1:
            raise ValueError("logits_chunk_size must be at least 1")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not self.use_cpu:
            import torch

            # Launched as several processes on a machine without GPUs: accelerate forms a gloo process group
            # only for CPU training; without it every process would train alone on all the data.
            if not torch.cuda.is_available():
                self.use_cpu = True
        super().__post_init__()

    def weighting(self) -> WeightingConfig:
        return WeightingConfig.from_object(self)

    def nlft_settings(self) -> dict:
        """The NLFT-specific fields (weighting + loss), for run.json and the studio's YAML export."""
        names = set(WeightingConfig.names()) | {
            "loss_scale",
            "reference_probs",
            "incorrect_sft",
            "uniform_weights",
        }
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in names}


CONFIG_CLASSES = (DataConfig, ModelConfig, NLFTConfig, *settings_classes())


def _field_types(annotation: str) -> set[type] | None:
    """The plain Python types a YAML value of a field with ``annotation`` may have (None: anything goes)."""
    tokens = set(re.findall(r"[A-Za-z_]+", annotation))
    known = {
        "str": str,
        "int": int,
        "float": float,
        "bool": bool,
        "list": list,
        "dict": dict,
        "None": type(None),
    }
    if "Any" in tokens or not tokens & set(known):
        return None
    types = {known[t] for t in tokens if t in known}
    if tokens - set(known) - {"Literal"}:  # an enum or a class: given by its name in YAML
        types.add(str)
    return types


def _check_value(name: str, value, annotation: str, where: str) -> None:
    types = _field_types(annotation)
    if types is None or value is None and type(None) in types:
        return
    if isinstance(value, bool):
        ok = bool in types
    elif isinstance(value, (int, float)):
        ok = bool({int, float} & types) and (float in types or isinstance(value, int))
    elif isinstance(value, str):
        ok = str in types
        for number in (int, float):  # YAML 1.1 reads 1e-4 as a string; argparse converts it as from the CLI
            if not ok and number in types:
                try:
                    number(value)
                    ok = True
                except ValueError:
                    pass
    else:
        ok = type(value) in types
    if not ok:
        expected = " or ".join(sorted(t.__name__ if t is not type(None) else "null" for t in types))
        raise ValueError(f"{where}: setting '{name}' must be {expected}, not {value!r}")


def read_config_file(path: str | os.PathLike) -> dict:
    """A training config (YAML) checked against the settings: every key known, every value of the right kind.

    Named errors instead of what trl or transformers would raise later (unknown keys in developer terms, a
    ``TypeError`` deep in ``TrainingArguments``)."""
    import difflib

    from ..files import read_yaml

    data = read_yaml(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file is a YAML mapping of settings, e.g. 'learning_rate: 1.0e-4'")
    fields = {f.name: f for cls in CONFIG_CLASSES for f in dataclasses.fields(cls) if f.init}
    for key, value in data.items():
        if key == "env":  # trl's: environment variables to set
            if not isinstance(value, dict):
                raise ValueError(f"{path}: 'env' must be a mapping of environment variables")
            continue
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else " (see nlft train --help)"
            raise ValueError(f"{path}: unknown setting '{key}'{hint}")
        _check_value(str(key), value, str(fields[key].type), str(path))
    return data


# More epochs than anyone trains for; beyond it the step count overflows (1e308 epochs: an OverflowError).
MAX_EPOCHS = 1_000_000


def validate_training_config(data: DataConfig, model: ModelConfig, train: NLFTConfig) -> None:
    """Ranges the dataclasses do not check themselves, checked before anything is written."""

    def need(ok: bool, name: str, what: str, value) -> None:
        if not ok:
            raise ValueError(f"--{name} must be {what}, got {value!r}")

    def whole(name: str, low: int, obj) -> None:
        value = getattr(obj, name)
        need(
            isinstance(value, int) and not isinstance(value, bool) and value >= low,
            name,
            f"a whole number >= {low}",
            value,
        )

    for name in (
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "logits_chunk_size",
        "saliency_probe",
    ):
        whole(name, 1, train)
    whole("saliency_steps", 0, train)
    if train.weighting_schedule:
        from .live import load_schedule

        load_schedule(train.weighting_schedule)  # a bad schedule fails before anything is loaded
    whole("max_length", 2, data)
    need(model.dtype in (None, *DTYPES), "dtype", f"one of {', '.join(DTYPES)}", model.dtype)
    need(
        train.max_steps == -1 or train.max_steps >= 1,
        "max_steps",
        "-1 (use num_train_epochs) or at least 1",
        train.max_steps,
    )
    if train.max_steps == -1:
        epochs = train.num_train_epochs
        need(
            math.isfinite(epochs) and 0 < epochs <= MAX_EPOCHS,
            "num_train_epochs",
            f"more than 0 and at most {MAX_EPOCHS:,} (or set max_steps)",
            epochs,
        )
    need(
        math.isfinite(train.learning_rate) and train.learning_rate >= 0,
        "learning_rate",
        "a finite number >= 0",
        train.learning_rate,
    )
    need(
        math.isfinite(train.loss_scale) and train.loss_scale > 0,
        "loss_scale",
        "a finite number > 0",
        train.loss_scale,
    )
    if isinstance(train.output_dir, str):
        need(bool(train.output_dir.strip()), "output_dir", "a folder", train.output_dir)
    else:
        need(False, "output_dir", "a folder (a string)", train.output_dir)
    if model.use_peft:
        need(model.lora_r >= 1, "lora_r", "a whole number >= 1", model.lora_r)
        need(model.lora_alpha > 0, "lora_alpha", "more than 0", model.lora_alpha)
        need(0 <= model.lora_dropout < 1, "lora_dropout", "in [0, 1)", model.lora_dropout)
        targets = model.lora_target_modules
        need(
            targets is None
            or isinstance(targets, str)
            or (isinstance(targets, list) and all(isinstance(t, str) for t in targets)),
            "lora_target_modules",
            "a list of module names (or all-linear)",
            targets,
        )


def parse_train_args(argv: list[str] | None = None) -> tuple[DataConfig, ModelConfig, NLFTConfig]:
    """``--config file.yaml`` plus ``--field value`` overrides; command-line values win over the file.

    The settings of methods that have their own (``methods.Method.settings_class``) are parsed too; get them
    with ``parse_train_config``."""
    return parse_train_config(argv)[:3]


def parse_train_config(argv: list[str] | None = None) -> tuple:
    """(DataConfig, ModelConfig, NLFTConfig, *the methods' settings objects) from ``argv``."""
    from trl import TrlParser

    argv = list(argv) if argv is not None else []
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise ValueError("--config needs a file")
        read_config_file(
            argv[at + 1]
        )  # named errors for what trl and transformers would raise about it later
    parser = TrlParser(
        CONFIG_CLASSES, prog="nlft train", description="Train with NLFT or one of its baselines."
    )
    parsed = tuple(parser.parse_args_and_config(argv))
    validate_training_config(*parsed[:3])
    return parsed


def load_weighting_file(path: str | os.PathLike) -> dict:
    """The weighting fields of a YAML file: one that ``nlft studio`` wrote, or any ``nlft train`` config.

    Other training fields are passed over; a key that is no field at all (a typo) is an error naming the file,
    and so is a weighting value outside its valid range.
    """
    from ..files import read_yaml

    data = read_yaml(path, "weighting file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of weighting fields, e.g. 'threshold: 1.5'")
    names = WeightingConfig.names()
    known = {f.name for cls in CONFIG_CLASSES for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ValueError(
            f"{path}: unknown field(s) {', '.join(unknown)} (weighting fields: {', '.join(names)})"
        )
    return WeightingConfig.coerce_mapping({k: v for k, v in data.items() if k in names}, str(path))


def resolve_weighting(
    base: WeightingConfig, file: str | os.PathLike | None = None, overrides: dict | None = None
) -> WeightingConfig:
    """``base``, then the fields of ``file``, then ``overrides`` (e.g. command-line flags; None means unset)."""
    cfg = base.replace(load_weighting_file(file)) if file is not None else base
    return cfg.replace({k: v for k, v in (overrides or {}).items() if v is not None}, "weighting settings")
