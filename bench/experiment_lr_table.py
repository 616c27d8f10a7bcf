"""The learning-rate check of the committed mini experiment: every method at 25 records, its last epoch, one
experiment folder per rate (the same records, seeds and schedule in each), as one table.

    python bench/experiment_lr_table.py 3e-4=runs/lr-3e-4 1e-3=runs/grid 3e-3=runs/lr-3e-3 [--size 25]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", metavar="RATE=FOLDER")
    parser.add_argument("--size", type=int, default=25)
    args = parser.parse_args()
    table: dict[str, dict[str, str]] = {}
    rates = []
    for item in args.folders:
        rate, _, folder = item.partition("=")
        rates.append(rate)
        rows = json.loads((Path(folder) / "results.json").read_text())["rows"]
        last = max(r["epoch"] for r in rows)
        for r in rows:
            if r["size"] == args.size and r["epoch"] == last:
                sd = "" if r["sd"] is None else f" ± {100 * r['sd']:.1f}"
                table.setdefault(r["method"], {})[rate] = f"{100 * r['mean']:.1f}{sd} (n={r['seeds']})"
    print("| method | " + " | ".join(f"lr {r}" for r in rates) + " |")
    print("|---|" + "---:|" * len(rates))
    for method, cells in table.items():
        print(f"| {method} | " + " | ".join(cells.get(r, "-") for r in rates) + " |")


if __name__ == "__main__":
    main()
