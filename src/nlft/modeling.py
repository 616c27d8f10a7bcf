"""Loading models and tokenizers: hub ids or local folders, with an optional LoRA adapter.

``trust_remote_code`` is off unless the caller turns it on. Model ids that are hub ids work for users; the
tests use local folders only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .runs import Checkpoint, resolve_checkpoint

DTYPES = ("auto", "float32", "bfloat16", "float16")


def torch_dtype(name: str | None):
    import torch

    if name in (None, "auto"):
        return "auto"
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"dtype '{name}': choose from {', '.join(DTYPES)}") from None


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_tokenizer(name_or_path: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding is masked out everywhere; reusing EOS as pad is safe and what most Llama recipes do.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model: str | Path,
    adapter: str | Path | None = None,
    *,
    dtype: str | None = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
):
    """Load ``(model, tokenizer, weights)`` for inference. ``model`` may be a hub id, a model folder, an adapter
    folder or a run folder; the tokenizer comes from the adapter folder when it holds one."""
    from transformers import AutoModelForCausalLM

    weights: Checkpoint = resolve_checkpoint(str(model), str(adapter) if adapter else None)
    kwargs: dict[str, Any] = dict(dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)
    net = AutoModelForCausalLM.from_pretrained(weights.base_model, **kwargs)
    tok_source = (
        weights.adapter
        if weights.adapter and (weights.adapter / "tokenizer_config.json").exists()
        else weights.base_model
    )
    tokenizer = load_tokenizer(tok_source, trust_remote_code=trust_remote_code)
    if weights.adapter is not None:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, str(weights.adapter))
    net.to(device or default_device())
    net.eval()
    return net, tokenizer, weights


def free_accelerator_memory() -> None:
    """Give back an unreachable model's accelerator memory before the next one loads (between checkpoints of an
    evaluation, between a sampling model and a judge model)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
