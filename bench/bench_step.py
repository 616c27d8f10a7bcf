"""Per-step time and peak memory of NLFT against SFT and against the naive approach of the authors' code.

    python bench/bench_step.py                 # CPU, the issue's shapes; prints a table, writes bench/results/
    python bench/bench_step.py --device cuda --preset llama3-8b   # on a GPU

Shapes (default preset ``tiny-128k``): a Llama with vocabulary 128256, hidden 256, 2 layers; every prompt 256
tokens and every response 256 tokens; batch 1; LoRA r16 on gate/up/down; a 1:2 wrong:correct mix (steps cycle
wrong, correct, correct). Methods, each measured in its own subprocess so its peak memory is its own:

* ``nlft-live``    NLFTTrainer.training_step + optimizer step, scoring with the current model (the default)
* ``nlft-cached``  the same with reference_probs: cached (no scoring passes during training)
* ``sft``          trl's SFTTrainer.training_step (its default loss) + optimizer step, on the X_base sequence
* ``naive``        the authors' approach: the three sequences in one batch, full-vocabulary fp32 softmax, autograd
                   through all three, the same NLFT loss on top
* ``parts``        NLFT-live's unavoidable parts, each timed alone: one training pass (X_base forward + backward +
                   optimizer step) and the scoring forwards (X_std for every record, X_judge for wrong ones)

Peak memory is the rise over the memory held before the first step: on CUDA ``max_memory_allocated``; on CPU the
process's resident set, sampled every millisecond while the steps run, with large allocations forced to mmap
(``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the resident set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PRESETS = {
    "tiny-128k": dict(
        vocab_size=128256,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        prompt=256,
        response=256,
        dtype="float32",
    ),
    "llama3-8b": dict(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        prompt=512,
        response=512,
        dtype="bfloat16",
    ),
}
METHODS = ("parts", "sft", "nlft-live", "nlft-cached", "naive")
MIX = (False, True, True)  # correct? for the three records of the 1:2 wrong:correct cycle


class PeakRSS:
    """Samples the resident set size while running; ``peak`` is the highest value seen."""

    def __init__(self, interval: float = 0.001):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def now(self) -> int:
        return self.proc.memory_info().rss

    def __enter__(self):
        self.peak = self.now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def build(preset: dict, device: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        **{k: v for k, v in preset.items() if k not in ("prompt", "response", "dtype")},
        max_position_embeddings=4096, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    dtype = getattr(torch, preset["dtype"])
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    model = get_peft_model(
        model,
        LoraConfig(
            r=16, lora_alpha=16, lora_dropout=0.05, target_modules=["gate_proj", "up_proj", "down_proj"]
        ),
    )
    return model


def records(preset: dict):
    """Three encoded records (wrong, correct, correct) with random ids of the preset's shape."""
    import torch

    from nlft.prompts import EncodedRecord

    g = torch.Generator().manual_seed(1)
    v, p, r = preset["vocab_size"], preset["prompt"], preset["response"]

    def ids(n):
        return torch.randint(3, v, (n,), generator=g).tolist()

    out = []
    for i, correct in enumerate(MIX):
        prompts = {"base": ids(p), "std": ids(p)}
        if not correct:
            prompts["judge"] = ids(p)
        out.append(EncodedRecord(f"r{i}", correct, ids(r), prompts))
    return out


def nlft_args(tmp: str, device: str, preset: dict, reference_probs: str):
    from nlft.config import NLFTConfig

    return NLFTConfig(
        output_dir=tmp, report_to="none", use_cpu=device == "cpu", reference_probs=reference_probs,
        learning_rate=1e-4, warmup_steps=0, disable_tqdm=True, bf16=preset["dtype"] == "bfloat16",
    )  # fmt: skip


