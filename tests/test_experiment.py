"""nlft experiment on a small budget: nested subsets, every cell trained and evaluated per epoch, the table and
plot agree with the cells' own results, and a rerun after a kill redoes only what is missing."""

import json
import shutil

import pytest

from nlft.experiment import ExperimentOptions, cells, nested_subsets, run_experiment
from nlft.records import Record


def test_nested_subsets_keep_the_ratio_and_grow_by_prefixes():
    pool = [Record(id=f"c{i}", question="q", response="r", reference="r", correct=True) for i in range(20)]
    pool += [
        Record(id=f"w{i}", question="q", response="r", reference="r", judgment="j", correct=False)
        for i in range(10)
    ]
    pool += [
        Record(id="u", question="q", response="r", reference="r", correct=False)
    ]  # wrong, unjudged: left out
    subsets = nested_subsets(pool, [6, 12, 24], (2, 1), seed=0)
    for size, records in subsets.items():
        assert len(records) == size and sum(not r.is_correct for r in records) == size // 3
        assert "u" not in {r.id for r in records}
    small, large = ({r.id for r in subsets[n]} for n in (6, 24))
    assert small <= large
    with pytest.raises(ValueError, match="more --pool-questions"):
        nested_subsets(pool, [60], (2, 1), seed=0)


def test_nested_subsets_cover_distinct_questions_before_a_second_answer_to_any():
    # 8 questions answered 3 times each, every answer correct: a set of 8 takes one answer of each question.
    pool = [
        Record(id=f"q{q}-s{k}", question=f"question {q}", response="r", reference="r", correct=True,
               extra={"question_id": f"q{q}"})
        for q in range(8) for k in range(3)
    ]  # fmt: skip
    pool += [
        Record(id=f"w{q}-s{k}", question=f"question {q}", response="r", reference="r", judgment="j",
               correct=False, extra={"question_id": f"q{q}"})
        for q in range(4) for k in range(3)
    ]  # fmt: skip
    subsets = nested_subsets(pool, [12, 18], (2, 1), seed=0)
    small = subsets[12]
    assert sorted(r.extra["question_id"] for r in small if r.is_correct) == [f"q{q}" for q in range(8)]
    assert sorted(r.extra["question_id"] for r in small if not r.is_correct) == [f"q{q}" for q in range(4)]
    assert {r.id for r in small} <= {r.id for r in subsets[18]}


