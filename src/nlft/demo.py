"""``nlft demo``: the embedded default, end to end on CPU with nothing downloaded."""

from __future__ import annotations

import argparse
from pathlib import Path

from .builder import build_dataset
from .prompts import RecordEncoder
from .records import load_records
from .tiny import SAMPLE_RECORDS, load_tokenizer


def run_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    print(f"nlft demo: bundled sample {SAMPLE_RECORDS.name} -> {out}")
    built = build_dataset(SAMPLE_RECORDS, out / "data", size=args.size, ratio="2:1", seed=args.seed)
    print(built.summary())
    tokenizer = load_tokenizer()
    encoder = RecordEncoder(tokenizer, "math", max_length=2048)
    records = load_records(built.nlft_path)
    result = encoder.encode_all(records)
    print(f"\n{result.summary()} with the project tokenizer ({len(tokenizer)} tokens, Llama-3 chat template)")
    print(f"\n{'id':<28} {'kind':<8} {'base':>5} {'std':>5} {'judge':>5} {'response':>8}")
    for enc in result.records:
        p = enc.prompt_ids
        judge = str(len(p["judge"])) if "judge" in p else "-"
        kind = "correct" if enc.correct else "wrong"
        print(f"{enc.id:<28} {kind:<8} {len(p['base']):>5} {len(p['std']):>5} {judge:>5} {len(enc.response_ids):>8}")
    wrong = next((r for r in records if not r.is_correct), None)
    if wrong is not None:
        print(f"\nThe three prompts of {wrong.id} (the same {len(encoder.encode(wrong).response_ids)} response tokens follow each):")
        for kind in encoder.kinds_for(wrong):
            text = encoder.prompt_text(kind, wrong)
            print(f"\n--- X_{kind} (last 300 characters) ---\n{text[-300:]}")
    print(f"\nWrote {built.nlft_path}, {built.sft_path} and {built.manifest_path}.")
    return 0
