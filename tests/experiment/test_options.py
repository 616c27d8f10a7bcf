"""The experiment's settings: a config file and flags, the shipped configs, types named, cells' flags refused."""

import pytest

from nlft.experiment import ExperimentOptions


def test_a_config_file_sets_the_experiment_and_flags_win_over_it(tmp_path, capsys):
    from nlft.cli import main

    config = tmp_path / "exp.yaml"
    config.write_text(
        f"out: {tmp_path / 'exp'}\nsizes: [3, 6]\nmethods: [nlft, grpo]\nseeds: [0, 1, 2]\nepochs: 4\n"
        "train_args: [--grpo_num_generations, 4]\n"
    )
    with pytest.raises(SystemExit) as done:
        main(["experiment", "--config", str(config), "--seeds", "7", "--dry-run"])
    assert done.value.code == 0
    plan = capsys.readouterr().out
    assert "2 methods (nlft, grpo) x 2 sizes (3, 6) x 1 seeds = 4 training runs of 4 epochs" in plan
    assert not (tmp_path / "exp").exists()  # a dry run writes nothing

    config.write_text("sizes: [3]\nsize: 4\n")
    with pytest.raises(SystemExit) as done:
        main(["experiment", "--config", str(config), "--out", str(tmp_path / "x"), "--dry-run"])
    assert done.value.code == 2
    assert "exp.yaml: unknown setting(s) size " in capsys.readouterr().err


def _dry_run_plan(config_name: str, tmp_path, capsys) -> str:
    from pathlib import Path

    from nlft.cli import main

    config = Path(__file__).parents[2] / "configs" / config_name
    with pytest.raises(SystemExit) as done:
        main(["experiment", "--config", str(config), "--out", str(tmp_path / "exp"), "--dry-run"])
    assert done.value.code == 0
    assert not (tmp_path / "exp").exists()
    return capsys.readouterr().out


def test_the_shipped_gpu_config_plans_the_papers_grid_at_the_paper_protocols_length(tmp_path, capsys):
    plan = _dry_run_plan("experiment-gsm8k-llama3-8b.yaml", tmp_path, capsys)
    assert "5 methods (nlft, sft, rft, sft-gold, grpo) x 5 sizes (25, 50, 100, 200, 400) x 3 seeds" in plan
    assert "up to 512 new tokens per sample, test answer and GRPO completion" in plan


def test_the_shipped_smollm2_config_plans_the_whole_grid_with_rates_tuned_first(tmp_path, capsys):
    plan = _dry_run_plan("experiment-smollm2.yaml", tmp_path, capsys)
    assert (
        "8 methods (nlft, sft, rft, sft-gold, dft, sdft, sdpo, grpo) x 3 sizes (25, 50, 100) x 3 seeds"
        in plan
    )
    assert "500 train questions answered 4 times each at temperature 0.7" in plan
    assert "72 runs x 1 evaluated epoch + the base model, 500 questions each" in plan
    assert "at rates 0.0002, 0.0006, 0.002: 24 runs on 25 records (seed 0)" in plan
    assert "200 held-out train questions" in plan


def _cli(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    from nlft.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code, err.getvalue()


@pytest.mark.parametrize(
    "yaml_text, field",
    [('sizes: "six"\n', "sizes"), ("seeds: [0, one]\n", "seeds"), ("learning_rate: fast\n", "learning_rate"),
     ("methods: nlft\n", "methods")],
)  # fmt: skip
def test_an_experiment_config_of_the_wrong_type_is_named_not_a_traceback(tmp_path, yaml_text, field):
    """Audit N-18: `sizes: "six"` ended in a TypeError."""
    config = tmp_path / "type.yaml"
    config.write_text(yaml_text)
    code, err = _cli("experiment", "--config", str(config), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 2 and f"{field}: must be" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flag", ["--method", "--learning_rate", "--seed", "--data", "--output_dir", "--num_train_epochs"]
)
def test_train_args_cannot_change_what_a_cell_is(tmp_path, flag):
    """Audit N-19 and N-36: `train_args: [--method, sft, ...]` trained sft under the name nlft; on the command
    line `--train-args --method sft` was an ambiguous abbreviation of --methods."""
    config = tmp_path / "ta.yaml"
    config.write_text(f'train_args: ["{flag}", "x"]\n')
    code, err = _cli("experiment", "--config", str(config), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 2 and f"the experiment sets {flag}" in err
    code, err = _cli("experiment", "--out", str(tmp_path / "o"), "--dry-run", "--train-args", f"{flag}=x")
    assert code == 2 and f"the experiment sets {flag}" in err and "ambiguous" not in err
    with pytest.raises(ValueError, match="the experiment sets"):
        ExperimentOptions(out=str(tmp_path / "o"), train_args=[flag, "x"])
    assert ExperimentOptions(out=str(tmp_path / "o"), train_args=["--lora_r", "8"]).train_args == [
        "--lora_r",
        "8",
    ]
