"""Shared fixtures. Tests that need ../shared skip with a reason where it is absent (a user's clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NLFT_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"


# Four records for the tiny-model training tests: two correct, two wrong with judgments, two questions.
Q = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell?"
REF = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72"
ROWS = [
    {"id": "c1", "question": Q, "response": REF, "reference": REF},
    {
        "id": "w1",
        "question": Q,
        "response": "She sold 48*2 = 96 in May.\n48+96 = 144\n#### 144",
        "reference": REF,
        "judgment": "48*2 is wrong: half of 48 is 24.",
    },
    {
        "id": "c2",
        "question": "What is 3+4?",
        "response": "3+4 = <<3+4=7>>7\n#### 7",
        "reference": "3+4=7\n#### 7",
    },
    {
        "id": "w2",
        "question": "What is 3+4?",
        "response": "3+4 = 8\n#### 8",
        "reference": "3+4=7\n#### 7",
        "judgment": "3+4 is 7, not 8.",
    },
]


def config(tmp_path, *extra: str, rows=ROWS, name="run"):
    """The parsed ``nlft train`` settings of a quiet CPU run of the tiny model on ``rows`` into tmp_path/name."""
    from nlft.jsonl import atomic_write_jsonl
    from nlft.train.config import parse_train_args

    data = tmp_path / f"{name}.jsonl"
    atomic_write_jsonl(data, rows)
    return parse_train_args(
        [
            "--data", str(data), "--model_name_or_path", "nlft:tiny", "--output_dir", str(tmp_path / name),
            "--dtype", "float32", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
            "--lora_dropout", "0", "--max_length", "512", "--save_strategy", "no", "--logging_steps", "1",
            *extra,
        ]
    )  # fmt: skip


# Plain SGD steps at a constant rate: the update is proportional to the gradient, so runs compare exactly.
SGD = (
    "--optim",
    "sgd",
    "--learning_rate",
    "0.5",
    "--max_grad_norm",
    "0",
    "--warmup_steps",
    "0",
    "--lr_scheduler_type",
    "constant",
)


def need_shared(*parts: str) -> Path:
    """The path under ../shared, or a skip saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"needs {path} (the project's shared data folder beside the repo; absent on this machine)"
        )
    return path


@pytest.fixture(scope="session")
def tokenizer():
    from nlft.models.tiny import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    return need_shared("data", "gsm8k")


@pytest.fixture(scope="session")
def pool_200(gsm8k_dir):
    """200 real records: MathCritique's 100 wrong answers with critiques + 100 GSM8K train gold solutions."""
    from nlft.data.sources import from_mathcritique, gsm8k_gold_records

    wrong = list(from_mathcritique(need_shared("data", "mathcritique", "mathcritique_gsm8k_triples.jsonl")))
    used = {r.question for r in wrong}
    correct = list(gsm8k_gold_records("train", gsm8k_dir, exclude=used, limit=100))
    assert len(wrong) == 100 and len(correct) == 100
    return wrong + correct


