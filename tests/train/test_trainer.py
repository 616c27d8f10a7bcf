"""The NLFT trainer on the tiny model: normalisation, per-record losses, learning, reference-prob modes, SFT parity."""

import json
from pathlib import Path

import pytest
import torch

from nlft.jsonl import atomic_write_jsonl
from nlft.train.batches import NLFTCollator
from nlft.train.reference import ReferenceCache, compute_reference_probs, scoring_probs
from nlft.train.run import load_training_model, prepare_records, train
from nlft.train.trainer import NLFTTrainer

from ..conftest import ROWS, SGD, config


def build(tmp_path, *extra: str, rows=ROWS, name="run"):
    """An NLFTTrainer over ``rows`` without training it."""
    import datasets

    data, model_cfg, args = config(tmp_path, *extra, rows=rows, name=name)
    (tmp_path / name).mkdir(exist_ok=True)
    model, tok, base = load_training_model(model_cfg, args, tmp_path / name)
    encoded, _, _ = prepare_records(data, tok)
    collator = NLFTCollator(tok.pad_token_id)
    cache = ReferenceCache(None, encoded.records, base) if args.reference_probs == "cached" else None
    trainer = NLFTTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_list([r.to_features() for r in encoded.records]),
        data_collator=collator, processing_class=tok, reference_cache=cache,
    )  # fmt: skip
    return trainer, encoded.records, collator


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def batch_loss(trainer, collator, records) -> float:
    batch = collator([r.to_features() for r in records])
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


def test_accumulation_1x4_equals_4x1(tmp_path):
    one = train(
        *config(
            tmp_path,
            *SGD,
            "--per_device_train_batch_size",
            "4",
            "--gradient_accumulation_steps",
            "1",
            "--num_train_epochs",
            "1",
            name="a",
        )
    )
    four = train(
        *config(
            tmp_path,
            *SGD,
            "--per_device_train_batch_size",
            "1",
            "--gradient_accumulation_steps",
            "4",
            "--num_train_epochs",
            "1",
            name="b",
        )
    )
    assert one.global_step == four.global_step == 1
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    moved = 0
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6, rtol=1e-4), k
        moved += int(wa[k].abs().sum() > 0)
    assert moved > 0  # the step did something (B matrices leave zero)
    # The logged loss is the mean record loss of the step in both cases.
    la = [h["loss"] for h in one.log_history if "loss" in h][0]
    lb = [h["loss"] for h in four.log_history if "loss" in h][0]
    assert la == pytest.approx(lb, rel=1e-4)


def test_uneven_last_accumulation_window_is_still_a_mean(tmp_path):
    trainer, records, collator = build(tmp_path)
    batches = [collator([r.to_features()]) for r in records[:3]]
    count = trainer._get_num_items_in_batch(batches, torch.device("cpu"))
    assert int(count) == 3
    parts = [trainer.compute_loss(trainer.model, b, num_items_in_batch=count).item() for b in batches]
    alone = [batch_loss(trainer, collator, [r]) for r in records[:3]]
    assert sum(parts) == pytest.approx(sum(alone) / 3, rel=1e-5)


def test_mixed_batch_gives_each_record_its_own_loss(tmp_path):
    trainer, records, collator = build(tmp_path)
    trainer.model.eval()
    alone = [batch_loss(trainer, collator, [r]) for r in records]
    mixed = batch_loss(trainer, collator, records)
    assert mixed == pytest.approx(sum(alone) / len(alone), rel=1e-5)
    # ... and not the loss of the wrong polarity: a correct and a wrong record differ a lot.
    assert abs(alone[0] - alone[1]) > 1.0


