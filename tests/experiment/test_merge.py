"""Folders and chunks of one experiment joined into one table; chunks of another plan refused."""

import pytest

from nlft.experiment import ExperimentOptions


def test_results_of_two_folders_merge_into_one_experiment_and_other_pools_are_refused(tmp_path):
    from dataclasses import asdict

    from nlft.experiment import merge_results, write_results

    def results(sizes, base=0.36, **changed):
        options = asdict(
            ExperimentOptions(out="x", sizes=sizes, methods=["nlft", "sft"], seeds=[0], epochs=1)
        )
        rows = [
            {"size": n, "method": m, "epoch": 1.0, "seeds": 1, "accuracy": [a], "mean": a, "sd": None, "base": base,
             "seconds_per_record_epoch": 0.1, "seconds_per_epoch": 0.1 * n, "peak_memory_mb": 800.0,
             "tokens_generated_per_record_epoch": 0.0}
            for n, m, a in [(s, m, 0.3 + s / 1000 + (m == "sft") / 100) for s in sizes for m in ("nlft", "sft")]
        ]  # fmt: skip
        return {"options": {**options, **changed}, "rows": rows}

    small, large = results([25, 50]), results([200], out="elsewhere", device="cpu")
    options, collected = merge_results([large, small])
    rows = collected.rows
    assert options.sizes == [25, 50, 200] and options.methods == ["nlft", "sft"]
    assert [(r["size"], r["method"]) for r in rows] == [
        (s, m) for s in (25, 50, 200) for m in ("nlft", "sft")
    ]
    assert rows[-1]["accuracy"] == [0.3 + 0.2 + 0.01]  # the 200 sft row, untouched
    table = write_results(options, tmp_path, collected)["md"].read_text()
    assert "| 200 | sft | 1 | 51.0 |" in table and "| 25 | nlft | 1 | 32.5 |" in table
    with pytest.raises(ValueError, match="input 2: settings other than input 1's: pool_questions"):
        merge_results([small, results([200], pool_questions=999)])
    with pytest.raises(ValueError, match="input 2: the base model scored"):
        merge_results([small, results([200], base=0.4)])
    with pytest.raises(ValueError, match="size 50, nlft, epoch 1 is in an earlier input"):
        merge_results([small, results([50])])


def _chunk(cells, base="0101", **changed):
    from dataclasses import asdict

    options = asdict(ExperimentOptions(out="x", methods=["nlft", "sft"], seeds=[0], epochs=1, sizes=[25]))
    outcomes = {"authors": base, "strict": base, "flexible": base, "formatted": "1111", "truncated": "0000",
                "chars": "10 20 30 40", "verdict": "cccc"}  # fmt: skip
    found = []
    for method, size, seed, rate, authors in cells:
        found.append(
            {
                "name": f"{method}-{size}-s{seed}", "method": method, "size": size, "seed": seed,
                "learning_rate": rate, "epochs": {"1": {"authors": authors.count("1") / 4, "strict": 0.0,
                                                         "flexible": 0.0}},
                "seconds_per_record_epoch": 0.1, "seconds_per_epoch": 1.0, "peak_memory_mb": 800.0,
                "tokens_generated_per_record_epoch": 0.0,
                "outcomes": {**outcomes, "authors": authors},
            }
        )  # fmt: skip
    return {
        "options": {**options, **changed}, "rows": [], "cells": found, "tuning": {},
        "base": {"accuracy": {"authors": 0.5}, "outcomes": outcomes, "question_ids": ["a", "b", "c", "d"]},
    }  # fmt: skip


def test_chunks_of_methods_and_seeds_merge_into_one_grid_and_conflicts_are_refused(tmp_path):
    from nlft.experiment import merge_chunks, write_results

    first = _chunk([("nlft", 25, 0, 5e-4, "1111"), ("sft", 25, 0, 2e-4, "0001")])
    second = _chunk([("nlft", 25, 1, 5e-4, "1110"), ("sft", 25, 1, 2e-4, "0011"), ("nlft", 50, 0, 5e-4, "1111")],
                    out="elsewhere")  # fmt: skip
    options, collected = merge_chunks([first, second])
    assert options.seeds == [0, 1] and options.sizes == [25, 50] and options.methods == ["nlft", "sft"]
    assert options.rate("sft") == 2e-4
    row = next(r for r in collected.rows if r["size"] == 25 and r["method"] == "nlft")
    assert row["accuracy"] == [1.0, 0.75] and row["seed_ids"] == [0, 1]
    paths = write_results(options, tmp_path, collected)
    table = paths["md"].read_text()
    # NLFT - SFT over seeds 0 and 1: (4 - 1) + (3 - 2) right answers of 8 = +50.0 points
    assert "| 25 | sft | 2 | 4 | +50.0 |" in table
    with pytest.raises(ValueError, match="input 2: nlft-25-s0 is in an earlier input"):
        merge_chunks([first, _chunk([("nlft", 25, 0, 5e-4, "1111")])])
    with pytest.raises(ValueError, match="sft-25-s1 trained at rate 0.001"):
        merge_chunks([first, _chunk([("sft", 25, 1, 1e-3, "1111")])])
    with pytest.raises(ValueError, match="answered the test questions otherwise"):
        merge_chunks([first, _chunk([("sft", 25, 1, 2e-4, "1111")], base="0111")])
    with pytest.raises(ValueError, match="settings other than input 1's: pool_samples"):
        merge_chunks([first, _chunk([("sft", 25, 1, 2e-4, "1111")], pool_samples=4, pool_temperature=0.7)])