@pytest.mark.slow
def test_the_experiment_runs_resumes_and_reports_what_the_cells_measured(tmp_path, capsys):
    options = dict(
        out=str(tmp_path / "exp"), pool_questions=24, sizes=[3, 6], methods=["nlft"], seeds=[0, 1],
        epochs=2, test_questions=6, batch_size=3, device="cpu", progress=False,
    )  # fmt: skip
    assert run_experiment(ExperimentOptions(**options)) == 0
    out = tmp_path / "exp"
    result = json.loads((out / "results.json").read_text())
    rows = {(r["size"], r["method"], r["epoch"]): r for r in result["rows"]}
    assert set(rows) == {(n, "nlft", e) for n in (3, 6) for e in (1.0, 2.0)}
    # Each row is the mean over seeds of the cells' own evaluation summaries.
    for (size, method, epoch), row in rows.items():
        accs = []
        for seed in (0, 1):
            summary = (
                out
                / "runs"
                / f"{method}-{size}-s{seed}"
                / "eval"
                / f"paper-mini-math-test-epoch-{int(epoch)}"
            )
            accs.append(json.loads((summary / "summary.json").read_text())["accuracy"]["authors"])
        assert row["accuracy"] == accs and row["mean"] == pytest.approx(sum(accs) / 2)
    assert (out / "plot.png").read_bytes().startswith(b"\x89PNG")
    assert "| 6 | nlft | 2 |" in (out / "results.md").read_text()
    small = [json.loads(x) for x in (out / "data" / "size-3" / "nlft.jsonl").read_text().splitlines()]
    large = [json.loads(x) for x in (out / "data" / "size-6" / "nlft.jsonl").read_text().splitlines()]
    assert {r["id"] for r in small} <= {r["id"] for r in large}

    # A killed experiment: one cell lost its run, another its evaluation. The rerun redoes exactly those.
    kept = {c.name: (out / "runs" / c.name / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
            for c in cells(ExperimentOptions(**options))}  # fmt: skip
    shutil.rmtree(out / "runs" / "nlft-6-s1")
    shutil.rmtree(out / "runs" / "nlft-3-s0" / "eval")
    capsys.readouterr()
    assert run_experiment(ExperimentOptions(**options)) == 0
    printed = capsys.readouterr().out
    assert "== nlft-6-s1" in printed and printed.count("== ") == 1  # one training run, nothing else retrained
    for name, mtime in kept.items():
        now = (out / "runs" / name / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
        assert (now == mtime) == (name != "nlft-6-s1"), name
    again = json.loads((out / "results.json").read_text())["rows"]
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in result["rows"]]  # greedy: the same


def test_a_folder_of_another_experiment_is_refused(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps({"fixed": {"model": "other", "task": "mini-math"}}))
    with pytest.raises(ValueError, match="other settings.*model 'other'"):
        run_experiment(ExperimentOptions(out=str(out), device="cpu"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no experiment folder"):
        run_experiment(ExperimentOptions(out=str(tmp_path / "mine"), device="cpu"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_a_config_file_sets_the_experiment_and_flags_win_over_it(tmp_path, capsys):
    from nlft.cli import main

    config = tmp_path / "exp.yaml"
    config.write_text(
        f"out: {tmp_path / 'exp'}\nsizes: [3, 6]\nmethods: [nlft, grpo]\nseeds: [0, 1, 2]\nepochs: 4\n"
        "train_args: [--grpo_num_generations, 4]\n"
    )
    with pytest.raises(SystemExit) as done:
        main(["experiment", "--config", str(config), "--seeds", "7", "--dry-run"])
    assert done.value.code == 0
    plan = capsys.readouterr().out
    assert "2 methods (nlft, grpo) x 2 sizes (3, 6) x 1 seeds = 4 training runs of 4 epochs" in plan
    assert not (tmp_path / "exp").exists()  # a dry run writes nothing

    config.write_text("sizes: [3]\nsize: 4\n")
    with pytest.raises(SystemExit) as done:
        main(["experiment", "--config", str(config), "--out", str(tmp_path / "x"), "--dry-run"])
    assert done.value.code == 2
    assert "exp.yaml: unknown setting(s) size " in capsys.readouterr().err


def test_cost_ratios_are_nlft_over_grpo_at_each_size():
    from nlft.experiment import cost_ratios

    def row(size, method, seconds, memory):
        return {
            "size": size,
            "method": method,
            "epoch": 2.0,
            "seconds_per_epoch": seconds,
            "peak_memory_mb": memory,
        }

    rows = [row(25, "nlft", 10.0, 300.0), row(25, "grpo", 40.0, 1200.0), row(50, "nlft", 20.0, 310.0),
            row(25, "sft", 8.0, 290.0), {**row(25, "nlft", 99.0, 9.0), "epoch": 1.0}]  # fmt: skip
    assert cost_ratios(rows) == [
        {"size": 25, "method": "nlft", "against": "grpo", "seconds_per_epoch": 0.25, "peak_memory_mb": 0.25}
    ]  # 50 has no grpo run; epoch 1 is not the last


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


def test_the_shipped_gpu_config_plans_the_papers_grid_at_the_paper_protocols_length(tmp_path, capsys):
    from pathlib import Path

    from nlft.cli import main

    config = Path(__file__).parents[1] / "configs" / "experiment-gsm8k-llama3-8b.yaml"
    with pytest.raises(SystemExit) as done:
        main(["experiment", "--config", str(config), "--out", str(tmp_path / "exp"), "--dry-run"])
    assert done.value.code == 0
    plan = capsys.readouterr().out
    assert "5 methods (nlft, sft, rft, sft-gold, grpo) x 5 sizes (25, 50, 100, 200, 400) x 3 seeds" in plan
    assert "up to 512 new tokens per sample, test answer and GRPO completion" in plan
    assert not (tmp_path / "exp").exists()


def test_the_length_reaches_every_training_run_and_fixes_the_pool(tmp_path, monkeypatch):
    import nlft.experiment as experiment
    from nlft.experiment import Cell, _check_same_plan, _train_cell

    calls = []
    monkeypatch.setattr(experiment, "run_child", lambda argv: calls.append(argv) or 0)
    o = ExperimentOptions(out=str(tmp_path), max_new_tokens=77, train_args=["--grpo_num_generations", "2"])
    _train_cell(o, tmp_path, Cell("grpo", 3, 0))
    argv = calls[0]
    assert argv[argv.index("--grpo_max_completion_length") + 1] == "77"
    assert argv[-2:] == ["--grpo_num_generations", "2"]  # the user's train_args come last and win

    out = tmp_path / "exp"
    out.mkdir()
    old = {
        "model": "nlft:mini",
        "task": "mini-math",
        "judge": "arithmetic",
        "pool_questions": 400,
        "ratio": "2:1",
    }
    (out / "experiment.json").write_text(
        json.dumps({"fixed": old})
    )  # written before the setting existed: 160
    _check_same_plan(out, ExperimentOptions(out=str(out)))
    with pytest.raises(ValueError, match=r"max_new_tokens 160 \(now 512\)"):
        _check_same_plan(out, ExperimentOptions(out=str(out), max_new_tokens=512))


def _cli(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    from nlft.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code, err.getvalue()


@pytest.mark.parametrize(
    "yaml_text, field",
    [('sizes: "six"\n', "sizes"), ("seeds: [0, one]\n", "seeds"), ("learning_rate: fast\n", "learning_rate"),
     ("methods: nlft\n", "methods")],
)  # fmt: skip
def test_an_experiment_config_of_the_wrong_type_is_named_not_a_traceback(tmp_path, yaml_text, field):
    """Audit N-18: `sizes: "six"` ended in a TypeError."""
    config = tmp_path / "type.yaml"
    config.write_text(yaml_text)
    code, err = _cli("experiment", "--config", str(config), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 2 and f"{field}: must be" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flag", ["--method", "--learning_rate", "--seed", "--data", "--output_dir", "--num_train_epochs"]
)
def test_train_args_cannot_change_what_a_cell_is(tmp_path, flag):
    """Audit N-19 and N-36: `train_args: [--method, sft, ...]` trained sft under the name nlft; on the command
    line `--train-args --method sft` was an ambiguous abbreviation of --methods."""
    config = tmp_path / "ta.yaml"
    config.write_text(f'train_args: ["{flag}", "x"]\n')
    code, err = _cli("experiment", "--config", str(config), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 2 and f"the experiment sets {flag}" in err
    code, err = _cli("experiment", "--out", str(tmp_path / "o"), "--dry-run", "--train-args", f"{flag}=x")
    assert code == 2 and f"the experiment sets {flag}" in err and "ambiguous" not in err
    with pytest.raises(ValueError, match="the experiment sets"):
        ExperimentOptions(out=str(tmp_path / "o"), train_args=[flag, "x"])
    assert ExperimentOptions(out=str(tmp_path / "o"), train_args=["--lora_r", "8"]).train_args == [
        "--lora_r",
        "8",
    ]


@pytest.mark.slow
def test_a_terminated_experiment_stops_its_training_child(tmp_path):
    """Audit N-8: `kill <experiment>` left its `nlft train` child running beside the rerun."""
    import os
    import signal
    import sys
    import threading

    from nlft.experiment import run_child

    before = signal.getsignal(signal.SIGTERM)
    marker = tmp_path / "child.pid"
    script = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    with pytest.raises(KeyboardInterrupt):
        run_child([sys.executable, "-c", script], grace=5)
    pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped
    assert signal.getsignal(signal.SIGTERM) == before  # the experiment's own handler is gone again


def test_the_pool_can_grow_before_subsets_are_built_and_its_sampling_is_part_of_the_plan(
    tmp_path, monkeypatch
):
    """Issue 25: `--pool-questions 300` proved too small and the rerun with 500 was refused as another plan."""
    import nlft.data.pipeline as pipeline
    from nlft.experiment import _check_same_plan, _data

    out = tmp_path / "exp"
    out.mkdir()
    _check_same_plan(
        out, ExperimentOptions(out=str(out), pool_questions=300, pool_samples=2, pool_temperature=0.7)
    )
    _check_same_plan(
        out, ExperimentOptions(out=str(out), pool_questions=500, pool_samples=4, pool_temperature=0.7)
    )
    assert json.loads((out / "experiment.json").read_text())["fixed"]["pool_questions"] == 500
    with pytest.raises(ValueError, match="other settings"):  # a pool never shrinks, nor changes its sampling
        _check_same_plan(
            out, ExperimentOptions(out=str(out), pool_questions=400, pool_samples=4, pool_temperature=0.7)
        )
    with pytest.raises(ValueError, match="pool_temperature"):
        _check_same_plan(
            out, ExperimentOptions(out=str(out), pool_questions=500, pool_samples=4, pool_temperature=1.0)
        )
    (out / "data" / "size-25").mkdir(parents=True)
    (out / "data" / "size-25" / "nlft.jsonl").write_text("")
    with pytest.raises(ValueError, match="only before subsets are built"):
        _check_same_plan(
            out, ExperimentOptions(out=str(out), pool_questions=600, pool_samples=4, pool_temperature=0.7)
        )
    with pytest.raises(ValueError, match="needs --pool-temperature above 0"):
        ExperimentOptions(out=str(out), pool_samples=2)

    seen = {}

    def fake(questions, pool, *, settings, samples, **kwargs):
        seen.update(n=len(questions), samples=samples, temperature=settings.temperature)
        raise RuntimeError("stop here")

    monkeypatch.setattr(pipeline, "sample_and_judge", fake)
    with pytest.raises(RuntimeError, match="stop here"):
        _data(ExperimentOptions(out=str(out), pool_questions=7, pool_samples=3, pool_temperature=0.5), out)
    assert seen == {"n": 7, "samples": 3, "temperature": 0.5}


def test_the_rate_with_the_best_held_out_accuracy_is_chosen_and_a_tie_goes_to_the_smaller():
    from nlft.experiment import choose_rate

    assert choose_rate({"0.0002": 0.05, "0.0006": 0.09, "0.002": 0.07}) == 0.0006
    assert choose_rate({"0.0002": 0.08, "0.0006": 0.08, "0.002": 0.01}) == 0.0002


@pytest.mark.slow
def test_rates_are_tuned_on_held_out_train_questions_and_the_grid_trains_at_the_chosen_rate(tmp_path):
    import yaml

    from nlft.experiment import held_out_questions

    options = dict(
        out=str(tmp_path / "exp"), pool_questions=24, sizes=[3], methods=["sft"], seeds=[0], epochs=1,
        test_questions=6, batch_size=3, device="cpu", progress=False, tune_rates=[1e-5, 3e-3], tune_size=3,
        tune_questions=5, eval_epochs="last",
    )  # fmt: skip
    o = ExperimentOptions(**options)
    assert run_experiment(o) == 0
    out = tmp_path / "exp"
    rates = json.loads((out / "tuning" / "rates.json").read_text())
    held_out = [json.loads(x)["id"] for x in (out / "tuning" / "held-out.jsonl").read_text().splitlines()]
    assert held_out == [
        f"mini-math-train-{i:05d}" for i in range(19995, 20000)
    ]  # the split's last, not the pool's
    assert [q.id for q in held_out_questions(o)] == held_out
    scores = {}
    for rate in ("1e-05", "0.003"):
        run = out / "tuning" / f"sft-3-s0-lr{rate}"
        summary = json.loads((run / "eval" / "paper-held-out" / "summary.json").read_text())
        assert summary["questions"] == 5
        scores[rate] = summary["accuracy"]["authors"]
        assert yaml.safe_load((run / "config.yaml").read_text())["learning_rate"] == float(rate)
    assert rates["methods"]["sft"]["accuracy"] == scores
    chosen = rates["methods"]["sft"]["chosen"]
    assert chosen == (3e-3 if scores["0.003"] > scores["1e-05"] else 1e-5)
    # The grid's cell trained at the chosen rate; only its last epoch was evaluated.
    cell = out / "runs" / "sft-3-s0"
    assert yaml.safe_load((cell / "config.yaml").read_text())["learning_rate"] == chosen
    assert [p.name for p in (cell / "eval").iterdir()] == ["paper-mini-math-test"]
    result = json.loads((out / "results.json").read_text())
    assert result["cells"][0]["learning_rate"] == chosen
    item_rows = [
        json.loads(x)
        for x in (cell / "eval" / "paper-mini-math-test" / "items.jsonl").read_text().splitlines()
    ]
    item_rows.sort(key=lambda r: r["id"])
    assert result["cells"][0]["outcomes"]["authors"] == "".join(
        "1" if r["correct"]["authors"] else "0" for r in item_rows
    )
    assert result["base"]["question_ids"] == [r["id"] for r in item_rows]
    table = (out / "results.md").read_text()
    assert "Learning rate per method" in table and "What the test answers look like" in table
    # A rerun with other tuning settings is refused, naming the file.
    with pytest.raises(ValueError, match="rates.json: rates tuned with other settings"):
        run_experiment(ExperimentOptions(**{**options, "tune_rates": [1e-5, 1e-3]}))


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