def test_three_steps_change_every_lora_weight_and_lower_the_loss(tmp_path):
    trainer, records, collator = build(
        tmp_path, "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
        "--num_train_epochs", "3", "--learning_rate", "1e-2", "--warmup_steps", "0", "--lr_scheduler_type", "constant",
    )  # fmt: skip
    trainer.model.eval()
    before_loss = batch_loss(trainer, collator, records)
    before = lora_state(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 3
    after = lora_state(trainer.model)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, unchanged
    trainer.model.eval()
    assert batch_loss(trainer, collator, records) < before_loss


def test_logs_carry_loss_parts_and_weight_statistics(tmp_path):
    result = train(
        *config(
            tmp_path,
            "--per_device_train_batch_size",
            "2",
            "--gradient_accumulation_steps",
            "1",
            "--num_train_epochs",
            "1",
            # Random order mixes correct and wrong records in one batch; grouping by
            # length would put each kind in a batch of its own.
            "--train_sampling_strategy",
            "random",
        )
    )
    logged = [h for h in result.log_history if "loss" in h]
    assert len(logged) == 2
    for h in logged:
        for key in (
            "sft_loss",
            "nlft_loss",
            "blamed_fraction",
            "mean_weight_correct",
            "mean_weight_incorrect",
        ):
            assert key in h, key
        assert 0.0 <= h["blamed_fraction"] <= 1.0 and h["mean_weight_correct"] > 0
        # The parts are the step's own: every record's loss is loss_scale (10) x (its SFT term + its weighted
        # term), and the step's loss their mean, so it is 10 x (mean SFT part + mean NLFT part) and lies between
        # the mean loss of its correct records and that of its wrong ones.
        assert h["loss"] == pytest.approx(10 * (h["sft_loss"] + h["nlft_loss"]), rel=1e-3)
        parts = sorted(h[k] for k in ("correct_loss", "incorrect_loss") if k in h)
        assert parts[0] - 1e-3 <= h["loss"] <= parts[-1] + 1e-3


def test_reference_probs_initial_scores_the_frozen_base(tmp_path):
    trainer, records, collator = build(
        tmp_path, "--reference_probs", "initial", "--num_train_epochs", "2", "--learning_rate", "1e-2"
    )
    frozen = compute_reference_probs(trainer.model, records, collator, progress=False)
    trainer.train()
    batch = collator([r.to_features() for r in records])
    p_std, p_judge = scoring_probs(trainer.model, batch, reference_probs="initial")
    for i, rec in enumerate(records):
        assert torch.allclose(p_std[i], frozen[rec.id]["std"], atol=1e-6)
    # With the adapter on, the trained model scores differently from the frozen base.
    live_std, _ = scoring_probs(trainer.model, batch, reference_probs="live")
    assert not torch.allclose(live_std[0], frozen[records[0].id]["std"], atol=1e-6)


def test_reference_probs_cached_is_stored_with_the_run_and_reused(tmp_path, monkeypatch):
    data, model_cfg, args = config(
        tmp_path, "--reference_probs", "cached", "--num_train_epochs", "1", "--save_strategy", "epoch"
    )
    train(data, model_cfg, args)
    stored = torch.load(tmp_path / "run" / "reference_probs.pt", weights_only=True)
    assert set(stored["records"]) == {r["id"] for r in ROWS}
    assert stored["records"]["c1"]["judge"] is None and stored["records"]["w1"]["judge"] is not None

    import nlft.train.reference as reference_module

    def refuse(*a, **k):
        raise AssertionError("cached reference probabilities were computed again")

    monkeypatch.setattr(reference_module, "compute_reference_probs", refuse)
    data, model_cfg, args = config(
        tmp_path,
        "--reference_probs",
        "cached",
        "--num_train_epochs",
        "2",
        "--save_strategy",
        "epoch",
        "--resume_from_checkpoint",
        "last",
    )
    result = train(data, model_cfg, args)
    assert result.global_step == 2  # 4 records, 1 x 4 per step: one step per epoch, the second one resumed


def test_uniform_weights_nlft_equals_trl_sft_loss(tmp_path):
    """NLFT with every weight 1, no extra terms and scale 1 is exactly SFT (trl's SFTTrainer, default loss)."""
    import datasets
    from trl import SFTTrainer

    from nlft.train.methods import sft_config

    trainer, records, collator = build(tmp_path, "--uniform_weights", "true", "--loss_scale", "1")
    rows = [
        {"input_ids": r.input_ids("base"), "labels": [-100] * len(r.prompt_ids["base"]) + r.response_ids}
        for r in records
    ]
    sft = SFTTrainer(
        model=trainer.model,
        args=sft_config(trainer.args),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=trainer.processing_class,
    )
    trainer.model.eval()
    for i, record in enumerate(records):
        nlft_loss = batch_loss(trainer, collator, [record])
        sft_batch = sft.data_collator([sft.train_dataset[i]])
        with torch.no_grad():
            sft_loss = sft.compute_loss(trainer.model, sft_batch).item()
        assert nlft_loss == pytest.approx(sft_loss, rel=1e-5)


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({**ROWS[0], "response": ""}, "c1"),
        ({**ROWS[0], "judgment": "bad", "correct": True}, "c1"),
        ({**ROWS[0], "response": "48 + 24 = 72. " * 400}, "c1"),
    ],
)
def test_bad_record_stops_naming_its_id_or_is_skipped(tmp_path, row, words, capsys):
    from nlft.cli import main

    rows = [row, *ROWS[1:]]
    data, model_cfg, args = config(tmp_path, "--num_train_epochs", "1", rows=rows)
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", data.data, "--model_name_or_path", "nlft:tiny", "--output_dir", str(tmp_path / "x"),
              "--use_cpu", "true", "--report_to", "none", "--max_length", "512"])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert words in err
    data.skip_invalid = True
    result = train(data, model_cfg, args)
    assert result.records == 3 and result.skipped == 1
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["records"] == 3 and len(info["skipped"]) == 1 and "c1" in info["skipped"][0]


