"""Per-step time and peak memory of NLFT against SFT and against the naive approach of the authors' code.

    python bench/bench_step.py                 # CPU, the issue's shapes; prints a table, writes bench/results/
    python bench/bench_step.py --device cuda --preset llama3-8b   # on a GPU

Shapes (default preset ``tiny-128k``): a Llama with vocabulary 128256, hidden 256, 2 layers; every prompt 256
tokens and every response 256 tokens; batch 1; LoRA r16 on gate/up/down; a 1:2 wrong:correct mix (steps cycle
wrong, correct, correct). Methods:

* ``nlft-live``    NLFTTrainer.training_step + optimizer step, scoring with the current model (the default)
* ``nlft-cached``  the same with reference_probs: cached (no scoring passes during training)
* ``sft``          trl's SFTTrainer.training_step (its default loss) + optimizer step, on the X_base sequence
* ``sft-plain``    for reference: the model's own loss (labels) + backward + optimizer step, without trl's extras
                   (its entropy and token-accuracy metrics over the full logits)
* ``naive``        the authors' approach: the three sequences in one batch, full-vocabulary fp32 softmax, autograd
                   through all three, the same NLFT loss on top
* ``parts``        NLFT-live's unavoidable parts, each timed alone: one training pass (X_base forward + backward +
                   optimizer step) and the scoring forwards (X_std for every record, X_judge for wrong ones)

Time: all methods run in one process, interleaved — round after round, one 1:2 cycle of each method in turn — and
each method's per-step time is the median over rounds, so a machine whose speed drifts slows every method alike.
Peak memory: each method in its own process, the rise over the memory held before its first step: on CUDA
``max_memory_allocated``; on CPU the resident set, sampled every millisecond, with large allocations forced to
mmap (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the resident set.
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
METHODS = ("parts", "sft", "sft-plain", "sft-lean", "nlft-live", "nlft-cached", "naive")
SWEEP_METHODS = ("parts", "sft-lean", "nlft-live", "nlft-cached")  # --lengths: what the length sweep compares
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
        max_position_embeddings=max(4096, preset["prompt"] + preset["response"]), tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
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
    from nlft.train.config import NLFTConfig

    return NLFTConfig(
        output_dir=tmp, report_to="none", use_cpu=device == "cpu", reference_probs=reference_probs,
        learning_rate=1e-4, warmup_steps=0, disable_tqdm=True, bf16=preset["dtype"] == "bfloat16",
    )  # fmt: skip


def make_steps(method: str, preset: dict, device: str) -> dict:
    """Named step functions ``fn(i)`` for one method (``parts`` gives one per unavoidable part), each on its own
    model so that methods can be interleaved in one process."""
    import tempfile

    import torch

    from nlft.method.scoring import score_responses
    from nlft.train.batches import NLFTCollator
    from nlft.train.reference import ReferenceCache
    from nlft.train.trainer import NLFTTrainer

    model = build(preset, device)
    recs = records(preset)
    collator = NLFTCollator(pad_token_id=0)
    dev = torch.device(device)
    batches = [collator([r.to_features()]) for r in recs]
    batches = [{k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in b.items()} for b in batches]
    tmp = tempfile.mkdtemp(prefix="nlft-bench-")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def optimizer_step():
        opt.step()
        opt.zero_grad(set_to_none=True)

    if method in ("nlft-live", "nlft-cached"):
        mode = method.split("-")[1]
        cache = ReferenceCache(None, recs, "bench") if mode == "cached" else None
        if cache is not None:  # computed before the timed steps, as a run does before its first
            cache.ensure(model, collator, batch_size=4, chunk_size=1024, progress=False, main=True)
        trainer = NLFTTrainer(
            model=model,
            args=nlft_args(tmp, device, preset, mode),
            data_collator=collator,
            reference_cache=cache,
        )
        trainer.current_gradient_accumulation_steps = 1  # set by train(); we call training_step directly
        one = torch.tensor(1, device=dev)

        def step(i):
            trainer.training_step(trainer.model, batches[i % 3], num_items_in_batch=one)
            optimizer_step()

        return {method: step}

    if method == "sft":
        import datasets
        from trl import SFTConfig, SFTTrainer

        from nlft.models.tiny import (
            load_tokenizer,
        )  # SFTTrainer wants a processing class; the rows are already tokenized

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
        trainer = SFTTrainer(
            model=model,
            args=sft_args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=load_tokenizer(),
        )
        trainer.current_gradient_accumulation_steps = 1
        sft_batches = [trainer.data_collator([row]) for row in rows]
        sft_batches = [
            {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in b.items()} for b in sft_batches
        ]

        def step(i):
            trainer.training_step(trainer.model, sft_batches[i % 3], num_items_in_batch=None)
            optimizer_step()

        return {method: step}

    if method == "sft-plain":
        plain = [
            (
                torch.tensor([r.input_ids("base")], device=dev),
                torch.tensor([[-100] * len(r.prompt_ids["base"]) + r.response_ids], device=dev),
            )
            for r in recs
        ]

        def step(i):
            model.train()
            ids, labels = plain[i % 3]
            model(input_ids=ids, labels=labels).loss.backward()
            optimizer_step()

        return {method: step}

    if method == "naive":
        from nlft.method.loss import record_loss

        def step(i):
            model.train()
            b = batches[i % 3]
            # The reference ran three sequences for every record: [judge, base, std] (base twice when correct).
            kinds = ["judge", "base", "std"] if b["judge_rows"] else ["base", "base", "std"]
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
                p0 = b[f"{k}_prompt_lens"][0]
                pos = torch.arange(p0 - 1, p0 + n - 1, device=dev)
                got.append(probs[j, pos].gather(1, ids[j, pos + 1, None]).squeeze(1))
            p_judge, p_base, p_std = got if b["judge_rows"] else (None, got[1], got[2])
            p0 = b["base_prompt_lens"][0]
            hidden = out.hidden_states[-1][1, torch.arange(p0 - 1, p0 + n - 1, device=dev)]
            loss = record_loss(
                b["correct"][0],
                p_base,
                p_std.detach(),
                None if p_judge is None else p_judge.detach(),
                hidden.detach().float(),
            ).loss
            loss.backward()
            optimizer_step()

        return {method: step}

    if method == "sft-lean":
        # SFT's loss through the lean head: the training pass NLFT-cached adds its weights to, without the hidden
        # states clustering needs.
        def lean_step(i):
            b = batches[i % 3]
            model.train()
            s = score_responses(
                model,
                b["base_input_ids"],
                b["base_attention_mask"],
                b["base_prompt_lens"],
                b["response_lens"],
            )
            (-s.logp.mean() + s.anchor).backward()
            optimizer_step()

        return {method: lean_step}

    if method == "parts":
        # One 1:2 cycle of each part: 3 training passes, 3 X_std forwards, 1 X_judge forward (the wrong record).
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
            )
            (-s.logp.mean() + s.anchor).backward()
            optimizer_step()

        def forward(kind):
            def run(i):
                b = batches[i % 3]
                if kind == "judge" and not b["judge_rows"]:
                    return
                model.eval()
                with torch.no_grad():
                    score_responses(
                        model,
                        b[f"{kind}_input_ids"],
                        b[f"{kind}_attention_mask"],
                        b[f"{kind}_prompt_lens"],
                        b["response_lens"],
                    )

            return run

        return {
            "parts:train_pass": train_pass,
            "parts:std_forward": forward("std"),
            "parts:judge_forward": forward("judge"),
        }
    raise ValueError(method)


def measure_times(methods, preset: dict, device: str, rounds: int, warmup: int) -> dict:
    """Per-step seconds of every method, timed interleaved: round after round, one 1:2 cycle (3 steps) of each
    method in turn, so that a machine whose speed drifts slows all methods alike. Median over rounds."""
    import torch

    import nlft.method.weighting

    steps = {}
    for m in methods:
        steps.update(make_steps(m, preset, device))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    # The clustering's share of each step: the weighting calls it through its module, so time it there.
    clustering = [0.0]
    cluster_mask = nlft.method.weighting.cluster_mask

    def timed_cluster_mask(*a, **k):
        sync()
        t0 = time.perf_counter()
        out = cluster_mask(*a, **k)
        sync()
        clustering[0] += time.perf_counter() - t0
        return out

    nlft.method.weighting.cluster_mask = timed_cluster_mask
    for fn in steps.values():
        for i in range(3 * warmup):
            fn(i)
    cycles: dict[str, list[float]] = {name: [] for name in steps}
    cluster: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            sync()
            c0, t0 = clustering[0], time.perf_counter()
            for i in range(3):
                fn(i)
            sync()
            cycles[name].append((time.perf_counter() - t0) / 3)
            cluster[name].append((clustering[0] - c0) / 3)
    out = {name: statistics.median(v) for name, v in cycles.items()}
    if "parts:train_pass" in out:
        out["parts"] = out["parts:train_pass"] + out["parts:std_forward"] + out["parts:judge_forward"]
    return {
        "per_step_s": out,
        "cluster_s": {name: statistics.median(v) for name, v in cluster.items() if any(v)},
        "rounds": {k: v for k, v in cycles.items()},
    }


def measure_memory(method: str, preset: dict, device: str, warmup: int) -> float:
    """Peak memory (MiB) over the memory held before the first step, for one method in this process."""
    import torch

    (fn,) = make_steps(method, preset, device).values()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for i in range(3 * warmup):
            fn(i)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with PeakRSS() as rss:
        base = rss.now()
        for i in range(3 * warmup):
            fn(i)
    return (rss.peak - base) / 2**20


def child(args) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    preset = dict(PRESETS[args.preset])
    if args.response:
        preset["response"] = args.response
    if args.method == "timing":
        result = measure_times([m for m in args.methods], preset, args.device, args.rounds, args.warmup)
    else:
        result = {"peak_mb": measure_memory(args.method, preset, args.device, args.warmup)}
    Path(args.json).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny-128k", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds of one 1:2 cycle per method (median)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="warm-up cycles per method")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--only",
        choices=["timing", "memory"],
        default=None,
        help="run one phase (timing keeps the saved memory figures)",
    )
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        help="response-length sweep instead: "
        + ", ".join(SWEEP_METHODS)
        + " at each length (e.g. 256 1024 4096)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--response", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(args)
        return

    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")]
    )

    def run_child(what: str, methods=None, response: int | None = None) -> dict:
        path = args.out / f"{args.preset}-{what}.json"
        cmd = [sys.executable, __file__, "--preset", args.preset, "--device", args.device, "--rounds", str(args.rounds),
               "--warmup", str(args.warmup), "--method", what, "--json", str(path), "--methods", *(methods or args.methods)]  # fmt: skip
        if response:
            cmd += ["--response", str(response)]
        # Memory: large allocations as mmaps, so that a freed tensor leaves the resident set and peaks show.
        # Time: malloc's defaults, which reuse freed memory as a real run does (a fresh mmap per tensor would
        # add the page faults of whole buffers to every step).
        child_env = env if what == "timing" else {**env, "MALLOC_MMAP_THRESHOLD_": "65536"}
        subprocess.run(cmd, check=True, env=child_env)
        return json.loads(path.read_text())

    if args.lengths:
        sweep(args, run_child)
        return
    results: dict[str, dict] = {m: {} for m in args.methods}
    saved = args.out / f"{args.preset}-{args.device}.json"
    if args.only == "timing" and saved.exists():  # keep the memory figures of the last full run
        for name, r in json.loads(saved.read_text())["results"].items():
            if "peak_mb" in r and name in results:
                results[name]["peak_mb"] = r["peak_mb"]
    if args.only in (None, "memory"):
        for method in args.methods:
            if method != "parts":
                print(f"peak memory of {method} ...", flush=True)
                results[method]["peak_mb"] = run_child(method)["peak_mb"]
    timing: dict = {"per_step_s": {}, "rounds": {}}
    if args.only in (None, "timing"):
        print(f"timing {', '.join(args.methods)}, interleaved ...", flush=True)
        timing = run_child("timing")
    for name, value in timing["per_step_s"].items():
        results.setdefault(name, {})["median_s"] = value
    report = render(results, args)
    print(report)
    (args.out / f"{args.preset}-{args.device}.md").write_text(report + "\n")
    saved.write_text(json.dumps({"results": results, "rounds": timing["rounds"]}, indent=2))


def sweep(args, run_child) -> None:
    """The response-length sweep: at each length, the peak memory of each method in its own process, then the
    methods' times interleaved in one process, as the plain run does."""
    rows = {}
    for n in args.lengths:
        row: dict[str, dict] = {m: {} for m in SWEEP_METHODS}
        for method in SWEEP_METHODS:
            if method != "parts":
                print(f"{n} tokens: peak memory of {method} ...", flush=True)
                row[method]["peak_mb"] = run_child(method, [method], n)["peak_mb"]
        print(f"{n} tokens: timing {', '.join(SWEEP_METHODS)}, interleaved ...", flush=True)
        timing = run_child("timing", list(SWEEP_METHODS), n)
        for name, value in timing["per_step_s"].items():
            row.setdefault(name, {})["median_s"] = value
        for name, value in timing["cluster_s"].items():
            row[name]["cluster_s"] = value
        rows[n] = row
    report = render_sweep(rows, args)
    print(report)
    (args.out / f"{args.preset}-{args.device}-sweep.md").write_text(report + "\n")
    (args.out / f"{args.preset}-{args.device}-sweep.json").write_text(json.dumps(rows, indent=2))


