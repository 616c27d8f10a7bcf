"""The baselines as table entries: rft sees only the correct responses, sft-gold only the gold solutions, and
every method trains on the same records with the same schedule."""

import json
from types import SimpleNamespace

import pytest
import torch

from nlft.train.methods import METHODS, CorrectnessReward, get_method
from nlft.train.run import load_training_tokenizer, prepare_records, train

from ..conftest import ROWS, SGD, config


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
    from nlft.train.methods import GRPOSettings, SDFTSettings, SDPOSettings

    configs = {}
    small = {  # one question per step, short rollouts
        "grpo": GRPOSettings(grpo_num_generations=2, grpo_max_completion_length=8),
        "sdft": SDFTSettings(sdft_max_completion_length=8),
        "sdpo": SDPOSettings(sdpo_num_generations=2, sdpo_max_completion_length=8),
    }
    for method in sorted(METHODS):
        cfg = config(tmp_path, "--method", method, "--max_steps", "2", "--seed", "3", "--gradient_accumulation_steps",
                     "1", "--per_device_train_batch_size", "1", name=method)  # fmt: skip
        result = train(*cfg, method_settings=small.get(method))
        info = json.loads((result.run_dir / "run.json").read_text())
        assert info["method"] == method and info["records"] == len(ROWS) and result.global_step == 2
        lines = (result.run_dir / "config.yaml").read_text().splitlines()
        configs[method] = sorted(
            x
            for x in lines
            if not x.startswith(("method:", "data:", "output_dir:", "grpo_", "sdft_", "sdpo_"))
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


@pytest.mark.parametrize(
    ("batch", "generations", "questions"),
    [(4, 8, 1), (4, 1, 4), (4, 4, 1), (4, 2, 2), (6, 4, 1), (6, 2, 3), (5, 2, 1), (1, 8, 1), (8, 2, 4)],
)
def test_an_on_policy_forward_holds_a_batch_of_completions_or_one_group(batch, generations, questions):
    from nlft.train.methods import questions_per_forward

    assert questions_per_forward(batch, generations) == questions


class LengthReward(CorrectnessReward):
    """A reward that differs within a group on the random tiny model (correctness is always 0 there)."""

    def __call__(self, prompts, completions, reference, completion_ids=None, **kwargs) -> list[float]:
        super().__call__(prompts, completions, reference, completion_ids=completion_ids, **kwargs)
        return [float(sum(completion_ids[i]) % 7) for i in range(len(completions))]


def test_grpo_in_forwards_of_one_group_takes_the_step_of_the_whole_batch(tmp_path, monkeypatch):
    """2 questions x 2 rollouts a step: one forward of 4 completions, or two of one question's 2 with gradient
    accumulation (trl generates all 4 at once either way): the same update."""
    from safetensors.torch import load_file

    import nlft.train.methods as methods
    from nlft.train.methods import GRPOSettings

    monkeypatch.setattr(methods, "CorrectnessReward", LengthReward)
    made = []
    values = methods.trainer_values
    monkeypatch.setattr(methods, "trainer_values", lambda job, g: made.append(values(job, g)) or made[-1])
    small = GRPOSettings(grpo_num_generations=2, grpo_max_completion_length=8)
    common = ("--method", "grpo", "--max_steps", "1", "--seed", "3", "--per_device_train_batch_size", "2",
              "--gradient_accumulation_steps", "1", *SGD)  # fmt: skip
    split = train(*config(tmp_path, *common, name="split"), method_settings=small)
    monkeypatch.setattr(methods, "questions_per_forward", lambda batch, generations: batch)
    whole = train(*config(tmp_path, *common, name="whole"), method_settings=small)
    assert [(v["per_device_train_batch_size"], v["gradient_accumulation_steps"]) for v in made] == [
        (2, 2),
        (4, 1),
    ]
    assert split.global_step == whole.global_step == 1
    a = load_file(split.run_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(whole.run_dir / "adapter" / "adapter_model.safetensors")
    moved = [k for k in a if "lora_B" in k and a[k].abs().max() > 0]
    assert moved, "the step moved no LoRA weight: the test would compare nothing"
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a), max(
        (a[k] - b[k]).abs().max().item() for k in a
    )


def test_grpo_settings_are_checked():
    import pytest

    from nlft.train.methods import CorrectnessReward, GRPOSettings

    with pytest.raises(ValueError, match="at least 2"):
        GRPOSettings(grpo_num_generations=1)
    # The reward rule is the task's: checked against it when the reward is made.
    with pytest.raises(ValueError, match="unknown extraction rule 'nearest'"):
        CorrectnessReward(rule="nearest")


# --------------------------------------------------------------------------------------------------------------
# The 2026 baselines: dft, sdft, sdpo
# --------------------------------------------------------------------------------------------------------------


def test_dft_trains_on_sfts_token_ids_with_trls_dft_loss(tmp_path):
    job = job_for(tmp_path)
    job.args = config(tmp_path)[2]
    assert get_method("dft").rows(job) == get_method("sft").rows(job)
    assert (
        get_method("dft").config(job).loss_type == "dft" and get_method("sft").config(job).loss_type == "nll"
    )


def test_sdft_rows_give_the_teacher_nlfts_x_std_prompt_whole(tmp_path):
    from nlft.train.methods import sdft_rows

    job = job_for(tmp_path)
    rows = sdft_rows(job)
    assert len(rows) == 2  # one per question
    golds = list(dict.fromkeys(r["reference"] for r in ROWS))
    firsts = [
        job.records[[t.question for t in job.texts].index(q)]
        for q in dict.fromkeys(t.question for t in job.texts)
    ]
    for row, record, gold in zip(rows, firsts, golds):
        # trl builds the teacher prompt as teacher_prompt_template.format(...), which the method sets to the context.
        template = (
            "{privileged_context}"  # the method's teacher_prompt_template; trl formats it with both names
        )
        teacher = template.format(prompt=row["prompt"], privileged_context=row["privileged_context"])
        assert gold in teacher and gold not in row["prompt"]
        assert job.tokenizer(teacher)["input_ids"] == list(record.prompt_ids["std"])
        assert job.tokenizer(row["prompt"])["input_ids"] == list(record.prompt_ids["base"])


def test_sdpo_rows_carry_the_questions_judgment_as_feedback(tmp_path):
    from nlft.train.methods import SDPOSettings, sdpo_rows

    job = job_for(tmp_path)
    rows = sdpo_rows(job)
    judged = {r["question"]: r["judgment"] for r in ROWS if "judgment" in r}
    assert len(rows) == 2
    for row in rows:
        question = row["prompt"][-1]["content"]
        match = [j for q, j in judged.items() if q in question]
        assert row["privileged_context"] == (match[0] if match else None)
    assert any(r["privileged_context"] for r in rows)
    # trl puts it to the teacher through the feedback template: the judge's words, verbatim.
    feedback = SDPOSettings().sdpo_feedback_template.format(feedback_raw=rows[0]["privileged_context"] or "x")
    assert (rows[0]["privileged_context"] or "x") in feedback


def _self_distillation_run(tmp_path, method: str, extra: list[str], steps: int = 2, **kw):
    from nlft.train.config import parse_train_config

    data, model_cfg, args, *settings = parse_train_config(
        [
            "--method", method, "--data", str(config(tmp_path)[0].data), "--model_name_or_path", "nlft:mini",
            "--output_dir", str(tmp_path / method), "--dtype", "float32", "--use_cpu", "true", "--report_to", "none",
            "--disable_tqdm", "true", "--max_length", "512", "--max_steps", str(steps),
            "--gradient_accumulation_steps", "1", "--per_device_train_batch_size", "1", "--logging_steps", "1",
            "--seed", "5", "--learning_rate", "1e-2", *extra,
        ]
    )  # fmt: skip
    own = next((s for s in settings if type(s).__name__.lower().startswith(method)), None)
    return train(data, model_cfg, args, method_settings=own, **kw), own


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter" / "adapter_model.safetensors"))


SMALL = {  # one question per step, short rollouts
    "dft": [],
    "sdft": ["--sdft_max_completion_length", "8"],
    "sdpo": ["--sdpo_num_generations", "2", "--sdpo_max_completion_length", "8"],
}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dft", "sdft", "sdpo"])
def test_the_2026_baselines_train_nlft_mini_and_record_their_costs(tmp_path, method):
    """A few steps on nlft:mini: the LoRA weights move, run.json is complete (with the tokens generated by the
    on-policy ones), and the teacher's rendered prompt holds the standard answer (sdft) or the judgment (sdpo)."""
    import torch
    from transformers import TrainerCallback

    seen: list[str] = []

    class Teacher(TrainerCallback):
        def on_self_distillation_batch_prepared(self, *, teacher_input_ids=None, processing_class=None, **_):
            seen.extend(processing_class.batch_decode(teacher_input_ids, skip_special_tokens=False))

    _self_distillation_run(tmp_path, method, SMALL[method], callbacks=[Teacher()])
    info = json.loads((tmp_path / method / "run.json").read_text())
    assert info["finished"] and info["global_step"] == 2 and info["method"] == method
    assert info["peak_memory_mb"] > 0 and info["train_seconds"] > 0 and info["records"] == len(ROWS)
    assert (tmp_path / method / "config.yaml").is_file() and (tmp_path / method / "adapter").is_dir()
    weights = _adapter(tmp_path / method)
    assert any(
        torch.count_nonzero(v) for k, v in weights.items() if "lora_B" in k
    )  # B starts at zero: it moved
    if method == "dft":
        assert "tokens_generated" not in info and not seen
        return
    rollouts = 2 * (2 if method == "sdpo" else 1)  # steps x rollouts per question, each at most 8 tokens
    assert 0 < info["tokens_generated"] <= rollouts * 8
    if method == "sdft":
        golds = {r["reference"] for r in ROWS}
        assert seen and all(any(g in t for g in golds) for t in seen)
    else:
        judgments = {r["judgment"] for r in ROWS if "judgment" in r}
        assert seen and any(any(j in t for j in judgments) for t in seen)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dft", "sdft", "sdpo"])
def test_a_resumed_run_of_a_2026_baseline_ends_where_an_uninterrupted_one_ends(tmp_path, method):
    """Stopped after its step-2 checkpoint (the same 4-step schedule) and resumed: the LoRA weights are the straight
    run's. Two questions, one per step: the resumed run's second epoch must see them in the straight run's order."""
    import torch
    from transformers import TrainerCallback

    class StopAt2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 2

    small = SMALL[method]
    _self_distillation_run(tmp_path / "whole", method, small, steps=4)
    part = tmp_path / "part"
    _self_distillation_run(part, method, [*small, "--save_steps", "2"], steps=4, callbacks=[StopAt2()])
    _self_distillation_run(part, method, [*small, "--resume_from_checkpoint", "last"], steps=4)
    a, b = _adapter(tmp_path / "whole" / method), _adapter(part / method)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_self_distillation_settings_are_checked():
    from nlft.train.methods import SDFTSettings, SDPOSettings

    with pytest.raises(ValueError, match="at least 2"):
        SDPOSettings(sdpo_num_generations=1)
    with pytest.raises(ValueError, match="feedback_raw"):
        SDPOSettings(sdpo_feedback_template="no place for it")
    with pytest.raises(ValueError, match="base, live or ema"):
        SDFTSettings(sdft_teacher="other")
