"""End to end: `nlft train` in subprocesses — kill and resume, two processes under accelerate, configs, demo."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from nlft.jsonl import atomic_write_jsonl

from ..conftest import REPO, ROWS, SGD

pytestmark = pytest.mark.slow

ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": str(REPO / "src"),
}
BASE = [
    "--model_name_or_path",
    "nlft:tiny",
    "--dtype",
    "float32",
    "--max_length",
    "512",
    "--disable_tqdm",
    "true",
]
COMMON = [*BASE, "--use_cpu", "true"]


def nlft(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "nlft", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def adapter(run) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def same_weights(a, b, atol=1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-4), k


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.jsonl"
    atomic_write_jsonl(path, ROWS)
    return path


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from transformers import TrainerCallback
    from nlft.train.config import parse_train_args
    from nlft.train.run import train

    class KillAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    train(*parse_train_args(sys.argv[1:]), callbacks=[KillAfterCheckpoint()])
    """
)


def test_killed_after_a_checkpoint_and_resumed_equals_uninterrupted(tmp_path, data):
    args = [
        "--data", str(data), *COMMON, "--report_to", "none", "--num_train_epochs", "2", "--per_device_train_batch_size", "1",
        "--gradient_accumulation_steps", "1", "--save_strategy", "steps", "--save_steps", "2", "--learning_rate", "5e-3",
    ]  # fmt: skip
    straight = tmp_path / "straight"
    nlft("train", *args, "--output_dir", str(straight))

    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, *args, "--output_dir", str(killed)],
        env=ENV,
        capture_output=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (killed / "checkpoint-2").is_dir() and not (killed / "adapter").exists()

    # Resume from the run's own config.yaml: the resolved configuration round-trips.
    nlft("train", "--config", str(killed / "config.yaml"), "--resume_from_checkpoint", "last")
    same_weights(adapter(straight), adapter(killed))
    info = json.loads((killed / "run.json").read_text())
    assert info["finished"] and info["global_step"] == 8 and info["epochs"] == [1, 2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_under_accelerate_train_save_and_match_one(tmp_path, data):
    sgd = [*SGD, "--lora_dropout", "0"]  # plain SGD steps: the update is proportional to the gradient
    common = [
        "--data",
        str(data),
        *BASE,
        "--report_to",
        "none",
        "--num_train_epochs",
        "1",
        "--gradient_accumulation_steps",
        "1",
        *sgd,
    ]
    launch = [
        # accelerate's torchrun launcher; without CUDA the processes form a gloo group for CPU training.
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "nlft", "train", *common, "--per_device_train_batch_size", "2", "--output_dir", str(tmp_path / "two"),
    ]  # fmt: skip
    out = subprocess.run(launch, capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads((tmp_path / "two" / "run.json").read_text())
    assert info["finished"] and info["global_step"] == 1
    assert (tmp_path / "two" / "epochs" / "epoch-1" / "adapter_config.json").exists()

    nlft(
        "train",
        *common,
        "--use_cpu",
        "true",
        "--per_device_train_batch_size",
        "4",
        "--output_dir",
        str(tmp_path / "one"),
    )
    # 2 processes x 2 records make the same step as 1 process x 4 records: the loss is the mean over all records.
    same_weights(adapter(tmp_path / "two"), adapter(tmp_path / "one"), atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-nlft", "tiny-sft"])
def test_shipped_tiny_configs_train(tmp_path, name):
    run = tmp_path / name
    out = nlft(
        "train",
        "--config",
        str(REPO / "configs" / f"{name}.yaml"),
        "--output_dir",
        str(run),
        "--max_steps",
        "2",
        "--disable_tqdm",
        "true",
    )
    assert "run folder" in out.stdout
    info = json.loads((run / "run.json").read_text())
    assert info["method"] == name.split("-")[1] and info["finished"]
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    events = list((run / "logs").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard log"
    if name == "tiny-nlft":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run / "logs"))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {
            "train/loss",
            "train/sft_loss",
            "train/nlft_loss",
            "train/blamed_fraction",
            "train/mean_weight_correct",
        } <= tags


@pytest.mark.xdist_group("demo")
def test_demo_finishes_and_prints_its_summary(tmp_path, small_demo):
    """The demo on a small budget (conftest's shared one): nlft:mini's own answers, judged, 1:2 wrong:correct, both
    methods trained and evaluated, the table, the weighting statistics and the report printed."""
    demo, stdout = small_demo
    assert "nlft demo finished" in stdout
    for label in ("| base |", "| NLFT |", "| SFT |"):
        assert label in stdout
    for method in ("nlft", "sft"):
        run = demo / method
        assert (run / "adapter" / "adapter_model.safetensors").exists()
        assert (run / "epochs" / "epoch-2" / "adapter_model.safetensors").exists()
        assert list((run / "logs").glob("events.out.tfevents.*"))
        summary = json.loads((run / "eval" / "paper-mini-math-test" / "summary.json").read_text())
        assert summary["questions"] == 4
    rows = [json.loads(line) for line in (demo / "data" / "nlft.jsonl").read_text().splitlines()]
    wrong = [r for r in rows if r["correct"] is False]
    assert rows and 2 * len(wrong) == len(rows) - len(wrong)
    assert all(r["judgment"] for r in wrong)
    # The base model's saliency report shows blamed tokens on the wrong records.
    html = (demo / "saliency.html").read_text()
    assert html.count('class="tok blamed') > 1  # one is the legend's sample
    assert (demo / "comparison" / "comparison.png").read_bytes().startswith(b"\x89PNG")
    assert len(list((demo / "nlft" / "saliency").glob("step-*.pt"))) >= 2
    assert f"nlft studio {demo / 'nlft'}" in stdout

    # Evaluation of a real demo run: one row per epoch (and the base model as epoch 0), then the comparison.
    for method in ("nlft", "sft"):
        run = demo / method
        nlft(
            "eval",
            str(run),
            "--all-checkpoints",
            "--include-base",
            "--data",
            "nlft:sample",
            "--limit",
            "2",
            "--max-new-tokens",
            "8",
            "--quiet",
        )
        curve = next((run / "eval").glob("*-curve.md")).read_text()
        rows = [
            line
            for line in curve.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()
        ]
        assert [r.split("|")[1].strip() for r in rows] == ["0", "1", "2"]
    out = tmp_path / "cmp"
    nlft(
        "compare",
        str(demo / "nlft"),
        str(demo / "sft"),
        "--data",
        "nlft:sample",
        "--out",
        str(out),
    )
    png = (out / "comparison.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "nlft" in (out / "comparison.md").read_text()


# A training process that kills itself in the middle of saving checkpoint-N, after the weights and optimizer
# are written and before trainer_state.json: what a SIGKILL during a save leaves.
KILL_IN_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    from transformers import Trainer
    from nlft.train.config import parse_train_args
    from nlft.train.run import train

    at = int(os.environ["NLFT_KILL_IN_SAVE_AT"])
    real = Trainer._save_rng_state

    def save_rng_state(self, output_dir):
        real(self, output_dir)
        if self.state.global_step == at:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer._save_rng_state = save_rng_state
    train(*parse_train_args(sys.argv[1:]))
    """
)


def ten_steps_saving_each(data) -> list[str]:
    """A 10-step plain-SGD run saving every step: 4 records, one per step, so epochs end at steps 4 and 8 and step
    10 is inside the third."""
    return [
        "--data", str(data), *COMMON, "--report_to", "none", "--max_steps", "10", "--per_device_train_batch_size", "1",
        "--gradient_accumulation_steps", "1", "--save_strategy", "steps", "--save_steps", "1", "--lora_dropout", "0",
        *SGD,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def ten_steps(tmp_path_factory) -> tuple[list[str], "os.PathLike"]:
    """The arguments of the 10-step run and that run made straight through, shared by the kill and resume tests
    (marked ``xdist_group("ten-steps")`` so that one worker makes it once)."""
    folder = tmp_path_factory.mktemp("ten-steps")
    data = folder / "data.jsonl"
    atomic_write_jsonl(data, ROWS)
    args = ten_steps_saving_each(data)
    nlft("train", *args, "--output_dir", str(folder / "straight"))
    return args, folder / "straight"


def _kill_when(proc: subprocess.Popen, path, delay: float, limit: float = 300.0) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``path`` appears; False when it ended by itself first."""
    import time

    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait()
    return True


@pytest.mark.xdist_group("ten-steps")
def test_sigkill_at_random_moments_and_during_saves_then_resume_is_bit_identical(tmp_path, ten_steps):
    """Six kills, each at a random moment after an event, so that every kill lands in a live run whatever the
    machine's speed: as training starts (run.json written: model loading, scoring, the first step), twice
    exactly inside a checkpoint save, and three times within a random step once the next checkpoint is
    complete. Every round resumes with ``--resume_from_checkpoint last``; the end is bit for bit the straight run."""
    import random

    from nlft.train.run import last_complete_checkpoint

    args, straight = ten_steps
    run = tmp_path / "killed"
    rng = random.Random(7)
    # A kill lands within one step of its event: the shortest step of the straight run (its checkpoints' times), so
    # that a fast machine cannot run past the steps the later rounds need (a fixed 0.5 s could cover several).
    saved = sorted(
        (straight / f"checkpoint-{k}" / "trainer_state.json").stat().st_mtime for k in range(1, 11)
    )
    step = max(min(b - a for a, b in zip(saved, saved[1:])), 0.01)
    kills, in_save = 0, 0
    for round_ in range(1, 7):
        resume = ["--resume_from_checkpoint", "last"] if round_ > 1 else []
        command = [*args, "--output_dir", str(run), *resume]
        done = last_complete_checkpoint(run) if run.exists() else None
        last = int(done.name.split("-")[1]) if done else 0
        if round_ in (3, 5):  # a kill exactly inside the save of the next checkpoint
            env = {**ENV, "NLFT_KILL_IN_SAVE_AT": str(last + 1)}
            proc = subprocess.run(
                [sys.executable, "-c", KILL_IN_SAVE, *command], env=env, capture_output=True, timeout=600
            )
            assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
            assert not (run / f"checkpoint-{last + 1}" / "trainer_state.json").exists()
            kills, in_save = kills + 1, in_save + 1
            continue
        proc = subprocess.Popen([sys.executable, "-m", "nlft", "train", *command], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        if round_ == 1:
            event = run / "run.json"
        else:  # the next checkpoint, at most the 7th: steps 8-10 are left to run after the delay
            event = run / f"checkpoint-{min(last + 1, 7)}" / "trainer_state.json"
        killed = _kill_when(proc, event, rng.uniform(0.0, step))
        assert killed, (
            f"round {round_}: the run ended before its kill: " + proc.stderr.read().decode()[-3000:]
        )
        kills += 1
    proc = subprocess.run([sys.executable, "-m", "nlft", "train", *args, "--output_dir", str(run),
                           "--resume_from_checkpoint", "last"], env=ENV, capture_output=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert kills == 6 and in_save == 2
    a, b = adapter(straight), adapter(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] and info["global_step"] == 10


def _as_if_killed_at(run, step: int) -> None:
    """``run`` as a kill right after its checkpoint-``step`` leaves it: later checkpoints, the final adapter and
    the finished mark gone."""
    import shutil

    for folder in run.glob("checkpoint-*"):
        if int(folder.name.split("-")[1]) > step:
            shutil.rmtree(folder)
    shutil.rmtree(run / "adapter")
    info = json.loads((run / "run.json").read_text())
    info.pop("finished")
    (run / "run.json").write_text(json.dumps(info))


@pytest.mark.xdist_group("ten-steps")
def test_resumed_from_the_last_step_or_an_epochs_end_trains_nothing_more_and_keeps_every_epoch(
    tmp_path, ten_steps
):
    import shutil

    args, straight = ten_steps
    epochs = sorted(p.name for p in (straight / "epochs").iterdir())
    assert epochs == ["epoch-1", "epoch-2"]  # no save named for the part of epoch 3 that ran
    for epoch, step in ((1, 4), (2, 8)):
        got = load_file(straight / "epochs" / f"epoch-{epoch}" / "adapter_model.safetensors")
        want = load_file(straight / f"checkpoint-{step}" / "adapter_model.safetensors")
        assert all(torch.equal(got[k], want[k]) for k in want), (
            f"epoch-{epoch} is not the weights of step {step}"
        )

    # Killed after the checkpoint of its last step: resuming trains no step 11 and saves those weights.
    last = tmp_path / "last"
    shutil.copytree(straight, last)
    _as_if_killed_at(last, 10)
    nlft("train", *args, "--output_dir", str(last), "--resume_from_checkpoint", "last")
    assert not (last / "checkpoint-11").exists()
    assert json.loads((last / "run.json").read_text())["global_step"] == 10
    a, b = adapter(straight), adapter(last)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Killed after the checkpoint of an epoch's last step, before that epoch's save: resuming writes it.
    edge = tmp_path / "edge"
    shutil.copytree(straight, edge)
    _as_if_killed_at(edge, 8)
    shutil.rmtree(edge / "epochs" / "epoch-2")
    nlft("train", *args, "--output_dir", str(edge), "--resume_from_checkpoint", "last")
    got = load_file(edge / "epochs" / "epoch-2" / "adapter_model.safetensors")
    want = load_file(straight / "epochs" / "epoch-2" / "adapter_model.safetensors")
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert json.loads((edge / "run.json").read_text())["epochs"] == [1, 2]
    a, b = adapter(straight), adapter(edge)
    assert all(torch.equal(a[k], b[k]) for k in a)