def render_sweep(rows: dict, args) -> str:
    preset = PRESETS[args.preset]
    lines = [
        f"## NLFT step against response length — preset {args.preset} on {args.device}",
        "",
        f"vocabulary {preset['vocab_size']}, hidden {preset['hidden_size']}, {preset['num_hidden_layers']} layers, "
        f"prompt {preset['prompt']} tokens, batch 1, LoRA r16 gate/up/down, 1:2 wrong:correct mix; time: median "
        f"over {args.rounds} interleaved rounds of one 1:2 cycle per method. parts = training pass (with hidden "
        "states) + X_std forward + X_judge forward (one record in three); sft-lean = SFT's loss through the lean head.",
        "",
        "| response tokens | sft-lean s | parts s | nlft-live s | live / parts | nlft-cached s | cached / sft-lean "
        "| clustering ms/step (live) | peak MiB sft-lean / live / cached |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n, r in rows.items():
        t = {m: r[m].get("median_s") for m in r}
        peaks = " / ".join(f"{r[m]['peak_mb']:.0f}" for m in ("sft-lean", "nlft-live", "nlft-cached"))
        lines.append(
            f"| {n} | {t['sft-lean']:.3f} | {t['parts']:.3f} | {t['nlft-live']:.3f} | {t['nlft-live'] / t['parts']:.2f} "
            f"| {t['nlft-cached']:.3f} | {t['nlft-cached'] / t['sft-lean']:.2f} "
            f"| {1000 * r['nlft-live'].get('cluster_s', 0.0):.1f} | {peaks} |"
        )
    first, last = min(rows), max(rows)
    if first != last:
        lines += ["", f"peak memory {last}/{first} tokens (response length x{last / first:.0f}):"]
        for m in ("sft-lean", "nlft-live", "nlft-cached"):
            lines.append(f"- {m}: x{rows[last][m]['peak_mb'] / rows[first][m]['peak_mb']:.2f}")
    return "\n".join(lines)


def render(results: dict, args) -> str:
    preset = PRESETS[args.preset]
    lines = [
        f"## NLFT step benchmark — preset {args.preset} on {args.device}",
        "",
        f"vocabulary {preset['vocab_size']}, hidden {preset['hidden_size']}, {preset['num_hidden_layers']} layers, "
        f"prompt {preset['prompt']} + response {preset['response']} tokens, batch 1, LoRA r16 gate/up/down, "
        f"1:2 wrong:correct mix; time: median over {args.rounds} interleaved rounds of one 1:2 cycle per method",
        "",
        "| method | s/step | peak memory over the loaded model (MiB) |",
        "|---|---:|---:|",
    ]
    for method, r in results.items():
        if method.startswith("parts:"):
            continue
        peak = "-" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}"
        secs = "-" if r.get("median_s") is None else f"{r['median_s']:.3f}"
        lines.append(f"| {method} | {secs} | {peak} |")
    if "parts" in results and "parts:train_pass" in results:
        lines.append("")
        lines.append(
            f"unavoidable parts per step: training pass {results['parts:train_pass']['median_s']:.3f}s, X_std forward "
            f"{results['parts:std_forward']['median_s']:.3f}s, X_judge forward {results['parts:judge_forward']['median_s']:.3f}s "
            f"(one wrong record in three) -> {results['parts']['median_s']:.3f}s"
        )
    checks = []

    def ratio(a, b):
        return results[a]["median_s"] / results[b]["median_s"]

    def mem(a, b):
        return results[a]["peak_mb"] / results[b]["peak_mb"]

    have = {name for name, r in results.items() if "median_s" in r and "peak_mb" in r} | {
        name for name, r in results.items() if name == "parts" and "median_s" in r
    }
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
