"""NLFT under engines that shard parameters (FSDP2, DeepSpeed ZeRO-3) and under DDP with records that differ by
process: every parameter after two steps as in one process on the same global batch, on CPU with gloo.

The FSDP2 and ZeRO-3 cases run ``distributed_worker.py`` (architectures x LoRA/full x live/cached reference
probabilities, a saliency snapshot and ``incorrect_sft: judge`` every step, one process holding only correct
records); the Trainer cases run ``nlft train`` under ``accelerate launch``.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlft.jsonl import atomic_write_jsonl

from .conftest import REPO, ROWS, SGD

WORKER = REPO / "tests" / "distributed_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO / "src"),
       "DS_ACCELERATOR": "cpu"}  # fmt: skip
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / a.norm().clamp(min=1e-12)).item()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "one.pt"
    run([sys.executable, str(WORKER), "--engine", "none", "--out", str(out)])
    return torch.load(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    "engine",
    [
        "fsdp2",
        pytest.param(
            "zero3",
            marks=pytest.mark.skipif(
                not HAS_DEEPSPEED, reason="deepspeed is not installed (make install does it)"
            ),
        ),
    ],
)
def test_sharded_engines_match_one_process(tmp_path, one_process, engine):
    out = tmp_path / f"{engine}.pt"
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(WORKER), "--engine", engine, "--out", str(out)])  # fmt: skip
    sharded = torch.load(out)
    assert sharded.keys() == one_process.keys() and len(sharded) == 12
    figures = {}
    for case, (losses, params) in sharded.items():
        want_losses, want_params = one_process[case]
        assert losses == pytest.approx(want_losses, rel=1e-5), case
        assert params.keys() == want_params.keys() and params, case
        worst = max(relative(want_params[n], params[n]) for n in params)
        figures[str(case)] = worst
        assert worst <= 1e-5, (case, worst)
    # The equality figures, kept for the record (the closing note and the README quote them).
    artifacts = Path(__file__).resolve().parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"distributed-{engine}.json").write_text(json.dumps(figures, indent=1) + "\n")


def launch(*args: str, processes: int = 2, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return run([
        sys.executable, "-m", "accelerate.commands.launch", *extra, "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
        str(free_port()), "-m", "nlft", "train", *args,
    ])  # fmt: skip


# One random order for both layouts: length grouping (the default) batches a one-process batch of 2 differently
# from two processes of 1, where there is nothing to pad and the order stays random.
COMMON = ["--model_name_or_path", "nlft:tiny", "--dtype", "float32", "--max_length", "512", "--disable_tqdm", "true",
          "--report_to", "none", "--num_train_epochs", "1", "--lora_dropout", "0", "--train_sampling_strategy",
          "random", *SGD]  # fmt: skip


@pytest.mark.slow
def test_ddp_with_incorrect_sft_judge_and_a_process_without_wrong_records(tmp_path):
    """Each process gets one record a step: a process whose record is correct runs no X_judge sequence of its
    own, yet every process runs the same forwards (this deadlocked when the X_judge pass ran separately)."""
    data = tmp_path / "d.jsonl"
    atomic_write_jsonl(data, ROWS)
    args = ["--data", str(data), *COMMON, "--incorrect_sft", "judge", "--gradient_accumulation_steps", "1"]
    two = launch(
        *args,
        "--per_device_train_batch_size",
        "1",
        "--output_dir",
        str(tmp_path / "two"),
        extra=("--multi_gpu",),
    )
    # Each rank leaves without the interpreter's finalization (leave_process): what it printed still comes out.
    assert two.stdout.count("run folder:") == 2, two.stdout
    run([sys.executable, "-m", "nlft", "train", *args, "--per_device_train_batch_size", "2", "--use_cpu", "true",
         "--output_dir", str(tmp_path / "one")])  # fmt: skip
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(relative(a[k], b[k]) <= 1e-5 for k in a)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["global_step"] == 2


@pytest.mark.slow
@pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed (make install does it)")
def test_zero3_full_fine_tuning_through_the_trainer_saves_a_model_eval_loads(tmp_path):
    data = tmp_path / "d.jsonl"
    atomic_write_jsonl(data, ROWS)
    args = ["--data", str(data), *COMMON, "--use_peft", "false", "--gradient_accumulation_steps", "1",
            "--reference_probs", "cached", "--saliency_steps", "1", "--saliency_probe", "2"]  # fmt: skip
    zero3 = REPO / "configs" / "accelerate" / "zero3.json"
    launch(*args, "--per_device_train_batch_size", "2", "--use_cpu", "true", "--output_dir", str(tmp_path / "z3"),
           extra=("--use_deepspeed", "--deepspeed_config_file", str(zero3)))  # fmt: skip
    run([sys.executable, "-m", "nlft", "train", *args, "--per_device_train_batch_size", "4", "--use_cpu", "true",
         "--output_dir", str(tmp_path / "one")])  # fmt: skip
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "z3" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(relative(a[k], b[k]) <= 1e-5 for k in a)
    assert len(list((tmp_path / "z3" / "saliency").glob("step-*.pt"))) == 2  # written once, by rank 0
    out = run([sys.executable, "-m", "nlft", "eval", str(tmp_path / "z3"), "--data", "nlft:sample", "--limit", "1",
               "--max-new-tokens", "2", "--quiet"])  # fmt: skip
    assert "1/1 items" in out.stdout


def test_a_launched_rank_leaves_with_its_code_and_its_output_flushed():
    # stdout is a pipe here, so block-buffered: without the flush "kept" would be lost with os._exit
    code = "from nlft.distributed import leave_process; print('kept', end=''); leave_process(3)"
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert (out.returncode, out.stdout, out.stderr) == (3, "kept", "")


# -- launches that do not give what was asked -----------------------------------------------------------------


def test_fsdp_asked_for_on_a_machine_without_gpus_is_refused(monkeypatch):
    from nlft.distributed import check_launch
    from nlft.train.config import parse_train_args

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: FSDP would run")
    _, _, args = parse_train_args(["--output_dir", "x", "--use_cpu", "true"])
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RuntimeError, match="silently train with DDP"):
        check_launch(args, use_peft=True)


def test_a_lone_process_under_accelerate_launch_is_warned_about(monkeypatch, caplog):
    from nlft.distributed import check_launch
    from nlft.train.config import parse_train_args

    _, _, args = parse_train_args(["--output_dir", "x", "--use_cpu", "true"])
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")  # set by accelerate launch in every child
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with caplog.at_level("WARNING", logger="nlft"):
        check_launch(args, use_peft=True)
    assert "single process" in caplog.text and "MULTI_CPU" in caplog.text


def test_zero3_full_fine_tuning_without_gathered_saves_is_refused(tmp_path):
    import types

    from nlft.distributed import check_launch

    class Zero3:
        def is_zero3(self):
            return True

        def get_value(self, key, default=None):
            return False

    args = types.SimpleNamespace(fsdp="", deepspeed="ds.json", hf_deepspeed_config=Zero3())
    if HAS_DEEPSPEED:
        with pytest.raises(ValueError, match="stage3_gather_16bit_weights_on_model_save"):
            check_launch(args, use_peft=False)
        check_launch(args, use_peft=True)  # LoRA saves only the adapter: nothing to gather
