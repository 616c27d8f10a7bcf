"""bench/smollm2_grid.py: its chunks cover the configured grid once, restoring never replaces a file, and the
committed grid is exactly what merging the committed chunks writes."""

import json
import sys
from pathlib import Path

import pytest

from . import load_bench

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def grid():
    yield load_bench("smollm2_grid")
    sys.modules.pop("smollm2_grid", None)


def test_the_planned_chunks_cover_every_cell_of_the_config_once(grid):
    cfg = grid.config()
    planned = [
        f"{m}-{n}-s{s}" for sizes, methods in grid.PLAN for n in sizes for s in cfg["seeds"] for m in methods
    ]
    assert sorted(planned) == sorted(grid.options_cells(cfg))
    assert len(planned) == len(set(planned)) == 72
    # The paper's claim first: sizes 25 and 50 of nlft, sft, rft and sft-gold are the first four chunks.
    assert grid.PLAN[:4] == [([25], ["nlft", "sft"]), ([25], ["rft", "sft-gold"]), ([50], ["nlft", "sft"]),
                             ([50], ["rft", "sft-gold"])]  # fmt: skip


def test_the_estimate_takes_a_methods_rate_from_its_chunks_then_the_cost_bench_then_the_plan(
    grid, tmp_path, monkeypatch
):
    cfg = {"tune_size": 25, "tune_seed": 0, "epochs": 2, "test_questions": 0, "tune_questions": 0,
           "tune_rates": [1e-4]}  # fmt: skip
    monkeypatch.setattr(
        grid, "committed_cells", lambda: {"sft-50-s0": {"method": "sft", "seconds_per_record_epoch": 3.6}}
    )
    monkeypatch.setattr(
        grid, "STATE", tmp_path
    )  # nothing tuned: each method's tuning is one run of 50 rec-epochs
    costs = tmp_path / "costs.json"
    costs.write_text(
        json.dumps({"sft": {"seconds_per_record_epoch": 99.0}, "grpo": {"seconds_per_record_epoch": 24.0}})
    )
    monkeypatch.setattr(grid, "COSTS", costs)
    monkeypatch.setitem(grid.PLANNING_SECONDS, "sdpo", 12.0)
    # tuning only (the seed-0 cells are the tuning runs, copied): 50 record-epochs each, 60 s per minute
    assert grid.estimate([25], [0], ["sft"], cfg).endswith("(3 min): about 3 min on 2 cores")  # 50 x 3.6 s
    assert grid.estimate([25], [0], ["grpo"], cfg).endswith("(20 min): about 20 min on 2 cores")  # 50 x 24 s
    assert grid.estimate([25], [0], ["sdpo"], cfg).endswith("(10 min): about 10 min on 2 cores")  # 50 x 12 s


def test_the_estimate_leaves_out_runs_a_stopped_chunk_finished_in_the_working_folder(
    grid, tmp_path, monkeypatch
):
    cfg = {"task": "mini-math", "tune_size": 25, "tune_seed": 0, "epochs": 2, "test_questions": 600,
           "tune_questions": 0, "tune_rates": [1e-4]}  # fmt: skip
    monkeypatch.setattr(
        grid, "committed_cells", lambda: {"sft-50-s0": {"method": "sft", "seconds_per_record_epoch": 6}}
    )
    (tmp_path / "state" / "tuning").mkdir(parents=True)
    (tmp_path / "state" / "tuning" / "rates.json").write_text('{"methods": {"sft": 6e-4}}')
    monkeypatch.setattr(grid, "STATE", tmp_path / "state")
    out = tmp_path / "out"
    assert grid.estimate([50], [1, 2], ["sft"], cfg, out).startswith(
        "estimate: 2 runs, 2 to train (20 min), all to evaluate (11 min)"  # 2 x 100 x 6 s; 2 x 600 / 1.9 s
    )
    # seed 1 trained and evaluated, seed 2 trained but its evaluation cut short
    for seed, complete in ((1, True), (2, False)):
        run = out / "runs" / f"sft-50-s{seed}"
        (run / "eval" / "paper-mini-math-test").mkdir(parents=True)
        (run / "run.json").write_text('{"finished": true}')
        (run / "eval" / "paper-mini-math-test" / "summary.json").write_text(json.dumps(
            {"protocol": "paper", "data_name": "mini-math-test", "tag": None, "complete": complete,
             "checkpoint": "final"}))  # fmt: skip
    assert grid.estimate([50], [1, 2], ["sft"], cfg, out).startswith(
        "estimate: 2 runs, 0 to train (0 min), 1 to evaluate (5 min)"
    )
    (out / "runs" / "sft-50-s2" / "run.json").write_text("{damaged")  # counted as to train, not a traceback
    assert grid.estimate([50], [1, 2], ["sft"], cfg, out).startswith("estimate: 2 runs, 1 to train (10 min)")


