"""Typed configuration for ``nlft train``: YAML files plus command-line overrides (the trl convention).

Three dataclasses, parsed together by trl's ``TrlParser`` (``nlft train --config x.yaml --learning_rate 1e-4``):

* ``DataConfig``   what to train on and how to turn it into tokens, and which method (nlft | sft);
* ``ModelConfig``  trl's model/LoRA/quantization settings, with NLFT's reference defaults (LoRA r 16, alpha 16,
                   dropout 0.05 on gate/up/down projections);
* ``NLFTConfig``   ``transformers.TrainingArguments`` plus every weighting constant (``WeightingConfig``) and
                   the NLFT loss settings. The SFT baseline reads the same training fields, so both methods
                   share one schedule, seed and LoRA.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments
from trl import ModelConfig as TrlModelConfig

from .weighting import WeightingConfig

ReferenceProbs = Literal["live", "initial", "cached"]


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
            "help": "nlft, or sft: the fair baseline (trl SFTTrainer on the same responses after the X_base prompt).",
            "choices": ["nlft", "sft"],
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
    tiny_model: bool = field(
        default=False,
        metadata={
            "help": "Ignore model_name_or_path: build the embedded tiny random-weight Llama in the run folder (CPU demos, tests)."
        },
    )


@dataclass
class ModelConfig(TrlModelConfig):
    """trl's ``ModelConfig`` with the NLFT reference defaults."""

    dtype: str | None = field(
        default="auto",
        metadata={
            "help": "Weights dtype: auto, bfloat16, float16 or float32.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    use_peft: bool = field(
        default=True, metadata={"help": "Train LoRA adapters (the NLFT reference); false: full fine-tuning."}
    )
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (reference: 16)."})
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Modules that get LoRA adapters (reference: gate_proj up_proj down_proj)."},
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
            "choices": ["live", "initial", "cached"],
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

    # transformers' defaults, changed to what an NLFT run wants (METHOD.md section 8 where it says).
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
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay false: the NLFT collator needs every column."}
    )
    save_only_model: bool = field(
        default=False, metadata={"help": "Keep optimizer/scheduler/RNG in checkpoints (needed to resume)."}
    )

    def __post_init__(self) -> None:
        WeightingConfig.__post_init__(self)
        if self.reference_probs not in ("live", "initial", "cached"):
            raise ValueError(f"reference_probs must be live, initial or cached, not {self.reference_probs!r}")
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


CONFIG_CLASSES = (DataConfig, ModelConfig, NLFTConfig)


def parse_train_args(argv: list[str] | None = None) -> tuple[DataConfig, ModelConfig, NLFTConfig]:
    """``--config file.yaml`` plus ``--field value`` overrides; command-line values win over the file."""
    from trl import TrlParser

    parser = TrlParser(
        CONFIG_CLASSES, prog="nlft train", description="Train with NLFT (or the SFT baseline)."
    )
    data, model, train = parser.parse_args_and_config(argv)
    return data, model, train
