"""One results table and plot from experiment folders, or chunks, that ran parts of the same plan.

Chunks (results.json files that keep their cells: every run's figures and per-question outcomes) may each have
run any sizes, seeds and methods of one plan; ``nlft.experiment.merge_chunks`` joins them, refusing other
settings, a base model that answered otherwise, a method at two rates, or a cell twice. Older results.json files
(rows only) are joined by size with ``merge_results``:

The committed mini grid ran 25/50/100 records in one folder and 200 in another (the first folder was on an earlier
machine). Both sampled the same pool (the same model, questions, seed and judge), so their nested subsets are the
same prefixes. ``nlft.experiment.merge_results`` refuses folders whose settings other than ``sizes`` differ, or
whose base model scored differently; the union of their rows goes through ``nlft.experiment.write_results``: the
same table, CSV, JSON and plot as one folder would have written.

    python bench/experiment_merge.py bench/results/experiment-grid.json runs/size200/results.json \\
        --out bench/results/experiment-grid
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from nlft.experiment import merge_chunks, merge_results, write_results
from nlft.jsonl import atomic_write_bytes


def load(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("options"), dict)
        or not isinstance(data.get("rows"), list)
    ):
        raise ValueError(f"{path}: no experiment results (a results.json has 'options' and 'rows')")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", metavar="RESULTS_JSON")
    parser.add_argument("--out", required=True, help="prefix: writes PREFIX.md, .csv, .json and .png")
    args = parser.parse_args()
    try:
        inputs = [load(p) for p in args.inputs]
        merge = merge_chunks if all("cells" in data for data in inputs) else merge_results
        options, collected = merge(inputs)
        with tempfile.TemporaryDirectory() as tmp:
            written = write_results(options, Path(tmp), collected)
            for kind, path in written.items():
                target = Path(f"{args.out}.{kind}")
                atomic_write_bytes(target, path.read_bytes())  # replaces a link, never writes through it
                print(target)
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"experiment_merge: error: {exc}")


if __name__ == "__main__":
    main()