def run_method(method: str, preset: dict, device: str, steps: int, warmup: int) -> dict:
    import tempfile

    import torch

    from nlft.scoring import score_responses
    from nlft.trainer import NLFTCollator, NLFTTrainer, compute_reference_cache

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    model = build(preset, device)
    recs = records(preset)
    collator = NLFTCollator(pad_token_id=0)
    batches = [collator([r.to_features()]) for r in recs]
    dev = torch.device(device)
    batches = [{k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in b.items()} for b in batches]
    tmp = tempfile.mkdtemp(prefix="nlft-bench-")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    if method in ("nlft-live", "nlft-cached"):
        mode = method.split("-")[1]
        cache = compute_reference_cache(model, recs, collator, progress=False) if mode == "cached" else None
        trainer = NLFTTrainer(
            model=model,
            args=nlft_args(tmp, device, preset, mode),
            data_collator=collator,
            reference_cache=cache,
        )
        model = trainer.model
        trainer.current_gradient_accumulation_steps = 1

        def step(i):
            trainer.training_step(model, batches[i % 3], num_items_in_batch=torch.tensor(1, device=dev))
            opt.step()
            opt.zero_grad(set_to_none=True)

    elif method == "sft":
        import datasets
        from trl import SFTConfig, SFTTrainer

        rows = [
            {"input_ids": r.input_ids("base"), "labels": [-100] * len(r.prompt_ids["base"]) + r.response_ids}
            for r in recs
        ]
        sft_args = SFTConfig(
            output_dir=tmp,
            report_to="none",
            use_cpu=device == "cpu",
            max_length=None,
            disable_tqdm=True,
            bf16=preset["dtype"] == "bfloat16",
        )

        from nlft.tiny import (
            load_tokenizer,
        )  # SFTTrainer wants a processing class; the rows are already tokenized

        tok = load_tokenizer()
        trainer = SFTTrainer(
            model=model, args=sft_args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tok
        )
        model = trainer.model
        trainer.current_gradient_accumulation_steps = 1  # set by train(); we call training_step directly
        sft_batches = [trainer.data_collator([row]) for row in rows]
        sft_batches = [
            {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in b.items()} for b in sft_batches
        ]

        def step(i):
            trainer.training_step(model, sft_batches[i % 3], num_items_in_batch=None)
            opt.step()
            opt.zero_grad(set_to_none=True)

    elif method == "naive":
        from nlft.loss import record_loss

        def step(i):
            b = batches[i % 3]
            kinds = ["judge", "base", "std"] if b["judge_rows"] else ["base", "std"]
            if not b["judge_rows"]:  # the reference ran three sequences for every record
                kinds = ["base", "base", "std"]
            seqs = [b[f"{k}_input_ids"][0] for k in kinds]
            width = max(s.shape[0] for s in seqs)
            ids = torch.zeros(3, width, dtype=torch.long, device=dev)
            mask = torch.zeros(3, width, dtype=torch.long, device=dev)
            for j, s in enumerate(seqs):
                ids[j, : s.shape[0]] = s
                mask[j, : s.shape[0]] = 1
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            probs = torch.softmax(out.logits.float(), dim=2)  # full-vocabulary fp32, kept for backward
            n = b["response_lens"][0]
            got = []
            for j, k in enumerate(kinds):
                p0 = b[f"{k}_prompt_lens"][0] if k != "judge" else b["judge_prompt_lens"][0]
                pos = torch.arange(p0 - 1, p0 + n - 1, device=dev)
                got.append(probs[j, pos].gather(1, ids[j, pos + 1, None]).squeeze(1))
            p_judge, p_base, p_std = got if b["judge_rows"] else (None, got[1], got[2])
            hidden = out.hidden_states[-1][
                1, torch.arange(b["base_prompt_lens"][0] - 1, b["base_prompt_lens"][0] + n - 1, device=dev)
            ]
            loss = record_loss(
                b["correct"][0],
                p_base,
                p_std.detach(),
                None if p_judge is None else p_judge.detach(),
                hidden.detach().float(),
            ).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    elif method == "parts":
        results = {}
        chunk = 1024

        def train_pass(i):
            b = batches[i % 3]
            model.train()
            s = score_responses(
                model,
                b["base_input_ids"],
                b["base_attention_mask"],
                b["base_prompt_lens"],
                b["response_lens"],
                want_hidden=True,
                chunk_size=chunk,
            )
            (-s.logp.mean()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def scoring(kind):
            def run(i):
                b = batches[i % 3]
                rows = b["judge_rows"] if kind == "judge" else None
                if kind == "judge" and not rows:
                    b = batches[0]
                with torch.no_grad():
                    score_responses(
                        model,
                        b[f"{kind}_input_ids"],
                        b[f"{kind}_attention_mask"],
                        b[f"{kind}_prompt_lens"],
                        b["response_lens"],
                        chunk_size=chunk,
                    )

            return run

        model.eval()
        for name, fn in (
            ("train_pass", train_pass),
            ("std_forward", scoring("std")),
            ("judge_forward", scoring("judge")),
        ):
            results[name] = timed(fn, steps, warmup, device)
        per_step = (
            results["train_pass"]["median_s"]
            + results["std_forward"]["median_s"]
            + results["judge_forward"]["median_s"] / 3
        )
        return {"method": method, "parts": results, "median_s": per_step, "peak_mb": None}
    else:
        raise ValueError(method)

    result = timed(step, steps, warmup, device)
    result["method"] = method
    return result


def timed(fn, steps: int, warmup: int, device: str) -> dict:
    import torch

    for i in range(warmup):
        fn(i)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    with PeakRSS() as rss:
        base_rss = rss.now()
        for i in range(steps):
            t0 = time.perf_counter()
            fn(warmup + i)
            sync()
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) if device.startswith("cuda") else (rss.peak - base_rss)
    # Whole cycles of the 1:2 mix: a mean over multiples of three steps is the mix's per-step cost.
    cycle = [sum(times[j : j + 3]) / 3 for j in range(0, len(times) - len(times) % 3, 3)]
    return {"median_s": statistics.median(cycle), "step_times": times, "peak_mb": peak / 2**20}


