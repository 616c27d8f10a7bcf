"""Padding in NLFT's passes on a realistic length distribution, with random and with length-grouped batches.

    python bench/bench_padding.py [--batch 4 8] [--shared ../shared]

Records: real GSM8K responses and judgments — the wrong ones are MathCritique's (a model's answer and a
written critique), the correct ones the GSM8K example model solutions marked correct — in the 1:2 wrong:correct
mix, encoded by the GSM8K templates with the embedded tokenizer. Each micro-batch runs the passes NLFT runs: the
training pass over the X_base rows, and the scoring pass over the X_std rows and the X_judge rows of its wrong
records, fused into one forward (so that every rank runs the same forwards, docs/method.md). A pass pads every row
to its longest one; the padded fraction is the share of computed positions that are padding, over an epoch.

Orders compared: ``random`` (transformers' RandomSampler, what NLFT used before) and ``group_by_length`` (the
default now: transformers' LengthGroupedSampler over each record's widest sequence, ``EncodedRecord.width``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from nlft.data.sources import from_mathcritique
from nlft.models.tiny import load_tokenizer
from nlft.prompts import RecordEncoder
from nlft.records import Record


def realistic_records(shared: Path, n_wrong: int, seed: int = 0) -> list[Record]:
    wrong = list(from_mathcritique(shared / "data/mathcritique/mathcritique_gsm8k_triples.jsonl"))
    correct = []
    with open(shared / "data/gsm8k/example_model_solutions.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f):
            row = json.loads(line)
            for model, out in row.items():
                if isinstance(out, dict) and out.get("is_correct"):
                    correct.append(
                        Record(id=f"ex{i}-{model}", question=row["question"], response=out["solution"],
                               reference=row["ground_truth"], correct=True)
                    )  # fmt: skip
    rng = random.Random(seed)
    rng.shuffle(wrong)
    rng.shuffle(correct)
    return wrong[:n_wrong] + correct[: 2 * n_wrong]


def passes(batch) -> list[list[int]]:
    """The row lengths of each forward a micro-batch runs: training pass, scoring pass."""
    train = [len(r.response_ids) + len(r.prompt_ids["base"]) for r in batch]
    score = [len(r.response_ids) + len(r.prompt_ids["std"]) for r in batch]
    score += [len(r.response_ids) + len(r.prompt_ids["judge"]) for r in batch if not r.correct]
    return [train, score]


def padded_fraction(encoded, order, batch_size: int) -> tuple[float, float]:
    """Padded share of the computed positions: over both passes, and over the training pass alone (the costly
    one: forward and backward)."""
    real, computed = [0, 0], [0, 0]
    for start in range(0, len(order), batch_size):
        batch = [encoded[i] for i in order[start : start + batch_size]]
        for k, rows in enumerate(passes(batch)):
            real[k] += sum(rows)
            computed[k] += max(rows) * len(rows)
    return 1 - sum(real) / sum(computed), 1 - real[0] / computed[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[2, 4, 8], help="per-device micro-batch sizes"
    )
    parser.add_argument("--wrong", type=int, default=100, help="wrong records (twice as many correct)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs (orders) averaged over")
    parser.add_argument(
        "--accumulation", type=int, default=4, help="gradient accumulation (the sampler groups by it)"
    )
    args = parser.parse_args()
    if not (args.shared / "data/mathcritique").is_dir():
        sys.exit(f"bench_padding: needs the shared data folder ({args.shared}/data); pass --shared")
    records = realistic_records(args.shared, args.wrong)
    encoded = RecordEncoder(load_tokenizer(), "math", max_length=4096).encode_all(records).records
    widths = [r.width for r in encoded]
    print(
        f"## Padding in NLFT's passes: {len(encoded)} GSM8K records (1:2 wrong:correct), embedded tokenizer\n"
    )
    print(
        f"record width (longest sequence) median {statistics.median(widths):.0f}, "
        f"p10 {sorted(widths)[len(widths) // 10]}, p90 {sorted(widths)[9 * len(widths) // 10]} tokens\n"
    )
    print(
        "| micro-batch | padded, random order | padded, group_by_length | training pass: random | training pass: grouped | positions computed, grouped / random |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for b in args.batch:
        rand, grouped, ratio, train_r, train_g = [], [], [], [], []
        for epoch in range(args.epochs):
            g = torch.Generator().manual_seed(epoch)
            order_r = torch.randperm(len(encoded), generator=g).tolist()
            sampler = LengthGroupedSampler(b * args.accumulation, lengths=widths, generator=g)
            order_g = list(sampler)
            (pr, tr), (pg, tg) = padded_fraction(encoded, order_r, b), padded_fraction(encoded, order_g, b)
            rand.append(pr)
            grouped.append(pg)
            train_r.append(tr)
            train_g.append(tg)
            ratio.append((1 - pr) / (1 - pg))  # the same real tokens: computed positions scale as 1/(1-f)
        print(
            f"| {b} | {statistics.mean(rand):.1%} | {statistics.mean(grouped):.1%} | {statistics.mean(train_r):.1%} "
            f"| {statistics.mean(train_g):.1%} | {statistics.mean(ratio):.2f} |"
        )


if __name__ == "__main__":
    main()
