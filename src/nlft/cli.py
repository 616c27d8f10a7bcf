"""The ``nlft`` command line. Each command's implementation is imported only when it runs, so ``--help`` is quick."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .console import setup_logging
from .data.judging import JUDGE_BACKENDS
from .data.sources import IMPORT_SOURCES
from .evals.protocols import FEWSHOT_SAMPLERS, PROTOCOLS
from .models.generation import BACKENDS
from .models.loading import DTYPES
from .tasks.answers import RULES

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
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _number(kind, low=None, high=None, *, low_open=False, what=""):
    """An argparse type: a ``kind`` (int or float) within [low, high] (``low_open``: above low), finite."""
    import math

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a {'whole ' if kind is int else ''}number: {text!r}"
            ) from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
        if (
            low is not None
            and (value <= low if low_open else value < low)
            or high is not None
            and value > high
        ):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
        return value

    convert.__name__ = "whole number" if kind is int else "number"
    return convert


POSITIVE = _number(int, 1, what="at least 1")
NON_NEGATIVE = _number(int, 0, what="0 or more")
SECONDS = _number(float, 0.0, low_open=True, what="more than 0 seconds")
TEMPERATURE = _number(float, 0.0, what="0 or more")
TOP_P = _number(float, 0.0, 1.0, low_open=True, what="in (0, 1]")
PORT = _number(int, 0, 65535, what="a port number from 0 to 65535")


def _add(sub, name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help_text, description=description or help_text, formatter_class=_Formatter
    )


# ----------------------------------------------------------------------------------------------------------------
# nlft data ...
# ----------------------------------------------------------------------------------------------------------------


def _data_build(args: argparse.Namespace) -> int:
    from .data.builder import build_dataset

    result = build_dataset(
        args.pool,
        args.out,
        size=args.size,
        ratio=args.ratio,
        seed=args.seed,
        templates=args.templates,
        skip_invalid=args.skip_invalid,
    )
    print(result.summary())
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from .records import load_records

    records = load_records(args.file, skip_invalid=args.skip_invalid, split=args.split)
    if not records and not records.skipped:
        raise ValueError(f"{args.file}: holds no records")
    n_wrong = sum(not r.is_correct for r in records)
    unjudged = sum(not r.is_correct and r.judgment is None for r in records)
    print(
        f"{args.file}: {len(records)} valid records ({len(records) - n_wrong} correct, {n_wrong} wrong",
        end="",
    )
    print(f", {unjudged} of them without a judgment)" if unjudged else ")")
    if records.skipped:
        print(f"{len(records.skipped)} invalid lines skipped:")
        for problem in records.skipped:
            print(f"  {problem}")
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from .data.sources import from_mathcritique, from_mathdial, gold_records
    from .files import check_output_file
    from .jsonl import atomic_write_jsonl

    check_output_file(args.out, inputs=(args.path,))
    if args.source in ("mathcritique", "mathdial") and not args.path:
        raise ValueError(f"data import {args.source}: name the input file")
    if args.source == "mathcritique":
        records = list(from_mathcritique(args.path))
    elif args.source == "mathdial":
        records = list(from_mathdial(args.path))
    else:  # gsm8k-gold, or gold of any task (gsm8k, mini-math, a GSM8K-style folder)
        records = list(gold_records(args.path or "gsm8k", args.split, limit=args.limit))
    if args.limit is not None:
        records = records[: args.limit]
    n = atomic_write_jsonl(args.out, (r.to_dict() for r in records))
    print(f"wrote {n} records to {args.out}")
    return 0


def _data_make(args: argparse.Namespace) -> int:
    from .data.judging import JudgeOptions
    from .data.pipeline import make_dataset
    from .data.sampling import load_question_set
    from .tasks import grader_for

    questions = load_question_set(args.questions, split=args.split, limit=args.limit)
    judge = JudgeOptions(
        backend=args.judge,
        model=_model_options(args, args.judge, prefix="judge_") if args.judge != "arithmetic" else None,
        prompt=args.judge_prompt,
        max_new_tokens=args.judge_max_new_tokens,
        rule=args.rule or "authors",  # the arithmetic judge reads numbers: the GSM8K rules
    )
    result = make_dataset(
        questions,
        args.out,
        sampler=_model_options(args, args.backend),
        settings=_sampling_settings(args),
        judge=judge,
        size=args.size,
        ratio=args.ratio,
        seed=args.build_seed,
        samples=args.samples,
        templates=args.templates,
        system=args.system,
        task=grader_for(args.questions),
        rule=args.rule,
        progress=_progress_enabled(args),
    )
    print(result.summary())
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
    p.add_argument("pool", help="graded records: .jsonl, .json, a saved HF dataset folder or a hub id")
    p.add_argument("--size", type=POSITIVE, required=True, help="number of records to select")
    p.add_argument(
        "--ratio",
        default="natural",
        help="correct:wrong, e.g. 1:2; or 'correct', 'wrong', 'natural' (the pool's mix)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="data", help="output folder")
    p.add_argument(
        "--templates",
        default="math",
        help="prompt template set for the SFT prompts: math, generic or a YAML file",
    )
    p.add_argument(
        "--skip-invalid", action="store_true", help="skip and count invalid pool lines instead of stopping"
    )
    p.set_defaults(func=_data_build)

    p = _add(dsub, "validate", "check a records file and report every problem with its line and field")
    p.add_argument("file", help="records: .jsonl, .json, a saved HF dataset folder or a hub id")
    p.add_argument("--split", default=None, help="split, for Hugging Face datasets")
    p.add_argument("--skip-invalid", action="store_true", help="list invalid lines instead of failing")
    p.set_defaults(func=_data_validate)

    p = _add(
        dsub,
        "import",
        "turn public critique data into a records pool",
        "Convert public data into NLFT records: MathCritique (wrong answers + GPT-4 critiques), MathDial\n"
        "(wrong answers + teacher notes), or the gold solutions of a task's split as correct responses\n"
        "(gold mini-math, gold gsm8k; gsm8k-gold is gold for GSM8K).",
    )
    p.add_argument("source", choices=IMPORT_SOURCES)
    p.add_argument(
        "path",
        nargs="?",
        default=None,
        help="input file; for gold, a task (gsm8k, mini-math) or GSM8K-style folder (gsm8k-gold: a GSM8K folder; "
        "omit for the hub)",
    )
    p.add_argument("--split", default="train", help="the task's split, for gold and gsm8k-gold")
    p.add_argument("--limit", type=POSITIVE, default=None)
    p.add_argument("--out", required=True, help="output .jsonl")
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
    _add_questions_args(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=POSITIVE, required=True, help="records in the dataset")
    p.add_argument(
        "--ratio", default="natural", help="correct:wrong, e.g. 1:1; or 'correct', 'wrong', 'natural'"
    )
    p.add_argument("--build-seed", type=int, default=42, help="seed of the record selection")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_sampling_args(p)
    _add_model_args(p)
    _add_judge_args(p, "--judge")
    _add_model_args(p, prefix="judge-", what="judge model")
    p.set_defaults(func=_data_make)


# ----------------------------------------------------------------------------------------------------------------
# Options shared by nlft sample, nlft judge and nlft data make
# ----------------------------------------------------------------------------------------------------------------


def _add_questions_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "questions",
        help="questions with gold answers: a GSM8K folder holding <split>.jsonl, 'gsm8k' for the hub dataset, "
        "or a .jsonl/.json/Hugging Face dataset with 'question' and 'answer' (or 'reference')",
    )
    p.add_argument("--split", default="train", help="GSM8K (or dataset) split")
    p.add_argument("--limit", type=POSITIVE, default=None, help="use only the first N questions")


def _add_model_args(
    p: argparse.ArgumentParser, prefix: str = "", what: str = "model", *, model_flags: bool = True
) -> argparse._ArgumentGroup:
    """Back-end options (``generation.BackendOptions``); ``prefix`` ("judge-") names the judge's copy in nlft data
    make. ``model_flags=False`` leaves out --model/--adapter for a command that takes them otherwise."""
    g = p.add_argument_group(f"{what} back-end" + (f" (--{prefix}...)" if prefix else ""))
    if model_flags:
        g.add_argument(
            f"--{prefix}model",
            default=None,
            help="hf: a hub id, model folder, adapter or run folder; openai: the served model name",
        )
        g.add_argument(f"--{prefix}adapter", default=None, help="hf: a LoRA adapter folder on top of --model")
    g.add_argument(
        f"--{prefix}base-url",
        default=None,
        help="openai: the server, e.g. http://localhost:8000/v1 for vLLM or SGLang; unset: the OpenAI API",
    )
    g.add_argument(
        f"--{prefix}api-key-env",
        default="OPENAI_API_KEY",
        help="openai: environment variable holding the API key (never logged or stored)",
    )
    g.add_argument(f"--{prefix}concurrency", type=POSITIVE, default=8, help="openai: requests in flight")
    g.add_argument(
        f"--{prefix}timeout",
        type=SECONDS,
        default=120.0,
        help="openai: seconds one request may take, streamed or not (connecting included)",
    )
    g.add_argument(
        f"--{prefix}max-retries",
        type=NON_NEGATIVE,
        default=5,
        help="openai: retries of a failed request (429, 5xx, timeouts, malformed replies), with exponential backoff and jitter",
    )
    g.add_argument(f"--{prefix}stream", action="store_true", help="openai: stream replies")
    g.add_argument(
        f"--{prefix}extra-body",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="openai: server-specific request fields, e.g. '{\"do_sample\": true}' for transformers serve",
    )
    g.add_argument(f"--{prefix}batch-size", type=POSITIVE, default=8, help="hf: prompts per generation batch")
    g.add_argument(f"--{prefix}dtype", default="auto", choices=DTYPES, help="hf: weight dtype")
    g.add_argument(f"--{prefix}device", default=None, help="hf: cuda, mps or cpu; unset: the best available")
    g.add_argument(
        f"--{prefix}chat-template",
        default=None,
        help="hf: a chat template (built-in 'llama3' or a Jinja file) instead of the tokenizer's (needed where it has none)",
    )
    g.add_argument(
        f"--{prefix}trust-remote-code",
        action="store_true",
        help="hf: allow the model's own Python code (off by default)",
    )
    return g


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"do_sample\": true}'")
    return value


def _model_options(
    args: argparse.Namespace,
    backend: str,
    prefix: str = "",
    *,
    model: str | None = None,
    adapter: str | None = None,
):
    from .models.generation import BackendOptions

    get = lambda name: getattr(args, prefix + name)  # noqa: E731
    return BackendOptions(
        backend=backend,
        model=model if model is not None else (get("model") or ""),
        adapter=adapter if model is not None else get("adapter"),
        base_url=get("base_url"),
        api_key_env=get("api_key_env"),
        concurrency=get("concurrency"),
        timeout=get("timeout"),
        max_retries=get("max_retries"),
        stream=get("stream"),
        batch_size=get("batch_size"),
        dtype=get("dtype"),
        device=get("device"),
        chat_template=get("chat_template"),
        trust_remote_code=get("trust_remote_code"),
        extra_body=get("extra_body"),
    )


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--backend", default="hf", choices=BACKENDS, help="where the responses come from")
    g.add_argument(
        "--samples", type=POSITIVE, default=1, help="responses per question (ids <question id>-s0, -s1, ...)"
    )
    g.add_argument(
        "--temperature", type=TEMPERATURE, default=0.3, help="0 is greedy; the NLFT reference sampled at 0.3"
    )
    g.add_argument("--top-p", type=TOP_P, default=1.0)
    g.add_argument("--max-new-tokens", type=POSITIVE, default=512)
    g.add_argument("--seed", type=int, default=42, help="sampling seed (a rerun samples the same text)")
    g.add_argument(
        "--templates",
        default="math",
        help="template set whose X_base prompt is asked: math, generic or a YAML file",
    )
    g.add_argument(
        "--system", default=None, help="system prompt instead of the template set's (the math expert prompt)"
    )
    g.add_argument(
        "--rule",
        default=None,
        help=f"how the final answer is read for grading: one of the task's rules (numeric tasks: {', '.join(RULES)}; "
        "default authors)",
    )


def _add_judge_args(p: argparse.ArgumentParser, flag: str) -> None:
    g = p.add_argument_group("judging")
    g.add_argument(
        flag,
        default="arithmetic",
        choices=JUDGE_BACKENDS,
        help="arithmetic: the built-in offline checker; openai/hf: a model with the judge prompt",
    )
    g.add_argument(
        "--judge-prompt",
        default=None,
        help="judge prompt: built-in 'math' or a YAML file with system, user, correct_marker; unset: math",
    )
    g.add_argument(
        "--judge-max-new-tokens", type=POSITIVE, default=1024, help="openai/hf: length limit of a judgment"
    )


def _sampling_settings(args: argparse.Namespace):
    from .models.generation import SamplingSettings

    return SamplingSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not args.no_progress


# ----------------------------------------------------------------------------------------------------------------
# nlft sample
# ----------------------------------------------------------------------------------------------------------------


def _sample(args: argparse.Namespace) -> int:
    from .data.sampling import run_sample

    result = run_sample(
        args.questions,
        args.out,
        backend=_model_options(args, args.backend),
        settings=_sampling_settings(args),
        split=args.split,
        limit=args.limit,
        skip_invalid=args.skip_invalid,
        samples=args.samples,
        templates=args.templates,
        system=args.system,
        rule=args.rule,
        progress=_progress_enabled(args),
    )
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
    _add_questions_args(p)
    p.add_argument("--out", required=True, help="results file (.jsonl), appended to and resumed from")
    p.add_argument(
        "--skip-invalid", action="store_true", help="skip invalid question lines instead of stopping"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_sampling_args(p)
    _add_model_args(p)
    p.set_defaults(func=_sample)


# ----------------------------------------------------------------------------------------------------------------
# nlft judge
# ----------------------------------------------------------------------------------------------------------------


def _judge(args: argparse.Namespace) -> int:
    from .data.judging import JudgeOptions, run_judge

    options = JudgeOptions(
        backend=args.backend,
        model=_model_options(args, args.backend) if args.backend != "arithmetic" else None,
        prompt=args.judge_prompt,
        max_new_tokens=args.judge_max_new_tokens,
        rule=args.rule,
    )
    result = run_judge(
        args.records,
        args.out,
        options,
        templates=args.templates,
        skip_invalid=args.skip_invalid,
        progress=_progress_enabled(args),
    )
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
    p.add_argument("records", help="graded records: .jsonl, .json or a Hugging Face dataset")
    p.add_argument("--out", required=True, help="results file (.jsonl), appended to and resumed from")
    _add_judge_args(p, "--backend")
    p.add_argument(
        "--rule", default="authors", choices=RULES, help="arithmetic: how the final answer is read"
    )
    p.add_argument(
        "--templates",
        default="math",
        help="template set whose system prompt fills {system} in the judge prompt",
    )
    p.add_argument(
        "--skip-invalid", action="store_true", help="skip invalid record lines instead of stopping"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_args(p, what="judge model")
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
    from .distributed import end_process_group

    end_process_group()
    last = next((h for h in reversed(result.log_history) if "loss" in h), {})
    print(
        f"{result.method}: {result.global_step} steps on {result.records} records in {result.seconds:.0f}s"
        + (f", last logged loss {last['loss']:.4g}" if "loss" in last else "")
        + (f"; {result.skipped} records skipped" if result.skipped else "")
    )
    final = "adapter/" if (result.run_dir / "adapter").is_dir() else "model/"
    print(f"run folder: {result.run_dir} ({final}, epochs/, logs/, run.json, config.yaml)")
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
    return run_demo(
        DemoOptions(
            out=args.out,
            questions=args.questions,
            test_questions=args.test_questions,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            seed=args.seed,
            progress=not args.no_progress,
        )
    )


def _register_demo(sub) -> None:
    from .demo import DemoOptions

    d = DemoOptions()
    p = _add(
        sub,
        "demo",
        "the whole NLFT loop on the embedded nlft:mini model, on CPU (about 3 minutes)",
        "nlft:mini (a small Llama pretrained on the mini-math world, shipped in the package) answers train\n"
        "questions; the arithmetic judge judges its wrong answers; a 1:2 wrong:correct set is built; NLFT and\n"
        "the SFT baseline train on it (same records, LoRA, schedule); base, NLFT and SFT are evaluated on test\n"
        "questions; a table, the weighting statistics, where the blamed tokens fall, a saliency report and a\n"
        "comparison plot are written. Nothing is downloaded.",
    )
    p.add_argument(
        "--out", default=str(d.out), help="demo folder (pool/, data/, nlft/, sft/, comparison/, ...)"
    )
    p.add_argument(
        "--questions", type=POSITIVE, default=d.questions, help="train questions the model answers"
    )
    p.add_argument(
        "--test-questions", type=POSITIVE, default=d.test_questions, help="test questions to evaluate on"
    )
    p.add_argument("--epochs", type=POSITIVE, default=d.epochs)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)


# ----------------------------------------------------------------------------------------------------------------
# nlft experiment
# ----------------------------------------------------------------------------------------------------------------


def _experiment(args: argparse.Namespace) -> int:
    from .experiment import ExperimentOptions, read_experiment_config, run_experiment

    setup_logging()
    rates = {}
    for item in args.method_lr or []:
        method, _, value = item.partition("=")
        try:
            rates[method] = float(value)
        except ValueError:
            raise ValueError(f"--method-lr {item!r}: write METHOD=RATE, e.g. sft=2e-4") from None
    given = dict(
        out=args.out, model=args.model, task=args.task, judge=args.judge, judge_model=args.judge_model,
        judge_base_url=args.judge_base_url, pool_questions=args.pool_questions,
        sizes=args.sizes, ratio=args.ratio, methods=args.methods, seeds=args.seeds, epochs=args.epochs,
        learning_rate=args.learning_rate, learning_rates=rates or None, test_questions=args.test_questions,
        batch_size=args.batch_size, generation_batch=args.generation_batch, max_new_tokens=args.max_new_tokens,
        train_args=args.train_args,
        dtype=args.dtype, device=args.device, dry_run=args.dry_run or None, progress=False if args.no_progress else None,
    )  # fmt: skip
    # Flags left unset (None) take the config file's value, then the default; a flag given wins over the file.
    values = read_experiment_config(args.config) if args.config else {}
    values.update({k: v for k, v in given.items() if v is not None})
    if "out" not in values:
        raise ValueError("nlft experiment: give --out (or `out:` in the --config file)")
    values.setdefault("device", "cpu")
    return run_experiment(ExperimentOptions(**values))


def _register_experiment(sub) -> None:
    from .data.judging import JUDGE_BACKENDS
    from .experiment import ExperimentOptions
    from .models.loading import DTYPES
    from .train.methods import METHODS

    d = ExperimentOptions(out="")

    def default(value) -> str:
        return f"(default: {' '.join(map(str, value)) if isinstance(value, list) else value})"

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
    p.add_argument("--out", help="experiment folder (resumed when it holds this experiment)")
    p.add_argument("--model", help=default(d.model))
    p.add_argument("--task", help=f"a task name: mini-math, gsm8k {default(d.task)}")
    p.add_argument("--judge", choices=list(JUDGE_BACKENDS),
                   help=f"the judge of wrong answers: the offline arithmetic checker, or a model (--judge-model) "
                        f"{default(d.judge)}")  # fmt: skip
    p.add_argument("--judge-model", help="openai: the model name (e.g. gpt-4o); hf: a hub id or folder")
    p.add_argument(
        "--judge-base-url", help="openai: the server (default: api.openai.com; key from $OPENAI_API_KEY)"
    )
    p.add_argument("--pool-questions", type=POSITIVE, help=default(d.pool_questions))
    p.add_argument("--sizes", type=POSITIVE, nargs="+", help=default(d.sizes))
    p.add_argument(
        "--ratio",
        help=f"correct:wrong of every subset (2:1 = the paper's 1:2 wrong:correct) {default(d.ratio)}",
    )
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help=default(d.methods))
    p.add_argument("--seeds", type=int, nargs="+", help=default(d.seeds))
    p.add_argument("--epochs", type=POSITIVE, help=default(d.epochs))
    p.add_argument("--learning-rate", type=float, help=f"for every method {default(d.learning_rate)}")
    p.add_argument("--method-lr", nargs="*", metavar="METHOD=RATE", help="per-method learning rates")
    p.add_argument("--test-questions", type=POSITIVE, help=default(d.test_questions))
    p.add_argument(
        "--batch-size", type=POSITIVE, help=f"records per step, every method {default(d.batch_size)}"
    )
    p.add_argument(
        "--generation-batch",
        type=POSITIVE,
        help=f"sampling and evaluation batch {default(d.generation_batch)}",
    )
    p.add_argument("--max-new-tokens", type=POSITIVE,
                   help=f"of the pool's samples, the evaluations and GRPO's completions; 512 for GSM8K "
                        f"{default(d.max_new_tokens)}")  # fmt: skip
    p.add_argument("--dtype", choices=DTYPES, help=default(d.dtype))
    p.add_argument("--device", help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, help="the rest goes to every `nlft train` alike")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the cost, run nothing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_experiment)


# ----------------------------------------------------------------------------------------------------------------
# nlft eval / compare / merge
# ----------------------------------------------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    from .evals.evaluation import EvalOptions, EvalSettings, run_eval

    options = EvalOptions(
        model=args.model,
        backend=_model_options(args, args.backend, model=args.model, adapter=args.adapter),
        adapter=args.adapter,
        all_checkpoints=args.all_checkpoints,
        include_base=args.include_base,
        data=args.data,
        gsm8k_dir=args.gsm8k_dir,
        limit=args.limit,
        protocol=args.protocol,
        templates=args.templates,
        chat_template=args.chat_template,
        num_fewshot=args.num_fewshot,
        fewshot_data=args.fewshot_data,
        fewshot_sampler=args.fewshot_sampler,
        fewshot_seed=args.fewshot_seed,
        settings=EvalSettings(
            temperature=args.temperature,
            top_p=args.top_p,
            seeds=tuple(args.seeds) if args.seeds else None,
            max_new_tokens=args.max_new_tokens,
            limit=args.limit,
        ),
        out=args.out,
        tag=args.tag,
        overwrite=args.overwrite,
        progress=not args.quiet,
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
    p.add_argument(
        "model",
        help="hub id, model folder, LoRA adapter folder or run folder (with --backend openai: the served model's name)",
    )
    p.add_argument("--adapter", default=None, help="LoRA adapter folder to apply to MODEL")
    p.add_argument(
        "--all-checkpoints",
        action="store_true",
        help="evaluate every per-epoch checkpoint of a run folder (RUN/epochs/epoch-N)",
    )
    p.add_argument(
        "--include-base", action="store_true", help="also evaluate the run's base model, as epoch 0"
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default="gsm8k:test",
        help="gsm8k:<split>, another task's split (mini-math:test), nlft:sample (50 GSM8K test questions "
        "shipped with nlft), or a question file (.jsonl/.json/HF dataset) with gold answers",
    )
    g.add_argument(
        "--gsm8k-dir",
        default=None,
        help="local GSM8K folder with <split>.jsonl (default: the hub dataset openai/gsm8k)",
    )
    g.add_argument("--limit", type=POSITIVE, default=None, help="evaluate the first N questions only")
    g = p.add_argument_group("protocol")
    g.add_argument("--protocol", default="paper", choices=PROTOCOLS)
    g.add_argument(
        "--templates",
        default=None,
        help="paper: template set for the system prompt (default: the run's, else math)",
    )
    g.add_argument("--num-fewshot", type=NON_NEGATIVE, default=5, help="lm-eval: exemplars per prompt")
    g.add_argument(
        "--fewshot-data", default=None, help="lm-eval: where exemplars come from (default: gsm8k:train)"
    )
    g.add_argument(
        "--fewshot-sampler",
        default="lm-eval",
        choices=FEWSHOT_SAMPLERS,
        help="lm-eval: seeded draw per question as lm-eval does, or the first k",
    )
    g.add_argument(
        "--fewshot-seed",
        type=int,
        default=1234,
        help="lm-eval: seed of the exemplar draws (1234 is lm-eval's)",
    )
    g = p.add_argument_group("decoding")
    g.add_argument(
        "--temperature",
        type=TEMPERATURE,
        default=0.0,
        help="0 is greedy; the NLFT authors sampled once at 0.6",
    )
    g.add_argument("--top-p", type=TOP_P, default=1.0, help="nucleus sampling; 1.0 is off")
    g.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="with --temperature > 0: one sample per seed; the summary reports mean and sd",
    )
    g.add_argument(
        "--max-new-tokens", type=POSITIVE, default=None, help="default: 512 (paper) or 256 (lm-eval)"
    )
    g = _add_model_args(p, model_flags=False)
    g.add_argument(
        "--backend",
        default="hf",
        choices=BACKENDS,
        help="hf: transformers generate; openai: an OpenAI-compatible server",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--out",
        default=None,
        help="results folder (default: RUN/eval/... for a run folder, else evals/<model>/...)",
    )
    g.add_argument(
        "--tag", default=None, help="a name added to the results folder, to keep variants apart (e.g. t0.6)"
    )
    g.add_argument(
        "--overwrite", action="store_true", help="discard results already in the folder instead of resuming"
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_eval)


def _compare(args: argparse.Namespace) -> int:
    from .evals.compare import compare

    paths = compare(
        args.runs,
        args.out,
        protocol=args.protocol,
        data=args.data,
        rule=args.rule,
        tag=args.tag,
        labels=args.labels,
        title=args.title,
    )
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
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folders evaluated with `nlft eval RUN --all-checkpoints`"
    )
    p.add_argument("--protocol", default="paper", choices=PROTOCOLS)
    p.add_argument("--data", default="gsm8k:test", help="the --data the runs were evaluated on")
    p.add_argument("--tag", default=None, help="the --tag of the evaluations to compare")
    p.add_argument(
        "--rule",
        default="authors",
        help=f"grading rule to tabulate and plot, one of the evaluations' (numeric tasks: {', '.join(RULES)})",
    )
    p.add_argument(
        "--labels",
        nargs="+",
        default=None,
        help="legend labels, one per run (default: folder name and method)",
    )
    p.add_argument("--title", default=None, help="plot title")
    p.add_argument("--out", default="comparison", help="output folder")
    p.set_defaults(func=_compare)


def _merge(args: argparse.Namespace) -> int:
    from .train.merge import merge_adapter

    out = merge_adapter(
        args.model,
        args.out,
        adapter=args.adapter,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        overwrite=args.overwrite,
    )
    print(f"merged model and tokenizer written to {out}")
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
    p.add_argument("model", help="LoRA adapter folder, run folder, or base model (with --adapter)")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder to merge into MODEL")
    p.add_argument("--out", required=True, help="folder for the merged model")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="dtype to merge and save in")
    p.add_argument("--device", default="cpu", help="where to merge (cpu needs no GPU memory)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run model code from the hub (off: only trusted architectures)",
    )
    p.set_defaults(func=_merge)


# ----------------------------------------------------------------------------------------------------------------
# nlft saliency / nlft studio
# ----------------------------------------------------------------------------------------------------------------


def _saliency(args: argparse.Namespace) -> int:
    from .see.saliency import make_report

    setup_logging()
    report = make_report(
        args.out, model=args.model, snapshot=args.snapshot, step=args.step, **_scoring_options(args)
    )
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
    """The flags of scoring records with a model (nlft saliency, nlft locate): saliency.score_data's."""
    from .method.weighting import WeightingConfig

    p.add_argument(
        "--data", help="records (.jsonl/.json/HF dataset, or nlft:sample); default: the run's data"
    )
    p.add_argument("--split", default=None, help="split, for Hugging Face datasets")
    p.add_argument("--limit", type=POSITIVE, default=limit, help="records to score (the first ones)")
    p.add_argument(
        "--templates",
        default=None,
        help="prompt template set: math, generic or a YAML file (default: the run's, else math)",
    )
    p.add_argument(
        "--chat-template",
        default=None,
        help="chat template for tokenizers without one (llama3 or a Jinja file)",
    )
    p.add_argument(
        "--eos-token", default=None, help="token that ends a response (default: the tokenizer's EOS)"
    )
    p.add_argument(
        "--max-length",
        type=_number(int, 2, what="at least 2"),
        default=None,
        help="longest sequence; prompts are cut from the left (default: the run's, else 2048)",
    )
    p.add_argument(
        "--reference-probs",
        choices=["live", "initial"],
        default=None,
        help="score X_std/X_judge with the adapter on (live) or off (initial: the frozen base model); "
        "default: as the run trained (its cached probabilities are the frozen base model's), else live",
    )
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--batch-size", type=POSITIVE, default=4, help="records scored at once")
    w = p.add_argument_group(
        "weighting",
        "Start from the run's settings (or the reference defaults), then --weighting, then these flags.",
    )
    w.add_argument(
        "--weighting", default=None, help="YAML of weighting fields (e.g. the one nlft studio writes)"
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

    return dict(
        data=args.data,
        split=args.split,
        limit=args.limit,
        templates=args.templates,
        chat_template=args.chat_template,
        eos_token=args.eos_token,
        max_length=args.max_length,
        reference_probs=args.reference_probs,
        weighting=args.weighting,
        overrides={name: getattr(args, name, None) for name in WeightingConfig.names()},
        dtype=args.dtype,
        device=args.device,
        batch_size=args.batch_size,
    )


def _locate(args: argparse.Namespace) -> int:
    from .see.saliency import locate

    setup_logging()
    result = locate(args.model, out=args.out, **_scoring_options(args))
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
    p.add_argument(
        "--model",
        required=True,
        help="hub id, model folder, LoRA adapter folder or run folder (its final adapter)",
    )
    p.add_argument("--out", default=None, help="also write the figures and every record's as JSON here")
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
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--model", help="hub id, model folder, LoRA adapter folder or run folder (its final adapter)"
    )
    src.add_argument(
        "--snapshot",
        help="a training snapshot: RUN/saliency/step-N.pt, or a run folder (its newest, or --step)",
    )
    p.add_argument("--step", type=NON_NEGATIVE, default=None, help="with --snapshot RUN: the step to show")
    p.add_argument("--out", default="saliency.html", help="the HTML file to write")
    _scoring_arguments(p, limit=8)
    p.set_defaults(func=_saliency)


def _studio(args: argparse.Namespace) -> int:
    from .see.studio import serve

    setup_logging()
    return serve(args.run_dir, host=args.host, port=args.port, open_browser=args.open)


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
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (nlft train --output_dir)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (other than loopback: reachable by others)"
    )
    p.add_argument("--port", type=PORT, default=8765, help="port (0: any free one)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
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
    from .jsonl import ResultsLocked
    from .records import RecordError

    argv = list(sys.argv[1:] if argv is None else argv)
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
        print(f"nlft: error: {message}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("nlft: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
