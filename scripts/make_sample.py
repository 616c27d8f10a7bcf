"""Make the sample data shipped in src/nlft/resources/sample from ../shared/data.

    python scripts/make_sample.py --shared ../shared

* records.jsonl: 12 wrong Llama-3-8B answers with GPT-4 critiques (MathCritique, Apache-2.0) and 24 GSM8K
  train gold solutions as correct responses (MIT): a 1:2 wrong:correct pool for the demo and tests.
* gsm8k_test_sample.jsonl: the first 50 GSM8K test questions (MIT), for a quick evaluation.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from nlft.data.sources import from_mathcritique, gsm8k_gold_records
from nlft.jsonl import atomic_write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path("src/nlft/resources/sample"))
    args = parser.parse_args()
    data = args.shared / "data"
    wrong = sorted(
        from_mathcritique(data / "mathcritique/mathcritique_gsm8k_triples.jsonl"), key=lambda r: r.id
    )[:12]
    used = {r.question for r in wrong}
    correct = list(gsm8k_gold_records("train", data / "gsm8k", exclude=used, limit=24))
    atomic_write_jsonl(args.out / "records.jsonl", (r.to_dict() for r in wrong + correct))
    with open(data / "gsm8k/test.jsonl", encoding="utf-8") as fh:
        test = [json.loads(line) for _, line in zip(range(50), fh)]
    atomic_write_jsonl(args.out / "gsm8k_test_sample.jsonl", test)
    shutil.copyfile(data / "mathcritique/LICENSE.txt", args.out / "LICENSE-MathCritique.txt")
    shutil.copyfile(data / "gsm8k/LICENSE.txt", args.out / "LICENSE-GSM8K.txt")
    print(
        f"wrote {len(wrong)} wrong + {len(correct)} correct records and {len(test)} test questions to {args.out}"
    )


if __name__ == "__main__":
    main()
