"""Weighting changed while a run trains (nlft.train.live): applied at the next step, logged, replayed exactly, refused
when the run is not training or another studio holds it."""

import json
from types import SimpleNamespace

import pytest
import yaml
from transformers import TrainerCallback

from nlft.method.weighting import WeightingConfig
from nlft.see.studio import Studio
from nlft.see.views import record_view
from nlft.train.live import (
    LOCK_FILE,
    SCHEDULE_FILE,
    STATUS_FILE,
    Change,
    LiveWeighting,
    load_schedule,
    settings_at,
)
from nlft.train.run import train
from nlft.train.snapshots import list_snapshots, load_snapshot

from ..conftest import SGD, config

RUN = (
    *SGD,
    "--per_device_train_batch_size",
    "2",
    "--num_train_epochs",
    "3",
    "--train_sampling_strategy",
    "sequential",
)


class ApplyAt(TrainerCallback):
    """What a user does in the studio at step ``step``: "apply to this run" with ``settings``."""

    def __init__(self, run_dir, step, settings):
        self.run_dir, self.step, self.settings, self.sent = run_dir, step, settings, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            studio = Studio(self.run_dir)
            self.sent = studio.apply(self.settings)
            studio.close()
        return control


def losses(result):
    return [(h["step"], h["loss"]) for h in result.log_history if "loss" in h]


def test_a_setting_applied_mid_run_is_used_from_the_next_step_and_replays_exactly(tmp_path):
    run = tmp_path / "live"
    apply = ApplyAt(run, 2, {"other_exponent": 2.0})
    live = train(*config(tmp_path, *RUN, "--saliency_steps", "1", name="live"), callbacks=[apply])
    assert apply.sent["seq"] == 1 and apply.sent["settings"] == {"other_exponent": 2.0}

    schedule = json.loads((run / SCHEDULE_FILE).read_text())
    assert [(c["step"], c["settings"]) for c in schedule] == [(3, {"other_exponent": 2.0})]
    assert json.loads((run / "run.json").read_text())["weighting_schedule"] == schedule
    assert yaml.safe_load((run / "config.yaml").read_text())["weighting_schedule"] == str(
        (run / SCHEDULE_FILE).resolve()
    )
    logged = [h for h in live.log_history if "weighting/other_exponent" in h]
    assert [(h["weighting/other_exponent"], h["weighting_step"]) for h in logged] == [(2.0, 3.0)]
    status = json.loads((run / STATUS_FILE).read_text())
    assert status["training"] is False and status["applied_seq"] == 1

    # The snapshots record the settings in force at each step, and the weights follow them.
    snaps = {step: load_snapshot(path) for step, path in list_snapshots(run)}
    assert snaps[2].weighting.other_exponent == 0.6 and snaps[3].weighting.other_exponent == 2.0
    record = next(r for r in snaps[3].records if r.correct)
    before = record_view(record, snaps[3].weighting.replace({"other_exponent": 0.6})).tokens
    after = record_view(record, snaps[3].weighting).tokens
    assert [t.weight for t in before] != [t.weight for t in after]

    # Without the change the run is the same up to step 2 and differs from step 3; replaying the recorded
    # schedule (as `nlft train --config RUN/config.yaml` does) gives the live run's losses exactly.
    plain = train(*config(tmp_path, *RUN, "--live_weighting", "false", name="plain"))
    replay = train(*config(tmp_path, *RUN, "--weighting_schedule", str(run / SCHEDULE_FILE), name="replay"))
    assert losses(plain)[:2] == losses(live)[:2]
    assert losses(plain)[2][1] != losses(live)[2][1]
    assert [s for s, _ in losses(replay)] == [s for s, _ in losses(live)] == [1, 2, 3]
    assert [v for _, v in losses(replay)] == pytest.approx([v for _, v in losses(live)], rel=1e-6)


def test_a_resumed_run_starts_from_the_settings_in_force_at_its_step():
    base = WeightingConfig()
    schedule = [Change(3, {"other_exponent": 2.0}), Change(5, {"threshold": 1.1})]
    assert settings_at(base, schedule, 2) == base
    assert (
        settings_at(base, schedule, 4).other_exponent == 2.0
        and settings_at(base, schedule, 4).threshold == 1.5
    )
    trainer = SimpleNamespace(weighting=base, log=lambda logs: None)
    cb = LiveWeighting("/nonexistent", schedule, poll=False)
    cb.bind(trainer)
    state = SimpleNamespace(global_step=5, max_steps=9, is_world_process_zero=False)
    cb.on_train_begin(SimpleNamespace(world_size=1), state, None)
    assert trainer.weighting == base.replace({"other_exponent": 2.0, "threshold": 1.1})


def test_apply_is_refused_when_the_run_is_not_training(tmp_path, server):
    import urllib.error
    import urllib.request

    train(*config(tmp_path, *RUN, "--saliency_steps", "3", name="done"))
    with pytest.raises(LookupError, match="not training now"):
        Studio(tmp_path / "done").apply({"threshold": 1.1})
    srv = server(tmp_path / "done")
    request = urllib.request.Request(
        f"http://127.0.0.1:{srv.server_address[1]}/api/apply",
        data=json.dumps({"settings": {"threshold": 1.1}}).encode(),
        headers={"Content-Type": "application/json", "X-Nlft-Token": srv.token},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 409 and "not training now" in json.loads(err.value.read())["error"]
    assert not (tmp_path / "done" / "live-weighting.json").exists()


def test_only_one_studio_may_apply_to_a_run(tmp_path):
    import os
    import socket

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"method": "nlft"}')
    (run / STATUS_FILE).write_text(
        json.dumps(
            {"training": True, "pid": os.getpid(), "host": socket.gethostname(), "step": 4, "applied_seq": 0}
        )
    )
    first, second = Studio(run), Studio(run)
    assert first.apply({"threshold": 1.1})["seq"] == 1
    with pytest.raises(PermissionError, match=f"another nlft studio \\(pid {os.getpid()}\\)"):
        second.apply({"threshold": 1.2})
    assert json.loads((run / "live-weighting.json").read_text())["settings"] == {"threshold": 1.1}
    first.close()
    assert second.apply({"threshold": 1.2})["seq"] == 2
    second.close()
    assert (run / LOCK_FILE).is_file()
    with pytest.raises(ValueError, match="ratio_threshold"):
        Studio(run).apply({"ratio_threshold": -1})


def test_a_bad_schedule_is_refused_naming_the_entry(tmp_path):
    with pytest.raises(ValueError, match="entry 2: steps must not decrease"):
        load_schedule('[{"step": 4, "settings": {"threshold": 1.1}}, {"step": 2, "settings": {}}]')
    with pytest.raises(ValueError, match="entry 1.*ratio_threshold"):
        load_schedule('[{"step": 1, "settings": {"ratio_threshold": "high"}}]')
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_schedule(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="entry 1: step"):
        config(tmp_path, "--weighting_schedule", '[{"step": 0, "settings": {}}]')


def test_a_trainer_that_died_unreaped_is_not_training(tmp_path):
    """Audit N-32: in the second after the trainer died (a zombie), apply answered 200 and nothing applied it."""
    import socket
    import subprocess
    import sys
    import time

    from nlft.train.live import training_status

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # exited, and not reaped: we have not waited for it
        with open(f"/proc/{child.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[-1].split()[0] == "Z":
                break
        time.sleep(0.05)
    run = tmp_path / "run"
    run.mkdir()
    (run / STATUS_FILE).write_text(
        json.dumps({"training": True, "pid": child.pid, "host": socket.gethostname()})
    )
    assert training_status(run) is None
    child.wait()
