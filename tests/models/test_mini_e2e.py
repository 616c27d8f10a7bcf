"""End to end on nlft:mini (slow): its own answers sampled, judged by the arithmetic judge, built into a set,
trained with NLFT — and training moves the model the way NLFT means to."""

import json

import pytest
import torch

from nlft.data.judging import JudgeOptions
from nlft.data.pipeline import make_dataset
from nlft.models.generation import BackendOptions, SamplingSettings
from nlft.see.saliency import score_data
from nlft.see.views import record_view
from nlft.tasks import get_task

pytestmark = pytest.mark.slow


def token_sets(records, cfg):
    """(record id, token index) of the confirmed tokens of correct records and the blamed ones of wrong records."""
    confirmed, blamed = [], []
    for rec in records:
        for t in record_view(rec, cfg).tokens:
            if t.role == "confirmed":
                confirmed.append((rec.id, t.index))
            elif t.role == "blamed":
                blamed.append((rec.id, t.index))
    return confirmed, blamed


def mean_p_base(records, where) -> float:
    by_id = {r.id: r for r in records}
    return torch.stack([by_id[i].p_base[k] for i, k in where]).mean().item()


def test_sample_judge_build_and_nlft_move_mini_as_nlft_means(tmp_path):
    from nlft.train.config import parse_train_args
    from nlft.train.run import train

    questions = get_task("mini-math").load("train", limit=48)
    made = make_dataset(
        questions,
        tmp_path / "data",
        sampler=BackendOptions(model="nlft:mini", batch_size=48, dtype="float32", device="cpu"),
        settings=SamplingSettings(max_new_tokens=160),
        judge=JudgeOptions(),
        size=18,
        ratio="2:1",
        progress=False,
    )
    assert made.built.selection.n_wrong == 6 and made.built.selection.n_correct == 12
    data = str(made.built.nlft_path)
    before = score_data("nlft:mini", data=data, dtype="float32", device="cpu", progress=False)
    confirmed, blamed = token_sets(before.records, before.weighting)
    assert len(confirmed) > 50 and len(blamed) >= 3  # a pretrained model confirms and blames

    def run(name, method, records_file):
        return train(
            *parse_train_args(
                [
                    "--method", method, "--data", records_file, "--model_name_or_path", "nlft:mini",
                    "--output_dir", str(tmp_path / name), "--dtype", "float32", "--use_cpu", "true",
                    "--report_to", "none", "--disable_tqdm", "true", "--num_train_epochs", "4",
                    "--per_device_train_batch_size", "3", "--learning_rate", "2e-3", "--logging_steps", "1",
                    "--save_strategy", "no", "--seed", "0",
                ]
            )
        )  # fmt: skip

    def scored(result):
        return score_data(
            str(result.run_dir), data=data, dtype="float32", device="cpu", progress=False
        ).records

    result = run("nlft", "nlft", data)
    by_epoch: dict[int, list[float]] = {}
    for h in result.log_history:
        if "loss" in h:
            by_epoch.setdefault(int(-(-h["epoch"] // 1)), []).append(h["loss"])
    means = [sum(v) / len(v) for _, v in sorted(by_epoch.items())]
    assert means[-1] < means[0], means  # the NLFT loss falls

    after = scored(result)
    assert mean_p_base(after, confirmed) > mean_p_base(
        before.records, confirmed
    )  # confirmed tokens pulled up
    # Blamed tokens end lower than under the SFT baseline on the same records, which learns the mistakes. (On
    # the mixed set their absolute probability can still rise a little: the correct records teach the same
    # tokens — "That", "Now", digits — in similar places; the README's figures say so.)
    sft = scored(run("sft", "sft", data))
    assert mean_p_base(after, blamed) < mean_p_base(sft, blamed)
    # Trained on the judged wrong answers alone, NLFT pushes the blamed tokens down outright.
    wrong = tmp_path / "wrong.jsonl"
    lines = made.built.nlft_path.read_text().splitlines()
    wrong.write_text("".join(line + "\n" for line in lines if json.loads(line)["correct"] is False))
    alone = scored(run("wrong-only", "nlft", str(wrong)))
    assert mean_p_base(alone, blamed) < mean_p_base(before.records, blamed)
