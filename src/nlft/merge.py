"""``nlft merge``: fold a LoRA adapter into its base model and save a plain transformers model folder.

The merged folder loads with ``AutoModelForCausalLM.from_pretrained`` alone (no PEFT), which is what serving
engines (vLLM, SGLang, TGI) and ``nlft eval --backend openai`` want. It is written to a temporary folder beside
the target and renamed into place, so an interrupted merge never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path


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
    from .modeling import load_model

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    net, tokenizer, weights = load_model(
        model, adapter, dtype=dtype, device=device, trust_remote_code=trust_remote_code
    )
    if weights.adapter is None:
        raise ValueError(f"{model}: no LoRA adapter to merge (it is a full model already)")
    merged = net.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"base_model": weights.base_model, "adapter": str(weights.adapter), "dtype": dtype}
        (tmp / "merge.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