@pytest.fixture
def write(tmp_path):
    """write(name, text_or_bytes) -> path of a file in tmp_path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return _write


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight Llama saved as a model folder (with the project tokenizer), shared by the session."""
    from nlft.models.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def make_probe(record_id: str, correct: bool, n: int = 24, seed: int = 0, tokens: list[str] | None = None):
    """A ``ProbeRecord`` with made-up probabilities where the weighting has something to do: a wrong record
    gets tokens the judgment makes much likelier (blamed under the default settings), a correct one tokens the
    standard answer makes near-certain (confirmed)."""
    import torch

    from nlft.train.probes import ProbeRecord

    gen = torch.Generator().manual_seed(seed)
    p_base = torch.rand(n, generator=gen) * 0.5 + 0.05
    p_std = torch.rand(n, generator=gen) * 0.5 + 0.05
    picked = torch.randperm(n, generator=gen)[: max(n // 6, 1)]
    p_judge = None
    if correct:
        p_std[picked] = 0.96 + 0.04 * torch.rand(picked.numel(), generator=gen)
    else:
        p_judge = p_base * (0.5 + torch.rand(n, generator=gen))
        p_judge[picked] = (p_base[picked] * 3).clamp(max=0.99)
        p_std[picked] = p_judge[picked] / 3
    texts = tokens or [f" w{i}" if i % 7 else f" w{i}\n" for i in range(n)]
    return ProbeRecord(
        id=record_id,
        correct=correct,
        question=f"Question of {record_id}?",
        judgment=None if correct else f"Judgment of {record_id}: step 2 is wrong.",
        token_ids=list(range(100, 100 + n)),
        tokens=list(texts),
        p_base=p_base,
        p_std=p_std,
        p_judge=p_judge,
        hidden=torch.randn(n, 16, generator=gen),
    )


# Settings under which some of the tiny random model's tokens are blamed, some confirmed and some clustered (its
# probabilities are ~1/4096, its ratios ~1, its neighbouring hidden states ~0.9 apart in cosine distance), so
# that weights compared in tests are not all alike.
VISIBLE = [
    "--judge_floor", "0", "--ratio_threshold", "1.0", "--correct_confidence", "0.00025", "--cluster_radius", "0.95",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder as `nlft train` writes it (runs.py): a tiny base model, run.json, a real PEFT LoRA adapter
    saved after each of 3 epochs (random, clearly different weights) and the last one as the final adapter."""
    import json
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from nlft.models.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("tiny_run")
    base = save_tiny_model(root / "base", seed=0)
    run = root / "run-nlft"
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"],
        lora_dropout=0.0,
    )
    peft_model = get_peft_model(model, config)
    for epoch in (1, 2, 3):
        with torch.no_grad():
            gen = torch.Generator().manual_seed(epoch)
            for name, param in peft_model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
        peft_model.save_pretrained(run / "epochs" / f"epoch-{epoch}")
    shutil.copytree(run / "epochs" / "epoch-3", run / "adapter")
    (run / "run.json").write_text(
        json.dumps({"base_model": str(base), "method": "nlft", "epochs": [1, 2, 3]}), encoding="utf-8"
    )
    return run


@pytest.fixture(scope="session")
def snapshot_run(tmp_path_factory) -> Path:
    """A finished two-step NLFT run of the tiny model on four records, with a saliency snapshot every step."""
    from nlft.jsonl import atomic_write_jsonl
    from nlft.train.config import parse_train_args
    from nlft.train.run import train

    root = tmp_path_factory.mktemp("tiny-run")
    atomic_write_jsonl(root / "data.jsonl", ROWS)
    train(
        *parse_train_args(
            [
                "--data", str(root / "data.jsonl"), "--model_name_or_path", "nlft:tiny", "--output_dir", str(root / "run"),
                "--dtype", "float32", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
                "--lora_dropout", "0", "--max_length", "512", "--save_strategy", "no", "--max_steps", "2",
                "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--learning_rate", "1e-2",
                "--saliency_steps", "1", "--saliency_probe", "4", *VISIBLE,
            ]
        )
    )  # fmt: skip
    return root / "run"


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> tuple[Path, str]:
    """One ``nlft demo`` on a small budget (its folder and what it printed), shared by the tests that read a real
    demo. Those tests are marked ``xdist_group("demo")``, so that under ``pytest -n 2 --dist loadgroup`` they run on
    one worker and the demo is made once."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("demo") / "demo"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(REPO / "src"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "nlft", "demo", "--out", str(out), "--questions", "24", "--test-questions", "4",
         "--epochs", "2", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


@pytest.fixture
def server():
    """start(run_dir) -> a studio server answering on 127.0.0.1 in a thread; stopped after the test."""
    import threading

    from nlft.see.studio import make_server

    started = []

    def start(run_dir):
        srv = make_server(run_dir, port=0)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()
