"""``nlft experiment``: the paper's comparison in one command — methods x data sizes x seeds, every cell evaluated.

    OUT/pool/samples.jsonl, judged.jsonl   the model's own answers to the task's train questions, judged
    OUT/data/size-N/nlft.jsonl            nested subsets (every smaller set is a prefix of the larger ones)
    OUT/tuning/                           with --tune-rates: each method at each rate, scored on held-out train
                                          questions; rates.json keeps the choice
    OUT/runs/<method>-N-s<seed>/          one training run per cell, its epochs' adapters saved and evaluated
    OUT/base/                             the base model on the same test questions
    OUT/results.{md,csv,json}, plot.png   mean and sd over seeds per size, method and epoch; NLFT paired with each
                                          method; what the answers look like; costs; the paper's plot

Every step resumes: sampling and judging from their append-only files, a finished cell is not trained again, an
evaluation reruns only the questions it lacks. ``dry_run`` prints the plan and what it will cost.

The modules, in the order a run goes through them: ``options`` (the settings), ``plan`` (cells, subsets, the
folder's identity), ``steps`` (data, training, evaluation), ``tuning`` (the learning rates), ``results`` (the
tables), ``merge`` (folders or chunks joined), ``runner`` (all of it).
"""

from .merge import merge_chunks, merge_results
from .options import ExperimentOptions, read_experiment_config
from .plan import Cell, cells, nested_subsets, plan_text
from .results import Collected, collect, cost_ratios, write_results
from .runner import run_experiment
from .steps import run_child
from .tuning import choose_rate, held_out_questions, reuse_tuning_run, tune_rates

__all__ = [
    "Cell", "Collected", "ExperimentOptions", "cells", "choose_rate", "collect", "cost_ratios", "held_out_questions",
    "merge_chunks", "merge_results", "nested_subsets", "plan_text", "read_experiment_config", "run_child",
    "reuse_tuning_run", "run_experiment", "tune_rates", "write_results",
]  # fmt: skip
