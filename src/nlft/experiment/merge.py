"""One experiment from folders or chunks that each ran part of it."""

from __future__ import annotations

from typing import Any

from ..train.methods import METHODS
from .options import ExperimentOptions
from .plan import DEFAULTS
from .results import Collected, rows_from_cells

# Settings that must agree for two folders' rows to be one experiment's: all but the sizes and where it ran.
MERGE_SAME = ("model", "task", "judge", "judge_model", "pool_questions", "pool_samples", "pool_temperature", "ratio", "methods", "seeds", "epochs",
              "learning_rate", "learning_rates", "test_questions", "batch_size", "train_args", "dtype",
              "max_new_tokens")  # fmt: skip


def _setting(options: dict[str, Any], key: str) -> Any:
    return options.get(key, DEFAULTS.get(key))


def merge_results(results: list[dict[str, Any]]) -> tuple[ExperimentOptions, Collected]:
    """One experiment's options and rows from the ``results.json`` of folders that ran the same plan at different
    sizes (say, on different machines). Their pools must be the same for the sizes to nest: the settings other than
    ``sizes`` must agree and the base model must have scored the same; a (size, method, epoch) in two inputs is
    refused rather than chosen."""
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]["options"]
    base = results[0]["rows"][0]["base"] if results[0]["rows"] else None
    rows: dict[tuple, dict[str, Any]] = {}
    for i, data in enumerate(results, 1):
        differ = [k for k in MERGE_SAME if _setting(data["options"], k) != _setting(first, k)]
        if differ:
            raise ValueError(f"input {i}: settings other than input 1's: {', '.join(differ)}")
        scored = {r["base"] for r in data["rows"]}
        if scored - {base}:
            raise ValueError(
                f"input {i}: the base model scored {sorted(scored)}, in input 1 {base}: another pool"
            )
        for r in data["rows"]:
            key = (r["size"], r["method"], r["epoch"])
            if key in rows:
                raise ValueError(
                    f"input {i}: size {key[0]}, {key[1]}, epoch {key[2]:g} is in an earlier input too"
                )
            rows[key] = r
    options = {k: v for k, v in first.items() if k in ExperimentOptions.__dataclass_fields__}
    options.update(sizes=sorted({size for size, _, _ in rows}), out="(merged)", dry_run=False)
    return ExperimentOptions(**options), Collected([rows[k] for k in sorted(rows)], [], {}, {})


# What may differ between chunks of one experiment (say, on different machines): which cells each ran.
CHUNK_MAY_DIFFER = ("methods", "seeds", "sizes", "learning_rates", "tuned_rates")


def merge_chunks(results: list[dict[str, Any]]) -> tuple[ExperimentOptions, Collected]:
    """One experiment from the ``results.json`` of chunks that each ran some of its cells (a group of methods, a
    size, a seed). Refused: settings that differ other than which cells ran; another base model score on any
    question (another pool, test set or decoding); a method with two learning rates; a cell in two chunks."""
    if not results:
        raise ValueError("nothing to merge")
    same = [k for k in MERGE_SAME if k not in CHUNK_MAY_DIFFER] + ["tune_rates", "tune_size", "tune_seed",
                                                                    "tune_questions", "eval_epochs"]  # fmt: skip
    first = results[0]
    found: dict[str, dict[str, Any]] = {}
    rates: dict[str, float] = {}
    tuning: dict[str, Any] = {}
    for i, data in enumerate(results, 1):
        if "cells" not in data or "base" not in data:
            raise ValueError(
                f"input {i}: written before chunks kept their cells; rerun its experiment to rewrite it"
            )
        differ = [k for k in same if _setting(data["options"], k) != _setting(first["options"], k)]
        if differ:
            raise ValueError(f"input {i}: settings other than input 1's: {', '.join(differ)}")
        if data["base"] != first["base"]:
            raise ValueError(
                f"input {i}: the base model answered the test questions otherwise than in input 1: another pool, "
                "test set or machine"
            )
        if data.get("tuning") and tuning and data["tuning"]["settings"] != tuning["settings"]:
            raise ValueError(f"input {i}: tuned with other settings than an earlier input")
        for method, t in (data.get("tuning") or {}).get("methods", {}).items():
            earlier = tuning.get("methods", {}).get(method)
            if earlier is not None and earlier != t:
                raise ValueError(f"input {i}: {method}'s tuning differs from an earlier input's")
            tuning.setdefault("settings", data["tuning"]["settings"])
            tuning.setdefault("methods", {})[method] = t
        for cell in data["cells"]:
            if cell["name"] in found:
                raise ValueError(f"input {i}: {cell['name']} is in an earlier input too")
            if rates.setdefault(cell["method"], cell["learning_rate"]) != cell["learning_rate"]:
                raise ValueError(
                    f"input {i}: {cell['name']} trained at rate {cell['learning_rate']:g}, other {cell['method']} "
                    f"runs at {rates[cell['method']]:g}"
                )
            found[cell["name"]] = cell
    cells_ = sorted(found.values(), key=lambda c: (c["size"], list(METHODS).index(c["method"]), c["seed"]))
    options = {k: v for k, v in first["options"].items() if k in ExperimentOptions.__dataclass_fields__}
    options.update(
        sizes=sorted({c["size"] for c in cells_}),
        seeds=sorted({c["seed"] for c in cells_}),
        methods=[m for m in METHODS if m in rates],
        learning_rates={},
        tuned_rates=rates,
        out="(merged)",
        dry_run=False,
    )
    return ExperimentOptions(**options), Collected(
        rows_from_cells(cells_, first["base"]), cells_, first["base"], tuning
    )
