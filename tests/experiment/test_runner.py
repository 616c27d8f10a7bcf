"""nlft experiment on a small budget: every cell trained and evaluated per epoch, the table and plot agree with the
cells' own results, and a rerun after a kill redoes only what is missing."""

import json
import shutil

import pytest

from nlft.experiment import ExperimentOptions, cells, run_experiment


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
