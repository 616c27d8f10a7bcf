"""A cell's steps: the length reaches every training run, a terminated experiment stops its child, the pool grows."""

import json

import pytest

from nlft.experiment import ExperimentOptions


def test_the_length_reaches_every_training_run_and_fixes_the_pool(tmp_path, monkeypatch):
    import nlft.experiment.steps as steps
    from nlft.experiment.plan import Cell, check_same_plan
    from nlft.experiment.steps import train_cell

    calls = []
    monkeypatch.setattr(steps, "run_child", lambda argv: calls.append(argv) or 0)
    o = ExperimentOptions(out=str(tmp_path), max_new_tokens=77, train_args=["--grpo_num_generations", "2"])
    train_cell(o, tmp_path, Cell("grpo", 3, 0))
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
    check_same_plan(out, ExperimentOptions(out=str(out)))
    with pytest.raises(ValueError, match=r"max_new_tokens 160 \(now 512\)"):
        check_same_plan(out, ExperimentOptions(out=str(out), max_new_tokens=512))


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
    from nlft.experiment.plan import check_same_plan
    from nlft.experiment.steps import build_data

    out = tmp_path / "exp"
    out.mkdir()
    check_same_plan(
        out, ExperimentOptions(out=str(out), pool_questions=300, pool_samples=2, pool_temperature=0.7)
    )
    check_same_plan(
        out, ExperimentOptions(out=str(out), pool_questions=500, pool_samples=4, pool_temperature=0.7)
    )
    assert json.loads((out / "experiment.json").read_text())["fixed"]["pool_questions"] == 500
    with pytest.raises(ValueError, match="other settings"):  # a pool never shrinks, nor changes its sampling
        check_same_plan(
            out, ExperimentOptions(out=str(out), pool_questions=400, pool_samples=4, pool_temperature=0.7)
        )
    with pytest.raises(ValueError, match="pool_temperature"):
        check_same_plan(
            out, ExperimentOptions(out=str(out), pool_questions=500, pool_samples=4, pool_temperature=1.0)
        )
    (out / "data" / "size-25").mkdir(parents=True)
    (out / "data" / "size-25" / "nlft.jsonl").write_text("")
    with pytest.raises(ValueError, match="only before subsets are built"):
        check_same_plan(
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
        build_data(
            ExperimentOptions(out=str(out), pool_questions=7, pool_samples=3, pool_temperature=0.5), out
        )
    assert seen == {"n": 7, "samples": 3, "temperature": 0.5}