def child(args) -> None:
    preset = PRESETS[args.preset]
    result = run_method(args.method, preset, args.device, args.steps, args.warmup)
    Path(args.json).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny-128k", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--steps", type=int, default=6, help="measured steps per method (rounded down to whole 1:2 cycles)"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(args)
        return

    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")]
    )
    results = {}
    for method in args.methods:
        path = args.out / f"{args.preset}-{method}.json"
        cmd = [
            sys.executable,
            __file__,
            "--preset",
            args.preset,
            "--device",
            args.device,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--method",
            method,
            "--json",
            str(path),
        ]
        print(f"running {method} ...", flush=True)
        subprocess.run(cmd, check=True, env=env)
        results[method] = json.loads(path.read_text())
    report = render(results, args)
    print(report)
    (args.out / f"{args.preset}-{args.device}.md").write_text(report + "\n")
    (args.out / f"{args.preset}-{args.device}.json").write_text(json.dumps(results, indent=2))


def render(results: dict, args) -> str:
    preset = PRESETS[args.preset]
    lines = [
        f"## NLFT step benchmark — preset {args.preset} on {args.device}",
        "",
        f"vocabulary {preset['vocab_size']}, hidden {preset['hidden_size']}, {preset['num_hidden_layers']} layers, "
        f"prompt {preset['prompt']} + response {preset['response']} tokens, batch 1, LoRA r16 gate/up/down, "
        f"1:2 wrong:correct mix, {args.steps} measured steps after {args.warmup} warm-up",
        "",
        "| method | s/step (median of 1:2 cycles) | peak memory over the loaded model (MiB) |",
        "|---|---:|---:|",
    ]
    for method, r in results.items():
        peak = "-" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}"
        lines.append(f"| {method} | {r['median_s']:.3f} | {peak} |")
    if "parts" in results:
        p = results["parts"]["parts"]
        lines.append("")
        lines.append(
            f"unavoidable parts: training pass {p['train_pass']['median_s']:.3f}s, X_std forward {p['std_forward']['median_s']:.3f}s, "
            f"X_judge forward {p['judge_forward']['median_s']:.3f}s (for 1 in 3 records) -> {results['parts']['median_s']:.3f}s per step"
        )
    checks = []

    def ratio(a, b):
        return results[a]["median_s"] / results[b]["median_s"]

    def mem(a, b):
        return results[a]["peak_mb"] / results[b]["peak_mb"]

    have = set(results)
    if {"nlft-live", "parts"} <= have:
        checks.append(("NLFT-live / its unavoidable parts", ratio("nlft-live", "parts"), "<= 1.10"))
    if {"nlft-live", "sft"} <= have:
        checks.append(("NLFT-live / SFT, time", ratio("nlft-live", "sft"), "<= 1.9"))
    if {"nlft-cached", "sft"} <= have:
        checks.append(("NLFT-cached / SFT, time", ratio("nlft-cached", "sft"), "<= 1.1"))
    if {"nlft-live", "sft"} <= have:
        checks.append(("NLFT-live / SFT, peak memory", mem("nlft-live", "sft"), "<= 1.15"))
    if {"nlft-cached", "sft"} <= have:
        checks.append(("NLFT-cached / SFT, peak memory", mem("nlft-cached", "sft"), "<= 1.15"))
    if {"naive", "nlft-live"} <= have:
        checks.append(("naive / NLFT-live, time", ratio("naive", "nlft-live"), ">= 3"))
        checks.append(("naive / NLFT-live, peak memory", mem("naive", "nlft-live"), ">= 2"))
    if checks:
        lines += ["", "| ratio | measured | target | met |", "|---|---:|---|---|"]
        for name, value, target in checks:
            op, bound = target.split()
            ok = value <= float(bound) if op == "<=" else value >= float(bound)
            lines.append(f"| {name} | {value:.2f} | {target} | {'yes' if ok else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
