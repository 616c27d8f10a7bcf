"""The learning rate per method: the best on held-out train questions, and the grid trains at it."""

import json

import pytest

from nlft.experiment import ExperimentOptions, run_experiment


def test_the_rate_with_the_best_held_out_accuracy_is_chosen_and_a_tie_goes_to_the_smaller():
    from nlft.experiment import choose_rate

    assert choose_rate({"0.0002": 0.05, "0.0006": 0.09, "0.002": 0.07}) == 0.0006
    assert choose_rate({"0.0002": 0.08, "0.0006": 0.08, "0.002": 0.01}) == 0.0002


@pytest.mark.slow
def test_rates_are_tuned_on_held_out_train_questions_and_the_grid_trains_at_the_chosen_rate(tmp_path):
    import yaml

    from nlft.experiment import held_out_questions

    options = dict(
        out=str(tmp_path / "exp"), pool_questions=24, sizes=[3], methods=["sft"], seeds=[0, 1], epochs=1,
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
    # The grid's cells trained at the chosen rate; only their last epoch was evaluated.
    cell = out / "runs" / "sft-3-s0"
    for c in (cell, out / "runs" / "sft-3-s1"):
        assert yaml.safe_load((c / "config.yaml").read_text())["learning_rate"] == chosen
        assert yaml.safe_load((c / "config.yaml").read_text())["output_dir"] == str(c.resolve())
        assert [p.name for p in (c / "eval").iterdir()] == ["paper-mini-math-test"]
    # The seed-0 cell at the tuning size is the tuning run at the chosen rate, copied (not trained again); the
    # seed-1 cell is trained.
    tuned = out / "tuning" / f"sft-3-s0-lr{chosen:g}"
    assert json.loads((cell / "run.json").read_text())["copied_from"] == f"tuning/sft-3-s0-lr{chosen:g}"
    assert (cell / "adapter" / "adapter_model.safetensors").read_bytes() == (
        tuned / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
    assert "copied_from" not in json.loads((out / "runs" / "sft-3-s1" / "run.json").read_text())
    assert not list((out / "runs").glob(".*"))  # no copy left half-made
    result = json.loads((out / "results.json").read_text())
    assert [c["learning_rate"] for c in result["cells"]] == [chosen, chosen]
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


def test_copying_a_tuning_run_refuses_a_link_where_its_partial_copy_goes(tmp_path):
    from nlft.experiment import Cell, reuse_tuning_run

    out = tmp_path / "exp"
    source = out / "tuning" / "sft-3-s0-lr0.001"
    source.mkdir(parents=True)
    (source / "run.json").write_text('{"finished": true}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (out / "runs").mkdir()
    (out / "runs" / ".sft-3-s0.copying").symlink_to(elsewhere)
    o = ExperimentOptions(out=str(out), methods=["sft"], tune_rates=[1e-4, 1e-3], tune_size=3, tune_seed=0)
    o.tuned_rates["sft"] = 1e-3
    with pytest.raises(FileExistsError, match="not a folder nlft made"):
        reuse_tuning_run(o, out, Cell("sft", 3, 0))
    assert (elsewhere / "keep.txt").read_text() == "mine" and not (out / "runs" / "sft-3-s0").exists()
