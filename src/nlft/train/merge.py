"""``nlft merge``: fold a LoRA adapter into its base model and save a plain transformers model folder.

The merged folder loads with ``AutoModelForCausalLM.from_pretrained`` alone (no PEFT), which is what serving
engines (vLLM, SGLang, TGI) and ``nlft eval --backend openai`` want. It is written to a temporary folder beside
the target and renamed into place, so an interrupted merge never leaves a half-written model behind.

``--overwrite`` replaces only a folder that is itself a merged model (it holds the ``merge.json`` a merge
writes): never the current directory or one above it, never the run or adapter being merged or a folder that
holds them, never a folder of anything else.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..models.loading import DTYPES
from ..options import opt

MERGE_FILE = "merge.json"


def _check_target(out: Path, sources: list[Path], overwrite: bool) -> None:
    """Refuse, before loading anything, an ``out`` that a merge may not write (see the module docstring)."""
    if out.is_symlink():
        raise ValueError(f"--out {out}: is a symbolic link; nlft never writes through one")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: is a file, not a folder")
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or cwd.is_relative_to(target):
        raise ValueError(
            f"--out {out}: is the current directory (or holds it); name a new folder for the merged model"
        )
    for source in sources:
        src = source.resolve()
        if target == src or src.is_relative_to(target) or target.is_relative_to(src):
            raise ValueError(
                f"--out {out}: is, or holds, or lies inside {source}, which is being merged; name a folder elsewhere"
            )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
        if not (out / MERGE_FILE).is_file():
            raise ValueError(
                f"--out {out}: --overwrite replaces only a merged model (a folder with {MERGE_FILE}), and this "
                "folder is not one; name a new folder"
            )


@dataclass(kw_only=True)
class MergeOptions:
    """``nlft merge``: the arguments of ``merge_adapter``."""

    model: str = opt(positional=True, help="LoRA adapter folder, run folder, or base model (with --adapter)")
    out: str = opt(help="folder for the merged model")
    adapter: str | None = opt(None, help="LoRA adapter folder to merge into MODEL")
    overwrite: bool = opt(False, help="replace OUT if it exists")
    dtype: str = opt("auto", choices=DTYPES, help="dtype to merge and save in")
    device: str | None = opt("cpu", help="where to merge (cpu needs no GPU memory)")
    trust_remote_code: bool = opt(False, help="run model code from the hub (off: only trusted architectures)")


def merge_adapter(
    model: str | Path,
    out: str | Path,
    *,
    adapter: str | Path | None = None,
    dtype: str = "auto",
    device: str | None = "cpu",
    trust_remote_code: bool = False,
    overwrite: bool = False,
) -> Path:
    """Merge the LoRA adapter of ``model`` (an adapter folder or a run folder; or a base model with ``adapter``)
    into the base weights; save the merged model, its tokenizer and ``merge.json`` (where it came from)."""
    from ..models.loading import load_model
    from ..runs import is_run, resolve_checkpoint

    out = Path(out)
    sources = [Path(str(model))] if Path(str(model)).exists() else []
    if adapter is not None:
        sources.append(Path(adapter))
    found = resolve_checkpoint(str(model), str(adapter) if adapter else None)
    if found.adapter is not None:
        sources.append(found.adapter)
        if is_run(found.adapter.parent):
            sources.append(found.adapter.parent)
    _check_target(out, sources, overwrite)
    net, tokenizer, weights = load_model(
        model, adapter, dtype=dtype, device=device, trust_remote_code=trust_remote_code
    )
    if weights.adapter is None:
        raise ValueError(f"{model}: no LoRA adapter to merge (it is a full model already)")
    base = Path(str(weights.base_model))
    if base.exists():  # the base model under the adapter (known once loaded) is a source too: never replaced
        sources.append(base)
        _check_target(out, sources, overwrite)
    merged = net.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"base_model": weights.base_model, "adapter": str(weights.adapter), "dtype": dtype}
        (tmp / MERGE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out.exists() and any(out.iterdir()):
            _check_target(out, sources, overwrite)  # still a merged model, now that it is replaced
            old = out.with_name(f".{out.name}.replaced")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            if out.exists():
                out.rmdir()  # an empty folder
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
