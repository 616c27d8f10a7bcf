"""Generation on the CPU: ``HFBackend`` against a plain batched ``model.generate``, in one run.

    python bench/bench_generate.py [--model nlft:smollm2] [--questions 200] [--max-new-tokens 128]

The same greedy task both ways: the first ``--questions`` mini-math test questions under the paper protocol's
prompt (the X_base prompt: the math system prompt, then the question, through the chat template).

* **plain**: ``model.generate`` on left-padded batches of 32 in the questions' order, as one would write it;
* **HFBackend**: nlft's back-end on its continuous-batching loop (``nlft.models.decoding``): prompts longest
  first, the prefix every question shares (the system prompt, about two thirds of each prompt) computed once, a
  key/value buffer written in place rather than grown by concatenation, and each row refilled with the next
  prompt as soon as its answer ends; at 32 rows and at each of ``--rows``.

Reported: questions per second of each, their ratio to plain's, and how many answers are token for token the
plain run's (greedy decoding: they should all be). Writes ``bench/results/generate.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nlft.evals.protocols import PaperProtocol
from nlft.models.generation import HFBackend, SamplingSettings
from nlft.models.loading import load_model
from nlft.tasks import get_task


def plain_generate(
    model, tokenizer, backend: HFBackend, prompts: list[list[int]], max_new_tokens: int, batch: int
):
    """The baseline: left-padded batches in order, ``model.generate`` greedy; the new tokens of each prompt."""
    out_tokens = []
    for start in range(0, len(prompts), batch):
        part = prompts[start : start + batch]
        width = max(len(p) for p in part)
        ids = torch.full((len(part), width), backend.pad_id, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        for i, p in enumerate(part):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=backend.pad_id, eos_token_id=backend.eos_ids, temperature=None, top_p=None, top_k=None,
            )  # fmt: skip
        out_tokens += [out[i, width:].tolist() for i in range(len(part))]
    return [backend._completion(t).text for t in out_tokens]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="nlft:smollm2")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--rows", default="64,128", help="HFBackend row counts besides 32, comma-separated")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "generate.json")
    args = parser.parse_args()

    model, tokenizer, _ = load_model(args.model, dtype="float32", device="cpu")
    questions = get_task("mini-math").load("test", limit=args.questions)
    requests = [p.request for p in PaperProtocol("math").build(questions)]
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens)
    backend = HFBackend(model, tokenizer, settings, batch_size=32)
    prompts = [backend.prompt_ids(r) for r in requests]
    shared = backend._shared_prefix(prompts)
    print(
        f"{len(requests)} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, {shared} shared"
    )

    rows = []
    started = time.perf_counter()
    baseline = plain_generate(model, tokenizer, backend, prompts, args.max_new_tokens, 32)
    plain_s = time.perf_counter() - started
    rows.append({"run": "plain model.generate, batch 32", "seconds": plain_s, "identical": len(baseline)})
    print(f"plain: {plain_s:.1f}s")
    for batch in [32] + [int(r) for r in args.rows.split(",") if r]:
        runner = HFBackend(model, tokenizer, settings, batch_size=batch)
        started = time.perf_counter()
        texts = {r.key: c.text for r, c in runner.generate(requests)}
        seconds = time.perf_counter() - started
        same = sum(texts[r.key] == b for r, b in zip(requests, baseline))
        rows.append(
            {
                "run": f"HFBackend, {batch} rows (continuous batching, shared prefix)",
                "seconds": seconds,
                "identical": same,
            }
        )
        print(f"HFBackend {batch} rows: {seconds:.1f}s, {same} of {len(requests)} answers identical")
    for row in rows:
        row["questions_per_second"] = len(requests) / row["seconds"]
        row["speedup"] = plain_s / row["seconds"]

    result = {
        "model": args.model,
        "questions": len(requests),
        "max_new_tokens": args.max_new_tokens,
        "prompt_tokens": [min(map(len, prompts)), max(map(len, prompts))],
        "shared_prefix_tokens": shared,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    lines = [
        f"## Generation on CPU: {args.model}, {len(requests)} mini-math questions, greedy, up to "
        f"{args.max_new_tokens} new tokens ({torch.get_num_threads()} threads, one run)",
        "",
        "| run | seconds | questions/s | vs plain | answers identical to plain |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['run']} | {r['seconds']:.1f} | {r['questions_per_second']:.2f} | {r['speedup']:.2f}x | "
        f"{r['identical']} of {len(requests)} |"
        for r in rows
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