def test_full_fine_tuning_trains_the_head_through_the_lean_path(tmp_path):
    trainer, records, collator = build(
        tmp_path, "--use_peft", "false", "--learning_rate", "1e-3", "--warmup_steps", "0", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
    )  # fmt: skip
    head = trainer.model.get_output_embeddings().weight.detach().clone()
    trainer.train()
    assert not torch.equal(head, trainer.model.get_output_embeddings().weight)


def test_initial_needs_lora(tmp_path):
    with pytest.raises(ValueError, match="needs LoRA"):
        build(tmp_path, "--use_peft", "false", "--reference_probs", "initial")


def test_existing_run_is_not_overwritten(tmp_path):
    train(*config(tmp_path, "--num_train_epochs", "1", "--save_strategy", "epoch"))
    with pytest.raises(ValueError, match="resume_from_checkpoint last"):
        train(*config(tmp_path, "--num_train_epochs", "1", "--save_strategy", "epoch"))


@pytest.mark.parametrize("flag", ["--load_in_4bit", "--load_in_8bit"])
def test_quantized_loading_without_cuda_is_a_clear_error(tmp_path, flag):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: quantized loading would be attempted for real")
    data, model_cfg, args = config(tmp_path, flag, "true")
    with pytest.raises(ValueError, match="need a CUDA GPU"):
        train(data, model_cfg, args)


def test_missing_model_or_data_writes_nothing(tmp_path):
    data, model_cfg, args = config(tmp_path, name="never")
    model_cfg.model_name_or_path = None
    with pytest.raises(ValueError, match="no model"):
        train(data, model_cfg, args)
    data, model_cfg, args = config(tmp_path, name="never")
    data.data = str(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="missing.jsonl: no such file"):
        train(data, model_cfg, args)
    assert not (tmp_path / "never").exists()


