"""``run_experiment``: the whole experiment, every step resumed."""

from __future__ import annotations

import time
from pathlib import Path

from .options import ExperimentOptions
from .plan import cells, check_same_plan, estimate, plan_text
from .results import collect, write_results
from .steps import build_data, evaluate, train_cell
from .tuning import reuse_tuning_run, tune_rates


def run_experiment(o: ExperimentOptions) -> int:
    """Run (or continue) the experiment; returns the exit status."""
    print(plan_text(o), flush=True)
    if o.dry_run:
        cost = estimate(o)
        if cost:
            print(cost)
        return 0
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    check_same_plan(out, o)
    started = time.time()
    build_data(o, out)
    if o.tuned():
        tune_rates(o, out)
    for cell in cells(o):
        if not reuse_tuning_run(o, out, cell):
            train_cell(o, out, cell)
        evaluate(o, out / "runs" / cell.name, all_checkpoints=o.eval_epochs == "all")
    evaluate(o, out / "base", model=o.model)
    collected = collect(o, out)
    paths = write_results(o, out, collected)
    print(f"\nexperiment finished in {time.time() - started:.0f}s")
    print(Path(paths["md"]).read_text(encoding="utf-8"))
    print(f"results: {paths['md']}, {paths['csv']}, {paths['json']}; plot: {paths['png']}")
    return 0
