"""The steps every cell goes through: the data (pool, judged, nested subsets), training in a child process, and
evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .options import ExperimentOptions
from .plan import Cell, nested_subsets


def _write_jsonl(path: Path, records: list) -> None:
    from ..jsonl import atomic_write_jsonl

    atomic_write_jsonl(path, [r.to_dict() for r in records])


def build_data(o: ExperimentOptions, out: Path) -> dict[int, list]:
    from ..data.builder import parse_ratio
    from ..data.judging import JudgeOptions
    from ..data.pipeline import sample_and_judge
    from ..models.generation import BackendOptions, SamplingSettings
    from ..records import load_records
    from ..tasks import get_task

    task = get_task(o.task)
    if task is None:
        raise ValueError(f"--task {o.task}: no such task")
    paths = {size: out / "data" / f"size-{size}" / "nlft.jsonl" for size in o.data_sizes()}
    if all(path.is_file() for path in paths.values()):
        # Built earlier (or restored from a committed chunk): the pool is not needed again.
        return {size: load_records(path) for size, path in paths.items()}
    pool = out / "pool"
    sample_and_judge(
        task.load("train", limit=o.pool_questions),
        pool,
        sampler=BackendOptions(model=o.model, batch_size=o.generation_batch, dtype=o.dtype, device=o.device),
        settings=SamplingSettings(max_new_tokens=o.max_new_tokens, temperature=o.pool_temperature),
        samples=o.pool_samples,
        judge=JudgeOptions(
            o.judge,
            model=None
            if o.judge == "arithmetic"
            else BackendOptions(
                model=o.judge_model, base_url=o.judge_base_url, dtype=o.dtype, device=o.device
            ),
        ),
        task=task,
        progress=o.progress,
    )
    subsets = nested_subsets(
        load_records(pool / "judged.jsonl"), o.data_sizes(), parse_ratio(o.ratio), seed=0
    )
    for size, records in subsets.items():
        if not paths[size].is_file():
            _write_jsonl(paths[size], records)
    return subsets


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the experiment waits, so that its child is stopped rather than orphaned."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def run_child(command: list[str], grace: float = 30.0) -> int:
    """Run ``command`` and wait for it; if this process is interrupted (Ctrl-C) or terminated (SIGTERM) meanwhile,
    the child gets SIGINT (it saves nothing half-way: a rerun resumes from its last checkpoint), then SIGKILL after
    ``grace`` seconds, and is waited for: an experiment never leaves a training running beside its rerun."""
    import signal
    import subprocess

    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return child.wait()
    except BaseException:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def train_cell(o: ExperimentOptions, out: Path, cell: Cell) -> None:
    train_run(o, out / "runs" / cell.name, out, cell, o.rate(cell.method))


def finished(run: Path) -> bool:
    info = run / "run.json"
    return info.is_file() and bool(json.loads(info.read_text(encoding="utf-8")).get("finished"))


def train_run(o: ExperimentOptions, run: Path, out: Path, cell: Cell, rate: float) -> None:
    """Train one cell with ``nlft train`` in a process of its own: its peak memory is its own (a process that ran
    earlier cells keeps their memory), and a crash stops the experiment, not the interpreter."""
    import sys

    if finished(run):
        return
    resume = ["--resume_from_checkpoint", "last"] if run.exists() else []
    print(
        f"\n== {run.name}: {cell.method} on {cell.size} records, seed {cell.seed}, rate {rate:g} ==",
        flush=True,
    )
    args = [
        "--method", cell.method,
        "--data", str(out / "data" / f"size-{cell.size}" / "nlft.jsonl"),
        "--task", o.task,
        "--model_name_or_path", o.model,
        "--output_dir", str(run),
        "--num_train_epochs", str(o.epochs),
        "--per_device_train_batch_size", str(o.batch_size),
        "--gradient_accumulation_steps", "1",
        "--learning_rate", str(rate),
        "--seed", str(cell.seed),
        "--dtype", o.dtype,
        "--logging_steps", "5",
        "--report_to", "tensorboard",
        "--save_strategy", "epoch",
        "--save_total_limit", "1",
        "--disable_tqdm", str(not o.progress).lower(),
        *(["--use_cpu", "true"] if o.device == "cpu" else []),
        # On-policy methods' rollouts as long as the samples and the evaluation's answers.
        "--grpo_max_completion_length", str(o.max_new_tokens),
        "--sdft_max_completion_length", str(o.max_new_tokens),
        "--sdpo_max_completion_length", str(o.max_new_tokens),
        *resume,
        *o.train_args,
    ]  # fmt: skip
    code = run_child([sys.executable, "-m", "nlft", "train", *args])
    if code != 0:
        raise RuntimeError(
            f"{run.name}: nlft train exited with status {code} (its messages are above; rerun to resume)"
        )


def evaluate(
    o: ExperimentOptions,
    target: Path,
    *,
    all_checkpoints: bool = False,
    model: str | None = None,
    data: str | None = None,
    limit: int | None = None,
) -> None:
    from ..evals.evaluation import EvalOptions, EvalSettings, run_eval
    from ..models.generation import BackendOptions

    run_eval(
        EvalOptions(
            model=model or str(target),
            backend=BackendOptions(batch_size=o.generation_batch, dtype=o.dtype, device=o.device),
            all_checkpoints=all_checkpoints,
            data=data or f"{o.task}:test",
            settings=EvalSettings(limit=limit or o.test_questions, max_new_tokens=o.max_new_tokens),
            out=str(target) if model else None,
            progress=o.progress,
        )
    )


def final_evaluation(run: Path, data: str) -> tuple[Path, dict[str, Any]]:
    """The folder and summary of a run's evaluation on ``data`` (greedy, the paper protocol) at its last epoch."""
    from ..evals.questions import data_name
    from ..files import read_json
    from ..runs import EVAL_DIR

    found = []
    for file in sorted((run / EVAL_DIR).glob("*/summary.json")):
        summary = read_json(file, "evaluation summary")
        if (
            isinstance(summary, dict)
            and summary.get("protocol") == "paper"
            and summary.get("data_name") == data_name(data)
            and summary.get("tag") is None
            and summary.get("complete")
        ):
            last = summary.get("checkpoint") in (None, "final")
            found.append(((last, summary.get("epoch") or 0), file.parent, summary))
    if not found:
        raise FileNotFoundError(f"{run}: no complete evaluation on {data}; rerun the experiment to make it")
    _, folder, summary = max(found, key=lambda f: f[0])
    return folder, summary
