"""The run folder's guards: one training at a time, a resume only with the run's own settings, and a resumed
run's config.yaml still naming the weighting schedule it goes on with (audit N-8, N-10, N-11)."""

import json

import pytest
import yaml

from nlft.train.live import SCHEDULE_FILE
from nlft.train.run import RunLock, train

from ..conftest import config

STEPS = ("--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2")

pytestmark = pytest.mark.slow  # each trains a run and resumes it


def test_a_second_training_into_a_live_run_is_refused_naming_its_pid(tmp_path):
    first = train(*config(tmp_path, *STEPS))
    before = sorted(p.name for p in first.run_dir.iterdir())
    live = RunLock(first.run_dir)
    live.acquire()  # as the training process holds it
    try:
        for extra in (("--resume_from_checkpoint", "last"), ("--overwrite_output_dir", "true")):
            with pytest.raises(ValueError, match=r"another nlft train \(pid \d+\) is training this run now"):
                train(*config(tmp_path, *STEPS, "--max_steps", "6", *extra))
        assert sorted(p.name for p in first.run_dir.iterdir()) == before  # nothing replaced
    finally:
        live.release()
    again = train(*config(tmp_path, *STEPS, "--max_steps", "6", "--resume_from_checkpoint", "last"))
    assert again.global_step == 6


@pytest.mark.parametrize(
    "change, named",
    [(("--learning_rate", "0.05"), "learning_rate"), (("--method", "sft"), "method"), (("--threshold", "1.1"), "threshold")],
)  # fmt: skip
def test_resuming_with_other_settings_is_refused(tmp_path, change, named):
    run = train(*config(tmp_path, *STEPS)).run_dir
    info = json.loads((run / "run.json").read_text())
    with pytest.raises(ValueError, match=rf"trained with other settings: {named}"):
        train(*config(tmp_path, *STEPS, "--max_steps", "6", "--resume_from_checkpoint", "last", *change))
    assert json.loads((run / "run.json").read_text()) == info
    # How long it goes on, and how it is logged, may change.
    train(
        *config(
            tmp_path, *STEPS, "--max_steps", "6", "--logging_steps", "3", "--resume_from_checkpoint", "last"
        )
    )


def test_a_resumed_runs_config_still_names_its_weighting_schedule(tmp_path):
    run = train(*config(tmp_path, *STEPS)).run_dir
    # What the studio leaves when it changes the weighting at step 3 (run.json and config.yaml point at it).
    (run / SCHEDULE_FILE).write_text(json.dumps([{"step": 3, "settings": {"threshold": 1.2}}]))
    train(*config(tmp_path, *STEPS, "--max_steps", "6", "--resume_from_checkpoint", "last"))
    named = yaml.safe_load((run / "config.yaml").read_text()).get("weighting_schedule")
    assert named == str((run / SCHEDULE_FILE).resolve())
