"""``nlft train``: load records and model, train with NLFT or the SFT baseline, and write the run folder.

Both methods go through the same steps — the same records, tokens, LoRA, schedule and seed — and differ only
in the trainer: ``NLFTTrainer`` for NLFT, trl's ``SFTTrainer`` (its default loss) for the baseline, fed the
X_base prompt + response ids that NLFT trains on (METHOD.md Q8).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import DataConfig, ModelConfig, NLFTConfig
from .jsonl import atomic_write_bytes, atomic_write_json, atomic_write_text
from .prompts import EncodeResult, RecordEncoder
from .records import RecordError, load_records
from .runs import ADAPTER_DIR, LOGS_DIR, MODEL_DIR, REFERENCE_PROBS_FILE, RUN_FILE
from .tiny import SAMPLE_RECORDS, save_tiny_model

logger = logging.getLogger(__name__)

TINY_MODEL = "nlft:tiny"  # the embedded tiny random-weight Llama, built into the run folder
SAMPLE_DATA = "nlft:sample"  # the bundled sample records
CONFIG_FILE = "config.yaml"


@dataclass
class TrainResult:
    run_dir: Path
    method: str
    global_step: int
    metrics: dict[str, Any]
    records: int
    skipped: int
    seconds: float
    log_history: list[dict[str, Any]]


def resolve_data(spec: str | None) -> str:
    if not spec:
        raise ValueError("no training data: pass --data (records from `nlft data build`, or nlft:sample)")
    return str(SAMPLE_RECORDS) if spec == SAMPLE_DATA else spec


def prepare_records(data: DataConfig, tokenizer) -> tuple[EncodeResult, int, list[str]]:
    """Load, validate and encode the training records. Bad records stop the run naming their ids, unless
    ``skip_invalid`` — then they are skipped and counted. Returns (encoded, n_loaded, skipped descriptions)."""
    records = load_records(resolve_data(data.data), skip_invalid=data.skip_invalid, split=data.data_split)
    encoder = RecordEncoder(
        tokenizer,
        data.templates,
        max_length=data.max_length,
        on_overlong="skip" if data.skip_invalid else "error",
        chat_template=data.chat_template,
        eos_token=data.eos_token,
    )
    result = encoder.encode_all(records, skip_invalid=data.skip_invalid)
    skipped = [str(p) for p in records.skipped] + [str(p) for p in result.skipped]
    if not result.records:
        raise RecordError([], hint=f"no usable records in {data.data} ({len(skipped)} skipped)")
    return result, len(records), skipped


def _check_quantization(model_cfg: ModelConfig) -> None:
    if not (model_cfg.load_in_4bit or model_cfg.load_in_8bit):
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ValueError(
            "load_in_4bit / load_in_8bit need a CUDA GPU (bitsandbytes); train in bf16/fp32 on this machine"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("load_in_4bit / load_in_8bit need bitsandbytes: pip install 'nlft[quantization]'")


def load_training_model(model_cfg: ModelConfig, train_cfg: NLFTConfig, run_dir: Path):
    """(model with LoRA attached unless full fine-tuning, tokenizer, base model name)."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, enable_full_determinism, set_seed
    from trl import get_peft_config, get_quantization_config

    from .modeling import load_tokenizer, torch_dtype

    # Seed before the LoRA matrices are drawn: the Trainer seeds only later, and a run must follow from its seed.
    (enable_full_determinism if train_cfg.full_determinism else set_seed)(train_cfg.seed)

    name = model_cfg.model_name_or_path
    if not name:
        raise ValueError(
            "no model: pass --model_name_or_path (a hub id or folder), or nlft:tiny for the embedded tiny model"
        )
    if name == TINY_MODEL:
        target = run_dir / "base-model"
        with train_cfg.main_process_first(desc="building the tiny model"):
            if not (target / "config.json").exists():
                # Written beside and renamed: other processes never see half a model.
                partial = run_dir / f".base-model.{os.getpid()}"
                save_tiny_model(partial, seed=train_cfg.seed)
                os.replace(partial, target)
        name = str(target)
    _check_quantization(model_cfg)
    kwargs: dict[str, Any] = dict(
        dtype=torch_dtype(model_cfg.dtype),
        trust_remote_code=model_cfg.trust_remote_code,
        revision=model_cfg.model_revision,
    )
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    quant = get_quantization_config(model_cfg)
    if quant is not None:
        from accelerate import PartialState

        kwargs.update(quantization_config=quant, device_map={"": PartialState().local_process_index})
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    tokenizer = load_tokenizer(name, trust_remote_code=model_cfg.trust_remote_code)
    if quant is not None:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(train_cfg.gradient_checkpointing)
        )
    peft_config = get_peft_config(model_cfg)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    elif train_cfg.reference_probs == "initial":
        raise ValueError(
            "reference_probs=initial scores with the adapter disabled, so it needs LoRA (use_peft); use cached for full fine-tuning"
        )
    if train_cfg.gradient_checkpointing and train_cfg.gradient_checkpointing_kwargs is None:
        train_cfg.gradient_checkpointing_kwargs = {"use_reentrant": False}
    return model, tokenizer, name


