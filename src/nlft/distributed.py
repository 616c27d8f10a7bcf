"""Several processes: checking that a launch gives what was asked, and ending it cleanly.

NLFT runs under every engine accelerate offers (DDP, FSDP2, DeepSpeed ZeRO-2/3): the lean head computes inside
the model's own forward (``scoring``), every process runs the same forwards whatever its records (``trainer``),
and snapshots and cached probabilities are computed by every process. What is left here is what a launcher
can get wrong without saying so:

* an FSDP or DeepSpeed configuration that is not in effect (accelerate falls back to DDP without a GPU);
* ``accelerate launch`` starting one process where several were meant (``distributed_type: MULTI_CPU`` without
  ``mpirun`` does);
* a full fine-tune under ZeRO-3 or FSDP whose final save would write shards ``nlft eval`` cannot load;
* a process group left alive at exit (``terminate called without an active exception`` on some launches).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

logger = logging.getLogger(__name__)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def check_launch(train_cfg, *, use_peft: bool) -> None:
    """Refuse a launch whose engine is not the one configured; warn about a lone process under accelerate."""
    fsdp_asked = _env_true("ACCELERATE_USE_FSDP") or bool(getattr(train_cfg, "fsdp", None))
    deepspeed_asked = _env_true("ACCELERATE_USE_DEEPSPEED") or bool(getattr(train_cfg, "deepspeed", None))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if fsdp_asked and not _fsdp_available():
        raise RuntimeError(
            "FSDP was asked for (accelerate config / --fsdp), but it cannot run here: accelerate uses FSDP only on "
            "CUDA GPUs and would silently train with DDP instead. Use configs/accelerate/ddp.yaml on this machine."
        )
    if deepspeed_asked:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise RuntimeError("DeepSpeed was asked for, but it is not installed: pip install deepspeed")
    if (
        os.environ.get("ACCELERATE_DYNAMO_BACKEND") is not None
        and world == 1
        and "LOCAL_RANK" not in os.environ
    ):
        logger.warning(
            "accelerate launch started this as a single process. If your accelerate config asks for several "
            "(distributed_type MULTI_CPU needs mpirun; use --multi_gpu --num_processes N for a gloo group on CPU), "
            "only this one is training."
        )
    hf_ds = getattr(train_cfg, "hf_deepspeed_config", None)
    if hf_ds is not None and not use_peft and hf_ds.is_zero3():
        gather = hf_ds.get_value("zero_optimization.stage3_gather_16bit_weights_on_model_save", False)
        if not gather:
            raise ValueError(
                "a full fine-tune under ZeRO-3 must gather its weights to save a loadable model: set "
                "zero_optimization.stage3_gather_16bit_weights_on_model_save: true (configs/accelerate/zero3.json does)"
            )
    state_dict_type = os.environ.get("FSDP_STATE_DICT_TYPE", "")
    if fsdp_asked and state_dict_type and "FULL" not in state_dict_type.upper():
        raise ValueError(
            f"FSDP with state dict type {state_dict_type} saves shards that nlft eval, saliency and merge cannot "
            "load: set fsdp_state_dict_type: FULL_STATE_DICT (configs/accelerate/fsdp2.yaml does)"
        )


def _fsdp_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_engine_in_effect(trainer) -> None:
    """After the trainer is built: the engine accelerate prepared is the one asked for."""
    state = getattr(trainer, "accelerator", None)
    if state is None:
        return
    if _env_true("ACCELERATE_USE_FSDP") and not getattr(trainer, "is_fsdp_enabled", False):
        raise RuntimeError(
            "FSDP was configured but accelerate did not enable it (no GPU?): refusing to train with DDP"
        )
    if _env_true("ACCELERATE_USE_DEEPSPEED") and not getattr(trainer, "is_deepspeed_enabled", False):
        raise RuntimeError("DeepSpeed was configured but accelerate did not enable it")


def end_process_group() -> bool:
    """Every process reaches this point, then the group is destroyed (a clean exit for every launcher). Returns
    whether there was a group: the caller then leaves with ``leave_process`` once its output is written."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
        return True
    return False


def leave_process(code: int) -> None:
    """End a launched rank whose work is done and written, without the interpreter's finalization.

    Gloo and DeepSpeed keep C++ worker threads whose objects hold tensors; when the interpreter tears down
    around them, a rank now and then aborts with "terminate called without an active exception" (SIGABRT) after
    everything was saved, and the launcher reports the whole run failed (seen once in CI under ZeRO-3 on CPU;
    pytorch/pytorch#179291 describes the race). Output is flushed and logging shut down first, so nothing is lost.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(code)