# -- refusals before anything is written; checkpoints a kill cut short ----------------------------------------


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--gradient_accumulation_steps", "0"), "gradient_accumulation_steps"),
        (("--num_train_epochs", "0"), "num_train_epochs"),
        (("--num_train_epochs", "-1"), "num_train_epochs"),
        (("--threshold", "nan"), "threshold"),
        (("--prob_floor", "0"), "prob_floor"),
        (("--unlikelihood_factor", "inf"), "unlikelihood_factor"),
        (("--other_exponent", "-50"), "other_exponent"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, extra, words):
    from nlft.cli import main

    data = tmp_path / "d.jsonl"
    atomic_write_jsonl(data, ROWS)
    run = tmp_path / "never"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "train",
                "--data",
                str(data),
                "--model_name_or_path",
                "nlft:tiny",
                "--output_dir",
                str(run),
                *extra,
            ]
        )
    assert info.value.code == 2
    assert not run.exists()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("lora_target_modules: 5\n", "lora_target_modules"),
        ("output_dir: [1, 2]\n", "output_dir"),
        ("learnign_rate: 1.0e-4\n", "did you mean 'learning_rate'"),
        ("threshold: .nan\n", "threshold"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_a_bad_config_file_is_named_with_what_is_wrong(tmp_path, capsys, text, words):
    from nlft.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(
            [
                "train",
                "--config",
                str(cfg),
                "--data",
                "nlft:sample",
                "--model_name_or_path",
                "nlft:tiny",
                "--output_dir",
                str(tmp_path / "r"),
            ]
        )
    err = capsys.readouterr().err
    assert info.value.code == 2 and words in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path), "--output_dir", str(tmp_path / "r")])
    assert "is a folder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_finished_run_is_never_replaced_without_the_flag(tmp_path):
    first = train(*config(tmp_path, "--max_steps", "1"))
    adapter = (first.run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    (first.run_dir / "notes.txt").write_text("mine")
    data, model_cfg, args = config(tmp_path, "--max_steps", "1", "--method", "sft")
    with pytest.raises(ValueError, match="overwrite_output_dir"):
        train(data, model_cfg, args)
    assert (first.run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
    assert json.loads((first.run_dir / "run.json").read_text())["method"] == "nlft"
    data, model_cfg, args = config(
        tmp_path, "--max_steps", "1", "--method", "sft", "--overwrite_output_dir", "true"
    )
    train(data, model_cfg, args)
    assert json.loads((first.run_dir / "run.json").read_text())["method"] == "sft"
    assert (first.run_dir / "notes.txt").read_text() == "mine"  # only what a run writes was replaced


def test_resume_skips_a_checkpoint_whose_save_was_cut_short(tmp_path, caplog):
    import shutil

    args = ("--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--per_device_train_batch_size", "1",
            "--gradient_accumulation_steps", "1", *SGD)  # fmt: skip
    straight = train(*config(tmp_path, *args, name="straight"))
    train(*config(tmp_path, *args, name="cut"))
    run = tmp_path / "cut"
    # As a kill during the save of checkpoint-4 leaves it: the weights written, trainer_state.json not yet.
    (run / "checkpoint-4" / "trainer_state.json").unlink()
    shutil.rmtree(run / "adapter")
    data, model_cfg, targs = config(tmp_path, *args, "--resume_from_checkpoint", "last", name="cut")
    with caplog.at_level("WARNING", logger="nlft"):
        resumed = train(data, model_cfg, targs)
    assert "skipping" in caplog.text and "checkpoint-4" in caplog.text
    assert resumed.global_step == straight.global_step == 4
    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(run / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_trained_with_a_relative_folder_is_read_from_anywhere(tmp_path, monkeypatch):
    from nlft.models.loading import load_model
    from nlft.runs import load_run

    work = tmp_path / "work"
    work.mkdir()
    atomic_write_jsonl(work / "d.jsonl", ROWS)
    monkeypatch.chdir(work)
    data, model_cfg, args = config(work, "--max_steps", "1", rows=ROWS, name="d")
    data.data = "d.jsonl"
    args.output_dir = "runs/rel"
    train(data, model_cfg, args)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = load_run(work / "runs" / "rel")
    assert run.info["base_model"] == "./base-model" and Path(run.base_model).is_dir()
    assert Path(run.data).is_file()
    net, _, found = load_model(work / "runs" / "rel")
    assert found.adapter == work / "runs" / "rel" / "adapter"


def _varied_rows(n: int = 12):
    """Records of widely different lengths (short and long questions and responses), half of them wrong."""
    rows = []
    for i in range(n):
        k = 1 + (i * 7) % n  # lengths in a shuffled order
        steps = "\n".join(f"{j}+{k} = {j + k}" for j in range(k))
        row = {"id": f"r{i}", "question": f"Add {k} to each number below {k}. " * (1 + k // 4), "response": f"{steps}\n#### {k}",
               "reference": f"#### {k}"}  # fmt: skip
        if i % 2:
            row["judgment"] = f"The last line is wrong: it should be {k + 1}."
        rows.append(row)
    return rows


def test_length_grouped_batches_pad_less_and_leave_every_loss_unchanged(tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    rows = _varied_rows()
    grouped, records, collator = build(tmp_path, "--per_device_train_batch_size", "2", rows=rows, name="g")
    assert isinstance(grouped._get_train_sampler(), LengthGroupedSampler)  # the default with batches above 1
    random_, _, _ = build(
        tmp_path,
        "--per_device_train_batch_size",
        "2",
        "--train_sampling_strategy",
        "random",
        rows=rows,
        name="r",
    )

    def padded(trainer) -> float:
        real = computed = 0
        for batch in trainer.get_train_dataloader():
            for kind in ("base", "std", "judge"):
                if f"{kind}_attention_mask" in batch:
                    mask = batch[f"{kind}_attention_mask"]
                    real, computed = real + int(mask.sum()), computed + mask.numel()
        return 1 - real / computed

    torch.manual_seed(0)
    p_random = sum(padded(random_) for _ in range(5)) / 5
    p_grouped = sum(padded(grouped) for _ in range(5)) / 5
    assert p_grouped < 0.7 * p_random, (p_grouped, p_random)
    # Every grouped batch's loss is the mean of its records' losses alone: grouping changes the order only.
    grouped.model.eval()
    by_id = {r.id: r for r in records}
    for batch in grouped.get_train_dataloader():
        with torch.no_grad():
            together = grouped.compute_loss(grouped.model, batch).item()
        alone = [batch_loss(grouped, collator, [by_id[i]]) for i in batch["ids"]]
        assert together == pytest.approx(sum(alone) / len(alone), rel=1e-5)


def test_batch_one_keeps_the_random_order(tmp_path):
    from torch.utils.data import RandomSampler

    trainer, _, _ = build(tmp_path)
    assert type(trainer._get_train_sampler()) is RandomSampler
    from nlft.train.methods import sft_config

    assert sft_config(trainer.args).train_sampling_strategy == "random"


def test_length_grouped_order_depends_only_on_seed_and_epoch(tmp_path):
    """A run resumed mid-epoch must replay the same batches: the sampler draws from its own seeded generator."""
    from nlft.train.trainer import SeededLengthGroupedSampler

    trainer, records, _ = build(tmp_path, "--per_device_train_batch_size", "2")
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, SeededLengthGroupedSampler)
    lengths = [3, 9, 4, 8, 1, 7, 2, 6] * 4
    a = SeededLengthGroupedSampler(2, lengths=lengths, seed=5)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(123)  # the global RNG (restored differently on resume) does not matter
    again = list(SeededLengthGroupedSampler(2, lengths=lengths, seed=5))
    assert first == again and sorted(first) == list(range(len(lengths)))
    a.set_epoch(1)
    assert list(a) != first  # a new order each epoch


def test_only_half_built_base_models_of_dead_processes_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from nlft.train.run import _remove_dead_partials

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free now
    (tmp_path / f".base-model.{dead.pid}").mkdir()
    (tmp_path / f".base-model.{dead.pid}" / "config.json").write_text("{}")
    (tmp_path / f".base-model.{os.getpid()}").mkdir()  # a live process's build
    (tmp_path / ".base-model.notes").mkdir()  # not ours by its name
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / ".base-model.1").symlink_to(elsewhere)  # never followed
    _remove_dead_partials(tmp_path)
    assert not (tmp_path / f".base-model.{dead.pid}").exists()
    assert (tmp_path / f".base-model.{os.getpid()}").is_dir() and (tmp_path / ".base-model.notes").is_dir()
    assert (tmp_path / ".base-model.1").is_symlink() and elsewhere.is_dir()