def _plain(value: Any) -> Any:
    """A YAML-safe form of a config value, or ``_SKIP`` for objects a config file can't hold."""
    value = getattr(value, "value", value)  # enums
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else items
    if isinstance(value, dict):
        items = {str(k): _plain(v) for k, v in value.items()}
        return _SKIP if any(v is _SKIP for v in items.values()) else items
    return _SKIP


_SKIP = object()


def _non_default(obj) -> dict[str, Any]:
    """Fields whose value differs from the field's declared default.

    Never instantiate a default config to compare against: ``TrainingArguments.__post_init__`` resets
    accelerate's process-wide distributed state. Values a post-init normalised (``"tensorboard"`` ->
    ``["tensorboard"]``) may be written although unchanged; they read back the same.
    """
    out = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            base = f.default
        elif f.default_factory is not dataclasses.MISSING:
            base = f.default_factory()
        else:
            base = None
        value = _plain(getattr(obj, f.name))
        if value is not _SKIP and value != _plain(base):
            out[f.name] = value
    return out


def write_config(run_dir: Path, data: DataConfig, model: ModelConfig, train: NLFTConfig) -> None:
    """The resolved configuration, loadable again with ``nlft train --config RUN/config.yaml``."""
    merged: dict[str, Any] = {}
    for part in (data, model, train):
        merged.update(_non_default(part))
    merged.update({k: getattr(train, k) for k in train.nlft_settings()})
    merged.update(
        {
            "method": data.method,
            "data": data.data,
            "model_name_or_path": model.model_name_or_path,
            "output_dir": train.output_dir,
        }
    )
    merged.pop("resume_from_checkpoint", None)  # how this process started, not what the run is
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(merged, sort_keys=False))


def _update_run_info(run_dir: Path, **changes: Any) -> None:
    path = run_dir / RUN_FILE
    info = json.loads(path.read_text()) if path.exists() else {}
    info.update(changes)
    atomic_write_json(path, info)