def test_restore_copies_what_is_missing_and_never_replaces_a_file(grid, tmp_path, monkeypatch):
    state = tmp_path / "state"
    (state / "data" / "size-25").mkdir(parents=True)
    (state / "data" / "size-25" / "nlft.jsonl").write_text("committed\n")
    (state / "experiment.json").write_text("{}\n")
    monkeypatch.setattr(grid, "STATE", state)
    out = tmp_path / "out"
    out.mkdir()
    (out / "experiment.json").write_text("mine\n")
    assert grid.restore(out) == ["data/size-25/nlft.jsonl"]
    assert (out / "experiment.json").read_text() == "mine\n"
    assert (out / "data" / "size-25" / "nlft.jsonl").read_text() == "committed\n"


def test_the_committed_grid_is_what_the_committed_chunks_merge_into(grid, tmp_path, monkeypatch):
    if not grid.chunk_files():
        pytest.skip("no chunk of the SmolLM2 grid is committed yet")
    committed = Path(f"{grid.GRID}.md").read_text(encoding="utf-8")
    monkeypatch.setattr(grid, "GRID", tmp_path / "grid")
    assert grid.merge(None) == 0
    assert (tmp_path / "grid.md").read_text(encoding="utf-8") == committed
    # Chunks ran in different sessions on a machine whose speed swings: the costs say not to compare across them.
    assert "compare them within a chunk only" in committed
    assert "(0 min," not in committed  # a resumed chunk's seconds, not a rounded-down "0 min"
    merged = json.loads((tmp_path / "grid.json").read_text(encoding="utf-8"))
    chunks = [json.loads(p.read_text(encoding="utf-8")) for p in grid.chunk_files()]
    assert len(merged["cells"]) == sum(len(c["cells"]) for c in chunks)


def test_a_chunk_outside_the_configured_grid_is_refused_before_anything_is_written(grid, tmp_path):
    import argparse

    args = argparse.Namespace(
        sizes=[25], methods=["bogus"], seeds=None, out=str(tmp_path / "out"), no_progress=True
    )
    with pytest.raises(ValueError, match="--methods bogus: not in experiment-smollm2.yaml"):
        grid.run(args)
    assert not (tmp_path / "out").exists()


