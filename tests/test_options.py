"""Command-line flags generated from options dataclasses (nlft.options), and every command's flags read back into
its dataclass with the dataclass's own defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from nlft.cli import build_parser
from nlft.options import POSITIVE, add_options, from_args, opt, values


@dataclass(kw_only=True)
class Toy:
    path: str = opt(positional=True, help="the input")
    size: int = opt(3, type=POSITIVE, help="how many")
    mode: str = opt("fast", choices=("fast", "slow"), group="speed", help="how")
    names: list[str] = opt(default_factory=lambda: ["a"], help="several")
    seeds: tuple[int, ...] | None = opt(None, help="several numbers")
    loud: bool = opt(False, help="say more")
    progress: bool = opt(True, negate="no_progress", help="no bar")
    ratio: float | None = opt(None, flag="share", help="a float under another name")
    internal: int = 7  # no help: not a flag


def parse(argv, **kwargs):
    p = argparse.ArgumentParser()
    add_options(p, Toy, **kwargs)
    return p, p.parse_args(argv)


def test_every_option_field_becomes_a_flag_with_its_default_type_and_choices():
    p, args = parse(["in.txt"])
    assert from_args(Toy, args) == Toy(path="in.txt")
    _, args = parse(["x", "--size", "5", "--mode", "slow", "--names", "b", "c", "--seeds", "1", "2", "--loud",
                     "--no-progress", "--share", "0.5"])  # fmt: skip
    assert from_args(Toy, args) == Toy(
        path="x", size=5, mode="slow", names=["b", "c"], seeds=(1, 2), loud=True, progress=False, ratio=0.5
    )
    text = p.format_help()
    assert "--internal" not in text and "speed:" in text and "--share SHARE" in text and "how many" in text


@pytest.mark.parametrize(("argv", "message"), [
    (["x", "--size", "0"], "argument --size: must be at least 1, not 0"),
    (["x", "--mode", "medium"], "invalid choice: 'medium'"),
    (["x", "--share", "half"], "invalid float value: 'half'"),
])  # fmt: skip
def test_a_bad_value_is_refused_by_argparse_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse(argv)
    assert message in capsys.readouterr().err


def test_scope_and_prefix_keep_two_copies_apart_and_unset_returns_only_what_was_given():
    p = argparse.ArgumentParser()
    add_options(p, Toy, skip=("path",))
    add_options(p, Toy, scope="judge.", prefix="judge_", skip=("path",), unset=True)
    args = p.parse_args(["--size", "4", "--judge-size", "9"])
    assert values(Toy, args, skip=("path",))["size"] == 4
    assert values(Toy, args, scope="judge.", skip=("path",), unset=True) == {"size": 9}
    assert "(default: 3)" in p.format_help()  # unset flags still show the field's default


def _parsed(argv):
    return build_parser().parse_args(argv)


def test_each_command_reads_its_flags_back_into_its_dataclass_with_the_dataclass_defaults():
    from nlft.data.judging import JudgeFiles, JudgeOptions
    from nlft.data.pipeline import MakeOptions
    from nlft.data.sampling import SampleOptions
    from nlft.demo import DemoOptions
    from nlft.evals.evaluation import EvalOptions, EvalSettings
    from nlft.experiment import ExperimentOptions
    from nlft.models.generation import BackendOptions

    args = _parsed(["sample", "mini-math", "--out", "s.jsonl"])
    assert from_args(SampleOptions, args) == SampleOptions(questions="mini-math", out="s.jsonl")
    assert from_args(BackendOptions, args) == BackendOptions()

    args = _parsed(["judge", "s.jsonl", "--out", "j.jsonl", "--backend", "openai", "--model", "m"])
    assert values(JudgeFiles, args) == {"source": "s.jsonl", "out": "j.jsonl", "templates": "math",
                                        "skip_invalid": False, "progress": True}  # fmt: skip
    assert from_args(JudgeOptions, args) == JudgeOptions(backend="openai")
    assert from_args(BackendOptions, args, scope="model.", skip=("backend",)).model == "m"

    args = _parsed(["data", "make", "mini-math", "--out", "d", "--size", "6", "--judge-model", "jm",
                    "--judge", "hf", "--judge-batch-size", "3"])  # fmt: skip
    assert from_args(MakeOptions, args) == MakeOptions(questions="mini-math", out="d", size=6)
    assert values(JudgeOptions, args, scope="judge.", skip=("rule",))["backend"] == "hf"
    judge_model = from_args(BackendOptions, args, scope="judge_model.", skip=("backend",))
    assert judge_model.model == "jm" and judge_model.batch_size == 3

    args = _parsed(["eval", "m", "--temperature", "0.6", "--seeds", "1", "2", "--quiet"])
    settings = from_args(EvalSettings, args)
    assert settings == EvalSettings(temperature=0.6, seeds=(1, 2))
    options = from_args(EvalOptions, args, backend=BackendOptions(), settings=settings)
    assert options == EvalOptions("m", settings=settings, progress=False)

    assert from_args(DemoOptions, _parsed(["demo"])) == DemoOptions()

    args = _parsed(["experiment", "--out", "e", "--method-lr", "sft=2e-4", "--train-args", "--lora_r", "3"])
    given = values(ExperimentOptions, args, unset=True)
    assert given == {"out": "e", "learning_rates": [("sft", 2e-4)], "train_args": ["--lora_r", "3"]}
    assert ExperimentOptions(**given).learning_rates == {"sft": 2e-4}
