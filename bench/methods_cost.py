"""The training methods' costs measured in one run on one machine: each method trains the same records with the
experiment's own training command (same LoRA, schedule, batch and rollout length), back to back, and the table
gives time per record-epoch, peak memory, tokens generated, and each as a fraction of GRPO's beside the paper's
(NLFT against ReFT: time 0.22, memory 0.08). The experiment grid's cost columns come from chunks run in different
sessions on a shared machine, so its ratios across methods are not like for like; these are.

    python bench/methods_cost.py                                   # SmolLM2, the grid's 25 records, 1 epoch
    python bench/methods_cost.py --methods grpo nlft sft --epochs 1

Runs go to --out (resumed: a finished run is not trained again); the table to --results .md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "bench" / "results" / "smollm2" / "state"
PAPER = {"seconds_per_epoch": 0.22, "peak_memory_mb": 0.08}


def table(costs: dict[str, dict], against: str = "grpo") -> str:
    """Markdown rows of each method's cost and its ratio to ``against``'s (time per epoch, peak memory)."""
    base = costs.get(against)

    def ratio(method, key):
        if not base or not base.get(key) or costs[method].get(key) is None:
            return "-"
        return f"{costs[method][key] / base[key]:.2f}"

    lines = [
        f"| method | s per record-epoch | s per epoch | peak memory (MB) | tokens generated per record-epoch | "
        f"time / {against} | memory / {against} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, c in costs.items():
        lines.append(
            f"| {method} | {c['seconds_per_record_epoch']:.2f} | {c['seconds_per_epoch']:.1f} | "
            f"{'-' if c['peak_memory_mb'] is None else round(c['peak_memory_mb'])} | {c['tokens_generated_per_record_epoch']:.0f} | "
            f"{ratio(method, 'seconds_per_epoch')} | {ratio(method, 'peak_memory_mb')} |"
        )
    return "\n".join(lines)


def cost_of(run: Path, records: int, epochs: int) -> dict:
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    seconds = info["train_seconds"]
    return {
        "seconds_per_record_epoch": seconds / (records * epochs),
        "seconds_per_epoch": seconds / epochs,
        "peak_memory_mb": info.get("peak_memory_mb"),
        "tokens_generated_per_record_epoch": info.get("tokens_generated", 0) / (records * epochs),
        "learning_rate": info.get("learning_rate"),
    }


def main() -> int:
    from nlft.experiment import Cell, ExperimentOptions, read_experiment_config
    from nlft.experiment.steps import finished, train_run
    from nlft.jsonl import atomic_write_text

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "configs" / "experiment-smollm2.yaml"))
    parser.add_argument("--data", default=str(STATE / "data" / "size-25" / "nlft.jsonl"))
    parser.add_argument("--methods", nargs="+", help="default: the config's, GRPO first")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--rates", default=str(STATE / "tuning" / "rates.json"), help="tuned rates (else 6e-4)"
    )
    parser.add_argument("--out", default=str(ROOT / "runs" / "methods-cost"))
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "methods-cost-smollm2"))
    args = parser.parse_args()
    try:
        settings = read_experiment_config(args.config)
        methods = args.methods or sorted(settings["methods"], key=lambda m: m != "grpo")
        records = [line for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line.strip()]
        size = len(records)
        out = Path(args.out).resolve()
        data = out / "data" / f"size-{size}" / "nlft.jsonl"
        text = "\n".join(records) + "\n"
        if data.is_file() and data.read_text(encoding="utf-8") != text:
            raise ValueError(f"{data}: other records than {args.data}; use another --out")
        data.parent.mkdir(parents=True, exist_ok=True)
        if not data.is_file():
            atomic_write_text(data, text)
        tuned = {}
        if Path(args.rates).is_file():
            tuned = {m: v["chosen"] for m, v in json.loads(Path(args.rates).read_text())["methods"].items()}
        o = ExperimentOptions(**{**settings, "epochs": args.epochs, "out": str(out), "methods": methods})
        o.tuned_rates.update(tuned)
        costs, started = {}, time.time()
        for method in methods:
            cell = Cell(method, size, 0)
            run = out / "runs" / cell.name
            rate = tuned.get(method, 6e-4)
            if not finished(run):
                train_run(o, run, out, cell, rate)
            costs[method] = cost_of(run, size, args.epochs)
            costs[method]["learning_rate"] = rate
        body = (
            f"## The methods' training costs on {o.model}, {size} records, {args.epochs} epoch(s), one run\n\n"
            f"```bash\npython bench/methods_cost.py {' '.join(sys.argv[1:])}\n```\n\n"
            f"Each method trains `{Path(args.data).relative_to(ROOT) if Path(args.data).resolve().is_relative_to(ROOT) else args.data}` "
            f"with the experiment's command (`{Path(args.config).name}`: batch {o.batch_size}, the same LoRA, rollouts "
            f"of up to {o.max_new_tokens} tokens, trl's defaults for the on-policy methods' rollouts per question, "
            f"trained one question's rollouts per forward), seed 0, at its tuned rate where there is one (else "
            f"6e-4: {', '.join(m for m in methods if m not in tuned) or 'none'}), back to back on one machine "
            f"({time.time() - started:.0f} s in all, finished runs reused). Peak memory is the process's peak RSS.\n\n"
            + table(costs)
            + f"\n\nThe paper's ratios, NLFT against ReFT: time {PAPER['seconds_per_epoch']:.2f}, memory "
            f"{PAPER['peak_memory_mb']:.2f}.\n"
        )
        results = Path(args.results)
        atomic_write_text(results.with_suffix(".md"), body)
        atomic_write_text(results.with_suffix(".json"), json.dumps(costs, indent=1) + "\n")
        print(body)
        return 0
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        print(f"methods_cost: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