def test_restore_never_writes_through_a_dangling_link(grid, tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    (state / "experiment.json").write_text("{}\n")
    monkeypatch.setattr(grid, "STATE", state)
    out = tmp_path / "out"
    out.mkdir()
    (out / "experiment.json").symlink_to(tmp_path / "elsewhere.json")
    assert grid.restore(out) == []
    assert not (tmp_path / "elsewhere.json").exists()


def test_a_relative_out_is_the_callers_folder_though_the_experiment_runs_in_the_repository(
    grid, tmp_path, monkeypatch
):
    import argparse

    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setattr(grid, "STATE", state)
    calls = []
    monkeypatch.setattr(grid.subprocess, "call", lambda command, cwd: calls.append((command, cwd)) or 3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = argparse.Namespace(sizes=[25], methods=["nlft"], seeds=None, out="work", no_progress=True)
    assert grid.run(args) == 3  # the experiment's status, passed on
    [(command, cwd)] = calls
    assert cwd == grid.ROOT
    assert command[command.index("--out") + 1] == str(elsewhere / "work")
    assert (elsewhere / "work").is_dir() and not (grid.ROOT / "work").exists()


def test_saving_the_state_adds_what_is_new_and_the_tuned_rates_but_keeps_what_was_made_once(
    grid, tmp_path, monkeypatch
):
    state = tmp_path / "state"
    (state / "base").mkdir(parents=True)
    (state / "base" / "summary.json").write_text('{"this_run": {"generated": 500}}\n')
    (state / "tuning").mkdir()
    (state / "tuning" / "rates.json").write_text('{"methods": {"nlft": 1}}\n')
    monkeypatch.setattr(grid, "STATE", state)
    out = tmp_path / "out"
    for name, text in (
        ("base/summary.json", '{"this_run": {"resumed": 500}}\n'),
        ("tuning/rates.json", '{"methods": {"nlft": 1, "rft": 2}}\n'),
        ("data/size-50/nlft.jsonl", "new\n"),
    ):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    grid.save_state(out)
    assert (state / "base" / "summary.json").read_text() == '{"this_run": {"generated": 500}}\n'
    assert (state / "tuning" / "rates.json").read_text() == '{"methods": {"nlft": 1, "rft": 2}}\n'
    assert (state / "data" / "size-50" / "nlft.jsonl").read_text() == "new\n"


def test_the_next_command_leaves_out_the_methods_and_seeds_a_partial_chunk_committed(
    grid, monkeypatch, capsys
):
    cfg = grid.config()
    done = [
        f"{m}-{n}-s{s}"
        for sizes, methods in grid.PLAN[:4]
        for n in sizes
        for m in methods
        for s in cfg["seeds"]
    ]
    done += [f"dft-25-s{s}" for s in cfg["seeds"]]  # a chunk that ran dft alone
    monkeypatch.setattr(grid, "committed_cells", lambda: {name: {"name": name} for name in done})
    assert grid.status(None) == 0
    assert "next: python bench/smollm2_grid.py run --sizes 25 --methods sdft\n" in capsys.readouterr().out
    done += [f"sdft-25-s{s}" for s in cfg["seeds"]] + ["sdpo-25-s0", "sdpo-25-s1", "sdpo-25-s2", "grpo-25-s0"]
    assert grid.status(None) == 0  # a chunk that ran grpo's seed 0 alone
    assert (
        "next: python bench/smollm2_grid.py run --sizes 25 --methods grpo --seeds 1 2\n"
        in capsys.readouterr().out
    )


def test_a_chunk_records_the_threads_it_ran_on(grid, tmp_path, monkeypatch):
    """Chunks run side by side on one thread each cost more per run: the chunk says how it ran."""
    import argparse

    import torch

    for name in ("STATE", "CHUNKS"):
        monkeypatch.setattr(grid, name, tmp_path / name.lower())
    (tmp_path / "state").mkdir()
    monkeypatch.setattr(grid.subprocess, "call", lambda command, cwd: 0)
    monkeypatch.setattr(grid, "merge", lambda args: 0)
    out = tmp_path / "work"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"cells": []}))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = argparse.Namespace(sizes=[100], methods=["grpo"], seeds=[1], out=str(out), no_progress=True)
        assert grid.run(args) == 0
    finally:
        torch.set_num_threads(before)
    chunk = json.loads((tmp_path / "chunks" / "size-100_seed-1_grpo.json").read_text())["chunk"]
    assert ", 1 thread, Python " in chunk["machine"]


def test_a_chunks_line_shows_seconds_when_its_command_resumed_finished_runs(grid):
    """A rerun that finds its runs done writes its chunk in seconds: its line must not say "0 min"."""
    assert grid.took(13) == "13 s"
    assert grid.took(59) == "59 s"
    assert grid.took(6000) == "100 min"
    assert grid.took(None) == "time not recorded"


def test_the_grid_title_says_so_far_only_while_runs_are_missing(grid):
    assert grid.grid_title(71, 72) == "the grid so far (71 of 72 runs)"
    assert grid.grid_title(72, 72) == "the whole grid (72 runs)"
