"""``nlft demo``: the embedded default, end to end on CPU with nothing downloaded.

1. build a 2:1 correct:wrong dataset from the bundled sample (GSM8K questions, MathCritique critiques of
   wrong Llama-3-8B answers, GSM8K gold solutions as correct responses);
2. train the embedded tiny Llama (random weights, the project's tokenizer) with NLFT, then with the SFT
   baseline on the same responses, LoRA and schedule;
3. print what was made and where.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .builder import build_dataset
from .records import SAMPLE_RECORDS
from .snapshots import list_snapshots

MARKER = ".nlft-demo.json"  # what a demo folder holds to say a demo made it, and what it wrote
DEMO_ENTRIES = ("data", "nlft", "sft")


def prepare_out(out: Path, entries: tuple[str, ...]) -> None:
    """Make ``out`` ready for a demo: a new or empty folder is used as it is; a folder an earlier demo made (it
    holds ``MARKER``) has that demo's entries replaced, and nothing else in it touched; any other folder is
    refused before anything is written."""
    import json

    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"--out {out}: not a folder (a file or a link); name a folder for the demo")
    marker = out / MARKER
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise FileExistsError(
                f"--out {out}: exists, holds files, and no earlier demo made it; name a new folder for the demo"
            )
        try:
            earlier = json.loads(marker.read_text(encoding="utf-8")).get("entries", [])
        except (ValueError, AttributeError):
            raise ValueError(
                f"{marker}: damaged demo marker; remove the folder yourself or use another --out"
            ) from None
        removed = [e for e in earlier if isinstance(e, str) and "/" not in e and e not in ("", ".", "..")]
        for entry in removed:
            target = out / entry
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
        print(f"replacing the earlier demo in {out} ({', '.join(removed) or 'nothing'})")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"made_by": "nlft demo", "entries": list(entries)}) + "\n", encoding="utf-8")


def _train_args(method: str, data: Path, out: Path, epochs: int, seed: int) -> list[str]:
    # The same settings as configs/tiny-nlft.yaml and configs/tiny-sft.yaml, plus, for NLFT, a saliency snapshot
    # of 4 records after every step for `nlft studio`.
    snapshots = ["--saliency_steps", "1", "--saliency_probe", "4"] if method == "nlft" else []
    return [
        *snapshots,
        "--method", method,
        "--data", str(data),
        "--model_name_or_path", "nlft:tiny",
        "--output_dir", str(out),
        "--max_length", "1024",
        "--num_train_epochs", str(epochs),
        "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "2",
        "--learning_rate", "1e-3",
        "--logging_steps", "1",
        "--seed", str(seed),
        "--use_cpu", "true",
        "--dtype", "float32",
        "--report_to", "tensorboard",
        "--disable_tqdm", "false",
    ]  # fmt: skip


def _epoch_means(history: list[dict]) -> str:
    """Mean logged loss of each epoch: comparable across epochs, unlike single steps whose record mix varies."""
    by_epoch: dict[int, list[float]] = {}
    for h in history:
        if "loss" in h and "epoch" in h:
            by_epoch.setdefault(max(int(-(-h["epoch"] // 1)), 1), []).append(h["loss"])
    return " -> ".join(f"{sum(v) / len(v):.4g}" for _, v in sorted(by_epoch.items())) or "-"


def run_demo(out: str | Path = "runs/demo", *, size: int = 12, epochs: int = 2, seed: int = 42) -> int:
    from .config import parse_train_args
    from .train import train

    out = Path(out)
    prepare_out(out, DEMO_ENTRIES)
    started = time.time()
    print(f"nlft demo: bundled sample ({SAMPLE_RECORDS.name}) -> {out}\n")
    built = build_dataset(SAMPLE_RECORDS, out / "data", size=size, ratio="2:1", seed=seed)
    print(built.summary() + "\n")

    results = {}
    for method in ("nlft", "sft"):
        print(f"== training with {method.upper()} ==")
        data, model, train_cfg = parse_train_args(
            _train_args(method, built.nlft_path, out / method, epochs, seed)
        )
        results[method] = train(data, model, train_cfg)
        print()

    nlft = results["nlft"]
    last = next(
        (h for h in reversed(nlft.log_history) if "blamed_fraction" in h or "salient_fraction" in h), {}
    )
    print(f"nlft demo finished in {time.time() - started:.0f}s")
    print(
        f"  data     {built.nlft_path}: {len(built.selection.records)} records "
        f"({built.selection.n_correct} correct, {built.selection.n_wrong} wrong); {built.sft_path.name}: the same responses"
    )
    print(
        "  model    tiny Llama (2 layers, hidden 64, random weights) + the project's 4096-token BPE; LoRA r16 on gate/up/down"
    )
    print(f"  {'method':<7} {'steps':>5}  {'mean loss by epoch':<22} run folder")
    for method, r in results.items():
        print(
            f"  {method:<7} {r.global_step:>5}  {_epoch_means(r.log_history):<22} {r.run_dir}/  (adapter/, epochs/, logs/)"
        )
    print(
        "  (NLFT's loss is 10 x (SFT term + weighted term) per record, docs/method.md section 6; SFT's is the plain token mean)"
    )
    if last:
        print(
            f"  NLFT weighting at the last logged step: blamed fraction of wrong responses {last.get('blamed_fraction', 0):.3f}, "
            f"salient fraction of correct ones {last.get('salient_fraction', 0):.3f}"
        )
        print("  (a random-weight model confirms and blames almost nothing; real models do — see the README)")
    snapshots = len(list_snapshots(nlft.run_dir))
    print(f"\nTensorBoard: tensorboard --logdir {out}")
    print(
        f"Saliency:    nlft studio {nlft.run_dir}    ({snapshots} snapshots of 4 records; tune the weighting live)"
    )
    print(f"             nlft saliency --model {nlft.run_dir} --out {out / 'saliency.html'}")
    return 0
