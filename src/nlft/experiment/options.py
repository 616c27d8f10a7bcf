"""The experiment's settings (``ExperimentOptions``, from flags or a YAML ``--config``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from ..data.judging import JUDGE_BACKENDS
from ..models.loading import DTYPES
from ..options import POSITIVE, RATE, TEMPERATURE, opt
from ..train.methods import METHODS


def method_rate(text: str) -> tuple[str, float]:
    """An argparse type: ``METHOD=RATE``."""
    method, _, value = text.partition("=")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write METHOD=RATE, e.g. sft=2e-4") from None
    return method, rate


@dataclass
class ExperimentOptions:
    """The grid and its budgets; the defaults fit ``nlft:mini`` on a 2-core CPU."""

    out: str = opt(help="experiment folder (resumed when it holds this experiment)")
    model: str = opt("nlft:mini", help="the model every method starts from")
    task: str = opt("mini-math", help="a task name: mini-math, gsm8k")
    judge: str = opt(
        "arithmetic",
        choices=JUDGE_BACKENDS,
        help="the judge of wrong answers: the offline arithmetic checker, or a model (--judge-model)",
    )
    judge_model: str | None = opt(None, help="openai: the model name (e.g. gpt-4o); hf: a hub id or folder")
    judge_base_url: str | None = opt(
        None,
        help="openai: the server, e.g. http://localhost:8000/v1 (default: api.openai.com; key from $OPENAI_API_KEY)",
    )
    pool_questions: int = opt(
        400,
        type=POSITIVE,
        help="train questions the model answers; the subsets come from these (a pool too small for the sizes may "
        "grow: rerun with more, before any subset is built)",
    )
    pool_samples: int = opt(
        1,
        type=POSITIVE,
        help="answers per pool question (ids -s0, -s1, ...): more where greedy answers give too few correct ones; "
        "may grow like --pool-questions",
    )
    pool_temperature: float = opt(
        0.0,
        type=TEMPERATURE,
        help="sampling temperature of the pool's answers (0: greedy; more than one sample needs > 0)",
    )
    sizes: list[int] = opt(
        type=POSITIVE, default_factory=lambda: [25, 50, 100], help="records per training set"
    )
    ratio: str = opt("2:1", help="correct:wrong of every subset (2:1 = the paper's 1:2 wrong:correct)")
    methods: list[str] = opt(
        choices=list(METHODS),
        default_factory=lambda: ["nlft", "sft", "rft", "sft-gold", "grpo"],
        help="the training methods",
    )
    seeds: list[int] = opt(default_factory=lambda: [0, 1], help="one run per method, size and seed")
    epochs: int = opt(3, type=POSITIVE, help="epochs of every run, each evaluated")
    learning_rate: float = opt(1e-3, type=RATE, help="for every method (tune them alike with --method-lr)")
    learning_rates: dict[str, float] = opt(
        default_factory=dict,
        flag="method_lr",
        type=method_rate,
        nargs="*",
        metavar="METHOD=RATE",
        help="per-method learning rates, e.g. sft=2e-4",
    )
    tune_rates: list[float] = opt(
        type=RATE,
        default_factory=list,
        metavar="RATE",
        help="choose each method's learning rate from these (e.g. 2e-4 6e-4 2e-3): every method trains once per "
        "rate on --tune-size records with seed --tune-seed, and the rate best on --tune-questions held-out train "
        "questions (never test ones) is its rate in the grid; kept in OUT/tuning/rates.json. A method given "
        "--method-lr is not tuned",
    )
    tune_size: int = opt(
        25, type=POSITIVE, help="records of the tuning runs (a nested subset like the grid's)"
    )
    tune_seed: int = opt(0, help="seed of the tuning runs")
    tune_questions: int = opt(
        200,
        type=POSITIVE,
        help="held-out questions the tuning runs are scored on: the last ones of the task's train split, which "
        "the pool never reaches",
    )
    # The rates --tune-rates chose (filled in by the run, kept in results.json), never set by hand.
    tuned_rates: dict[str, float] = opt(default_factory=dict, cli=False, help="rates chosen by tuning")
    test_questions: int = opt(200, type=POSITIVE, help="test questions every run is evaluated on")
    eval_epochs: str = opt(
        "all",
        choices=("all", "last"),
        help="evaluate every epoch's adapter, or only the last one (at 2 epochs, half the evaluations)",
    )
    batch_size: int = opt(4, type=POSITIVE, help="records per step, every method")
    generation_batch: int = opt(100, type=POSITIVE, help="sampling and evaluation batch")
    # New tokens of the pool's samples, the evaluations and GRPO's completions alike: 160 fits mini-math; GSM8K
    # chains of thought of an instruct model need the paper protocol's 512.
    max_new_tokens: int = opt(
        160,
        type=POSITIVE,
        help="of the pool's samples, the evaluations and GRPO's completions; 512 for GSM8K",
    )
    train_args: list[str] = opt(
        default_factory=list, nargs=argparse.REMAINDER, help="the rest goes to every `nlft train` alike"
    )
    dtype: str = opt("float32", choices=DTYPES, help="weights' dtype in every run")
    device: str | None = opt(None, help="cpu, cuda, ... (default: cpu)")
    dry_run: bool = opt(False, help="print the plan and the cost, run nothing")
    progress: bool = opt(True, negate="no_progress", help="no progress bars")

    def __post_init__(self) -> None:
        from ..data.builder import parse_ratio

        if isinstance(self.learning_rates, list):  # (method, rate) pairs, as --method-lr gives them
            self.learning_rates = dict(self.learning_rates)
        self._check_types()
        parse_ratio(self.ratio)
        if self.judge not in JUDGE_BACKENDS:
            raise ValueError(f"--judge must be one of {', '.join(JUDGE_BACKENDS)}, not {self.judge!r}")
        if self.judge != "arithmetic" and not self.judge_model:
            raise ValueError(
                f"--judge {self.judge} needs --judge-model (the model that writes the judgments)"
            )
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"--methods: unknown {', '.join(unknown)} (choose from {', '.join(METHODS)})")
        for name in (
            "pool_questions",
            "epochs",
            "test_questions",
            "batch_size",
            "generation_batch",
            "max_new_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}"
                )
        if self.pool_samples > 1 and self.pool_temperature <= 0:
            raise ValueError(
                f"--pool-samples {self.pool_samples} needs --pool-temperature above 0 (greedy answers would repeat)"
            )
        if self.tune_rates and (
            len(set(self.tune_rates)) != len(self.tune_rates) or len(self.tune_rates) < 2
        ):
            raise ValueError(f"--tune-rates must be at least 2 distinct rates, got {self.tune_rates}")
        if self.eval_epochs not in ("all", "last"):
            raise ValueError(f"--eval-epochs must be all or last, got {self.eval_epochs!r}")
        if not self.sizes or any(s < 3 for s in self.sizes):
            raise ValueError(f"--sizes must be record counts of at least 3, got {self.sizes}")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError(f"--seeds must be distinct and at least one, got {self.seeds}")
        self.sizes = sorted(set(self.sizes))

    # What makes a cell the cell it is: set by the experiment, never by --train-args.
    CELL_FLAGS = (
        "--method", "--data", "--output_dir", "--seed", "--learning_rate", "--num_train_epochs", "--max_steps",
        "--model_name_or_path", "--task", "--per_device_train_batch_size", "--gradient_accumulation_steps",
        "--resume_from_checkpoint",
    )  # fmt: skip

    def _check_types(self) -> None:
        """Types a YAML --config can get wrong (sizes: "six"), each named, before anything runs."""

        def whole(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        for name, ok, what in (
            ("sizes", lambda v: isinstance(v, list) and all(whole(x) for x in v), "a list of whole numbers"),
            ("seeds", lambda v: isinstance(v, list) and all(whole(x) for x in v), "a list of whole numbers"),
            ("methods", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of names"),
            ("train_args", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
            ("learning_rate", number, "a number"),
            ("tune_rates", lambda v: isinstance(v, list) and all(number(x) and x > 0 for x in v), "a list of rates"),
            ("tune_size", lambda v: whole(v) and v >= 3, "a whole number of at least 3"),
            ("tune_seed", whole, "a whole number"),
            ("tune_questions", lambda v: whole(v) and v >= 1, "a whole number of at least 1"),
            ("learning_rates", lambda v: isinstance(v, dict) and all(isinstance(k, str) and number(r) and r > 0
                                                                       for k, r in v.items()), "METHOD: RATE pairs"),
            ("ratio", lambda v: isinstance(v, str), "text such as 2:1"),
            ("model", lambda v: isinstance(v, str), "a model name or folder"),
            ("task", lambda v: isinstance(v, str), "a task name"),
        ):  # fmt: skip
            value = getattr(self, name, None)
            if not ok(value):
                raise ValueError(f"{name}: must be {what}, got {value!r}")
        for arg in self.train_args:
            flag = arg.split("=", 1)[0]
            if flag in self.CELL_FLAGS:
                raise ValueError(
                    f"--train-args {arg}: the experiment sets {flag} for each cell (method, size, seed, rate, "
                    "epochs); change it with the experiment's own option instead"
                )

    def rate(self, method: str) -> float:
        """The method's rate: given (--method-lr), chosen by tuning (--tune-rates), or --learning-rate."""
        if method in self.learning_rates:
            return self.learning_rates[method]
        return self.tuned_rates.get(method, self.learning_rate)

    def tuned(self) -> list[str]:
        """The methods whose rate tuning chooses."""
        return [m for m in self.methods if self.tune_rates and m not in self.learning_rates]

    def data_sizes(self) -> list[int]:
        """Every subset size the experiment trains on: the grid's and the tuning runs'."""
        return sorted(set(self.sizes) | ({self.tune_size} if self.tuned() else set()))


def read_experiment_config(path: str) -> dict[str, Any]:
    """The ``ExperimentOptions`` fields of a YAML file (``nlft experiment --config``); unknown keys are an error
    naming the file."""
    import dataclasses

    from ..files import read_yaml

    data = read_yaml(path, "experiment config")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of experiment settings, e.g. 'sizes: [25, 50]'")
    known = {f.name for f in dataclasses.fields(ExperimentOptions)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ValueError(
            f"{path}: unknown setting(s) {', '.join(unknown)} (settings: {', '.join(sorted(known))})"
        )
    if "train_args" in data and not (
        isinstance(data["train_args"], list)
        and all(isinstance(a, (str, int, float)) for a in data["train_args"])
    ):
        raise ValueError(f"{path}: train_args must be a list of `nlft train` flags and values")
    if "train_args" in data:
        data["train_args"] = [str(a) for a in data["train_args"]]
    return data
