"""One results table and plot from experiment folders that ran the same plan at different sizes.

The committed mini grid ran 25/50/100 records in one folder and 200 in another (the first folder was on an earlier
machine). Both sample the same pool (the same model, questions, seed and judge), so their nested subsets are the
same prefixes; this script refuses folders whose settings other than ``sizes`` differ, or whose base model scored
differently, and writes the union of their rows through ``nlft.experiment.write_results``: the same table, CSV,
JSON and plot as one folder would have written.

    python bench/experiment_merge.py bench/results/experiment-grid.json runs/size200/results.json \
        --out bench/results/experiment-grid
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from nlft.experiment import ExperimentOptions, write_results

# Settings that must agree for two folders' rows to belong to one experiment (all but sizes and where it ran).
SAME = ("model", "task", "judge", "judge_model", "pool_questions", "ratio", "methods", "seeds", "epochs",
        "learning_rate", "learning_rates", "test_questions", "batch_size", "train_args", "dtype")  # fmt: skip


def merge(results: list[dict]) -> tuple[ExperimentOptions, list[dict]]:
    first = results[0]["options"]
    rows: dict[tuple, dict] = {}
    for i, data in enumerate(results):
        differ = [k for k in SAME if data["options"].get(k) != first.get(k)]
        if differ:
            raise ValueError(f"input {i + 1}: other settings than input 1: {', '.join(differ)}")
        bases = {r["base"] for r in data["rows"]}
        if bases != {results[0]["rows"][0]["base"]}:
            raise ValueError(
                f"input {i + 1}: the base model scored {bases}, input 1 {results[0]['rows'][0]['base']}"
            )
        for r in data["rows"]:
            key = (r["size"], r["method"], r["epoch"])
            if key in rows:
                raise ValueError(f"input {i + 1}: size {key[0]} {key[1]} epoch {key[2]:g} is in two inputs")
            rows[key] = r
    sizes = sorted({r["size"] for r in rows.values()})
    options = ExperimentOptions(**{**first, "sizes": sizes, "out": "(merged)", "dry_run": False})
    return options, [rows[k] for k in sorted(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", metavar="RESULTS_JSON")
    parser.add_argument("--out", required=True, help="prefix: writes PREFIX.md, .csv, .json and .png")
    args = parser.parse_args()
    try:
        options, rows = merge([json.loads(Path(p).read_text(encoding="utf-8")) for p in args.inputs])
    except (OSError, ValueError) as exc:
        sys.exit(f"experiment_merge: error: {exc}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_results(options, Path(tmp), rows)
        for kind, path in paths.items():
            target = Path(f"{args.out}.{kind}")
            target.write_bytes(path.read_bytes())
            print(target)


if __name__ == "__main__":
    main()
