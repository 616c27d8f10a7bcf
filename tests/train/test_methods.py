"""The baselines as table entries: rft sees only the correct responses, sft-gold only the gold solutions, and
every method trains on the same records with the same schedule."""

import json
from types import SimpleNamespace

from nlft.train.methods import METHODS, get_method
from nlft.train.run import load_training_tokenizer, prepare_records, train

from ..conftest import ROWS, config


def job_for(tmp_path, rows=ROWS):
    data, model_cfg, args = config(tmp_path, rows=rows)
    tok = load_training_tokenizer(model_cfg)
    encoded, texts, _ = prepare_records(data, tok)
    by_id = {t.id: t for t in texts}
    return SimpleNamespace(
        data=data, tokenizer=tok, records=encoded.records, texts=[by_id[r.id] for r in encoded.records]
    )


def targets(job, rows):
    """The text each training row is trained to produce (its labelled tokens)."""
    return [job.tokenizer.decode([t for t in r["labels"] if t != -100]) for r in rows]


def test_rft_trains_on_the_correct_responses_only(tmp_path):
    job = job_for(tmp_path)
    got = targets(job, get_method("rft").rows(job))
    correct = [r["response"] for r in ROWS if "judgment" not in r]
    assert len(got) == len(correct) == 2
    assert all(g.startswith(c) for g, c in zip(got, correct))  # then the EOS token
    assert not any("48*2 = 96" in g or "3+4 = 8" in g for g in got)


def test_sft_gold_trains_on_one_gold_solution_per_question(tmp_path):
    job = job_for(tmp_path)
    got = targets(job, get_method("sft-gold").rows(job))
    gold = list(dict.fromkeys(r["reference"] for r in ROWS))  # two questions, each asked twice
    assert len(got) == 2 and all(g.startswith(ref) for g, ref in zip(got, gold))


def test_sft_trains_on_every_response(tmp_path):
    job = job_for(tmp_path)
    got = targets(job, get_method("sft").rows(job))
    assert [g[: len(r["response"])] for g, r in zip(got, ROWS)] == [r["response"] for r in ROWS]


def test_every_method_trains_on_the_same_records_with_the_same_schedule(tmp_path):
    from nlft.train.methods import GRPOSettings

    configs = {}
    small_rl = GRPOSettings(grpo_num_generations=2, grpo_max_completion_length=8)  # one question per step
    for method in sorted(METHODS):
        cfg = config(tmp_path, "--method", method, "--max_steps", "2", "--seed", "3", "--gradient_accumulation_steps",
                     "1", "--per_device_train_batch_size", "1", name=method)  # fmt: skip
        result = train(*cfg, method_settings=small_rl if method == "grpo" else None)
        info = json.loads((result.run_dir / "run.json").read_text())
        assert info["method"] == method and info["records"] == len(ROWS) and result.global_step == 2
        lines = (result.run_dir / "config.yaml").read_text().splitlines()
        configs[method] = sorted(
            x for x in lines if not x.startswith(("method:", "data:", "output_dir:", "grpo_"))
        )
    first = configs.pop("nlft")
    assert "max_steps: 2" in first and "seed: 3" in first
    assert all(c == first for c in configs.values())


def test_grpo_reward_pays_a_correct_final_answer_only_and_counts_the_tokens():
    from nlft.train.methods import CorrectnessReward

    reward = CorrectnessReward()
    gold = "Natalia sold 48/2 = 24 clips in May.\n#### 72"
    completions = [
        "48/2 = 24\n48+24 = 72\n#### 72",  # right
        "48*2 = 96\n48+96 = 144\n#### 144",  # wrong answer
        "48/2 = 24, so 72 in all",  # no '#### N' line: the authors' rule takes the last number, strict nothing
        "#### 72.0",  # the same number, written otherwise
    ]
    got = reward(["q"] * 4, completions, reference=[gold] * 4, completion_ids=[[1, 2, 3], [4], [5, 6], [7]])
    assert got == [1.0, 0.0, 1.0, 1.0]
    assert reward.tokens == 7
    strict = CorrectnessReward(rule="strict")
    assert strict(["q"] * 4, completions, reference=[gold] * 4) == [1.0, 0.0, 0.0, 1.0]
    reward(["q"], ["#### 3"], reference=["#### 3"], completion_ids=[[1, 2]])
    assert reward.tokens == 9


def test_grpo_prompts_are_the_x_base_prompts_one_per_question(tmp_path):
    from nlft.train.methods import grpo_prompts

    job = job_for(tmp_path)
    rows = grpo_prompts(job)
    assert len(rows) == 2  # two questions, each asked twice
    first = {}
    for r in job.records:
        first.setdefault(job.texts[job.records.index(r)].question, r)
    for row, record in zip(rows, first.values()):
        assert job.tokenizer(row["prompt"])["input_ids"] == list(record.prompt_ids["base"])
    assert [row["reference"] for row in rows] == list(dict.fromkeys(r["reference"] for r in ROWS))


def test_grpo_trains_on_the_questions_and_records_its_costs(tmp_path):
    from nlft.train.config import parse_train_config
    from nlft.train.methods import GRPOSettings

    data, model_cfg, args, *settings = parse_train_config(
        [
            "--method", "grpo", "--data", str(config(tmp_path)[0].data), "--model_name_or_path", "nlft:tiny",
            "--output_dir", str(tmp_path / "grpo"), "--dtype", "float32", "--use_cpu", "true", "--report_to", "none",
            "--disable_tqdm", "true", "--max_length", "512", "--max_steps", "2", "--gradient_accumulation_steps", "1",
            "--per_device_train_batch_size", "1", "--grpo_num_generations", "2", "--grpo_max_completion_length", "8",
            "--logging_steps", "1", "--save_strategy", "no",
        ]
    )  # fmt: skip
    own = next(s for s in settings if isinstance(s, GRPOSettings))
    assert (own.grpo_num_generations, own.grpo_max_completion_length) == (2, 8)
    result = train(data, model_cfg, args, method_settings=own)
    info = json.loads((tmp_path / "grpo" / "run.json").read_text())
    assert info["finished"] and info["global_step"] == 2
    # 2 steps x 1 question x 2 completions, each at most 8 tokens (the random tiny model never stops early).
    logged = [h for h in result.log_history if "completions/mean_length" in h]
    assert (
        info["tokens_generated"] == sum(2 * h["completions/mean_length"] for h in logged)
        and 0 < info["tokens_generated"] <= 32
    )
    assert all("rewards/correct/mean" in h for h in logged)
    assert info["peak_memory_mb"] > 0 and info["memory_measure"]


def test_grpo_settings_are_checked():
    import pytest

    from nlft.train.methods import CorrectnessReward, GRPOSettings

    with pytest.raises(ValueError, match="at least 2"):
        GRPOSettings(grpo_num_generations=1)
    # The reward rule is the task's: checked against it when the reward is made.
    with pytest.raises(ValueError, match="unknown extraction rule 'nearest'"):
        CorrectnessReward(rule="nearest")