def _resume_target(train_cfg: NLFTConfig, run_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    wanted = train_cfg.resume_from_checkpoint
    if wanted in (None, "", False):
        if (run_dir / RUN_FILE).exists() and get_last_checkpoint(str(run_dir)):
            raise ValueError(
                f"{run_dir} already holds a run with checkpoints: continue it with --resume_from_checkpoint last, "
                "or choose another --output_dir"
            )
        return None
    if str(wanted).lower() in ("last", "true"):
        last = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint {wanted}: no checkpoint-N folder in {run_dir}")
        return last
    if not Path(wanted).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {wanted}: no such checkpoint folder")
    return str(wanted)


def _reference_cache(model, encoded, collator, train_cfg: NLFTConfig, run_dir: Path, base_name: str):
    import torch
    from accelerate import PartialState

    from .trainer import compute_reference_cache, records_fingerprint

    path = run_dir / REFERENCE_PROBS_FILE
    fingerprint = records_fingerprint(encoded, base_name)
    state = PartialState()
    with state.main_process_first():
        stored = torch.load(path, weights_only=True) if path.exists() else None
        if stored is not None and stored.get("fingerprint") == fingerprint:
            return stored["records"]
        if stored is not None:
            logger.warning("%s belongs to other records or another model; computing it again", path)
        if state.is_main_process:
            cache = compute_reference_cache(
                model,
                encoded,
                collator,
                batch_size=train_cfg.per_device_eval_batch_size,
                chunk_size=train_cfg.logits_chunk_size,
            )
            buffer = io.BytesIO()
            torch.save({"fingerprint": fingerprint, "records": cache}, buffer)
            atomic_write_bytes(path, buffer.getvalue())
            return cache
    return torch.load(path, weights_only=True)["records"]


def _saliency_snapshots(data: DataConfig, train_cfg: NLFTConfig, run_dir: Path, records):
    """The snapshot callback of ``saliency_steps`` (``nlft studio``), or None when they are off."""
    if train_cfg.saliency_steps <= 0:
        return None
    if data.method != "nlft":
        logger.warning(
            "saliency_steps is ignored with method %s: snapshots show the NLFT weighting", data.method
        )
        return None
    from .saliency import snapshot_callback

    # The question and judgment texts to show with the probe records (the encoded records hold only ids).
    texts = load_records(resolve_data(data.data), skip_invalid=True, split=data.data_split)
    return snapshot_callback(run_dir, records, texts, train_cfg.saliency_steps, train_cfg.saliency_probe)


def _sft_config(train_cfg: NLFTConfig):
    """trl's ``SFTConfig`` with every TrainingArguments field taken from the NLFT config (same schedule)."""
    from transformers import TrainingArguments
    from trl import SFTConfig

    shared = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    values = {name: getattr(train_cfg, name) for name in shared}
    values = {k: getattr(v, "value", v) for k, v in values.items()}
    return SFTConfig(**values, max_length=None, packing=False, dataset_kwargs={})


def train(
    data: DataConfig, model_cfg: ModelConfig, train_cfg: NLFTConfig, *, callbacks: list | None = None
) -> TrainResult:
    """Run one training job (NLFT or the SFT baseline) and return what it did."""
    import datasets

    from .trainer import NLFTCollator, NLFTTrainer, SaveEveryEpoch

    if data.method not in ("nlft", "sft"):
        raise ValueError(f"method must be nlft or sft, not {data.method!r}")
    # Bad input is refused before anything is written.
    if not model_cfg.model_name_or_path:
        raise ValueError(
            "no model: pass --model_name_or_path (a hub id or folder), or nlft:tiny for the embedded tiny model"
        )
    source = resolve_data(data.data)
    if source.endswith((".json", ".jsonl")) and not Path(source).is_file():
        raise FileNotFoundError(f"--data {data.data}: no such file")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and train_cfg.world_size != launched:
        raise RuntimeError(
            f"launched as {launched} processes but training would not be distributed (world size {train_cfg.world_size}); "
            "check the launcher (accelerate launch --multi_gpu / torchrun) and --use_cpu"
        )
    run_dir = Path(train_cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = _resume_target(train_cfg, run_dir)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / LOGS_DIR)
    started = time.time()

    model, tokenizer, base_name = load_training_model(model_cfg, train_cfg, run_dir)
    encoded, n_loaded, skipped = prepare_records(data, tokenizer)
    records = encoded.records
    n_wrong = sum(not r.correct for r in records)
    logger.info(
        "%d records (%d correct, %d wrong), %d skipped",
        len(records),
        len(records) - n_wrong,
        n_wrong,
        len(skipped),
    )
    if skipped:
        for line in skipped:
            logger.warning("skipped: %s", line)

    main = train_cfg.process_index == 0
    if main:
        write_config(run_dir, data, model_cfg, train_cfg)
    _update_run_info(
        run_dir,
        method=data.method,
        base_model=base_name,
        data=data.data,
        templates=data.templates,
        chat_template=data.chat_template,
        max_length=data.max_length,
        records=len(records),
        correct=len(records) - n_wrong,
        wrong=n_wrong,
        skipped=skipped,
        nlft=train_cfg.nlft_settings() if data.method == "nlft" else None,
        epochs=json.loads((run_dir / RUN_FILE).read_text()).get("epochs", [])
        if (run_dir / RUN_FILE).exists()
        else [],
    ) if main else None

    def saved(epoch: int, path: Path) -> None:
        info = json.loads((run_dir / RUN_FILE).read_text())
        epochs = sorted(set(info.get("epochs", [])) | {epoch})
        _update_run_info(run_dir, epochs=epochs)

    epoch_saver = SaveEveryEpoch(run_dir, on_saved=saved)
    all_callbacks = [epoch_saver, *(callbacks or [])]
    snapshots = _saliency_snapshots(data, train_cfg, run_dir, records)
    if snapshots is not None:
        all_callbacks.insert(1, snapshots)  # before the caller's callbacks: theirs see the step's snapshot
    if data.method == "nlft":
        dataset = datasets.Dataset.from_list([r.to_features() for r in records])
        collator = NLFTCollator(tokenizer.pad_token_id)
        cache = None
        if train_cfg.reference_probs == "cached":
            model.to(train_cfg.device)
            cache = _reference_cache(model, records, collator, train_cfg, run_dir, base_name)
        trainer = NLFTTrainer(
            model=model,
            args=train_cfg,
            train_dataset=dataset,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=all_callbacks,
            reference_cache=cache,
        )
    else:
        from trl import SFTTrainer

        rows = [
            {"input_ids": r.input_ids("base"), "labels": [-100] * len(r.prompt_ids["base"]) + r.response_ids}
            for r in records
        ]
        trainer = SFTTrainer(
            model=model,
            args=_sft_config(train_cfg),
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=all_callbacks,
        )
    epoch_saver.trainer = trainer
    if snapshots is not None:
        snapshots.trainer = trainer
    for cb in callbacks or []:
        if hasattr(cb, "trainer") and cb.trainer is None:
            cb.trainer = trainer
    output = trainer.train(resume_from_checkpoint=resume)
    final = run_dir / (ADAPTER_DIR if model_cfg.use_peft else MODEL_DIR)
    trainer.save_model(str(final))
    seconds = time.time() - started
    if trainer.is_world_process_zero():
        _update_run_info(
            run_dir,
            finished=True,
            global_step=output.global_step,
            train_seconds=round(seconds, 1),
            metrics=output.metrics,
        )
    return TrainResult(
        run_dir,
        data.method,
        output.global_step,
        output.metrics,
        len(records),
        len(skipped),
        seconds,
        trainer.state.log_history,
    )
