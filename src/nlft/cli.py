"""The ``nlft`` command line. Each command's implementation is imported only when it runs, so ``--help`` is quick."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__

EPILOG = """\
Typical path:  nlft data build POOL --size 50 --ratio 1:2 --out data/
See the README for the method and for running on real models."""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        # "(default: None)" and "(default: False)" say nothing, and help that explains its default needs no echo.
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add(sub, name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=description or help_text, formatter_class=_Formatter)


# ----------------------------------------------------------------------------------------------------------------
# nlft data ...
# ----------------------------------------------------------------------------------------------------------------


def _data_build(args: argparse.Namespace) -> int:
    from .builder import build_dataset

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
    n_wrong = sum(not r.is_correct for r in records)
    unjudged = sum(not r.is_correct and r.judgment is None for r in records)
    print(f"{args.file}: {len(records)} valid records ({len(records) - n_wrong} correct, {n_wrong} wrong", end="")
    print(f", {unjudged} of them without a judgment)" if unjudged else ")")
    if records.skipped:
        print(f"{len(records.skipped)} invalid lines skipped:")
        for problem in records.skipped:
            print(f"  {problem}")
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from .jsonl import atomic_write_jsonl
    from .sources import from_mathcritique, from_mathdial, gsm8k_gold_records

    if args.source == "mathcritique":
        records = list(from_mathcritique(args.path))
    elif args.source == "mathdial":
        records = list(from_mathdial(args.path))
    else:
        records = list(gsm8k_gold_records(args.split, args.path, limit=args.limit))
    if args.limit is not None:
        records = records[: args.limit]
    n = atomic_write_jsonl(args.out, (r.to_dict() for r in records))
    print(f"wrote {n} records to {args.out}")
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
    p.add_argument("--size", type=int, required=True, help="number of records to select")
    p.add_argument("--ratio", default="natural", help="correct:wrong, e.g. 1:2; or 'correct', 'wrong', 'natural' (the pool's mix)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="data", help="output folder")
    p.add_argument("--templates", default="math", help="prompt template set for the SFT prompts: math, generic or a YAML file")
    p.add_argument("--skip-invalid", action="store_true", help="skip and count invalid pool lines instead of stopping")
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
        "(wrong answers + teacher notes) or GSM8K gold solutions (as correct responses).",
    )
    p.add_argument("source", choices=["mathcritique", "mathdial", "gsm8k-gold"])
    p.add_argument("path", nargs="?", default=None, help="input file (a GSM8K folder for gsm8k-gold; omit for the hub)")
    p.add_argument("--split", default="train", help="GSM8K split, for gsm8k-gold")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", required=True, help="output .jsonl")
    p.set_defaults(func=_data_import)


# ----------------------------------------------------------------------------------------------------------------
# nlft demo
# ----------------------------------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def _register_demo(sub) -> None:
    p = _add(
        sub,
        "demo",
        "run the embedded default end to end on CPU (tiny model, bundled sample)",
        "Build a dataset from the bundled sample (MathCritique critiques + GSM8K gold answers),\n"
        "encode it with the project's tokenizer and show the three NLFT sequences of each record.",
    )
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--size", type=int, default=12, help="records to select from the bundled sample")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=_demo)


# ----------------------------------------------------------------------------------------------------------------
# nlft eval / compare / merge
# ----------------------------------------------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import run_eval_command

    return run_eval_command(args)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="weights dtype"
    )
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run model code from the hub (off: only trusted architectures)",
    )


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
        help="gsm8k:<split>, or a question file (.jsonl/.json/HF dataset) with gold answers",
    )
    g.add_argument(
        "--gsm8k-dir",
        default=None,
        help="local GSM8K folder with <split>.jsonl (default: the hub dataset openai/gsm8k)",
    )
    g.add_argument("--limit", type=int, default=None, help="evaluate the first N questions only")
    g = p.add_argument_group("protocol")
    g.add_argument("--protocol", default="paper", choices=["paper", "lm-eval"])
    g.add_argument(
        "--templates",
        default=None,
        help="paper: template set for the system prompt (default: the run's, else math)",
    )
    g.add_argument(
        "--chat-template",
        default=None,
        help="paper: chat template (llama3 or a Jinja file) instead of the tokenizer's",
    )
    g.add_argument("--num-fewshot", type=int, default=5, help="lm-eval: exemplars per prompt")
    g.add_argument(
        "--fewshot-data", default=None, help="lm-eval: where exemplars come from (default: gsm8k:train)"
    )
    g.add_argument(
        "--fewshot-sampler",
        default="lm-eval",
        choices=["lm-eval", "first"],
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
        "--temperature", type=float, default=0.0, help="0 is greedy; the NLFT authors sampled once at 0.6"
    )
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling; 1.0 is off")
    g.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="with --temperature > 0: one sample per seed; the summary reports mean and sd",
    )
    g.add_argument("--max-new-tokens", type=int, default=None, help="default: 512 (paper) or 256 (lm-eval)")
    g = p.add_argument_group("back-end")
    g.add_argument(
        "--backend",
        default="hf",
        choices=["hf", "openai"],
        help="hf: transformers generate; openai: an OpenAI-compatible server",
    )
    g.add_argument("--batch-size", type=int, default=8, help="hf: prompts per generate call")
    _add_model_args(g)
    g.add_argument(
        "--base-url", default=None, help="openai: server URL, e.g. http://localhost:8000/v1 (vLLM, SGLang)"
    )
    g.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="openai: environment variable holding the API key"
    )
    g.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
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
    from .compare import run_compare_command

    return run_compare_command(args)


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
    p.add_argument("--protocol", default="paper", choices=["paper", "lm-eval"])
    p.add_argument("--data", default="gsm8k:test", help="the --data the runs were evaluated on")
    p.add_argument("--tag", default=None, help="the --tag of the evaluations to compare")
    p.add_argument(
        "--rule",
        default="authors",
        choices=["strict", "flexible", "authors"],
        help="extraction rule to tabulate and plot",
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
    from .merge import run_merge_command

    return run_merge_command(args)


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
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="dtype to merge and save in",
    )
    p.add_argument("--device", default="cpu", help="where to merge (cpu needs no GPU memory)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run model code from the hub (off: only trusted architectures)",
    )
    p.set_defaults(func=_merge)


REGISTRARS: list[Callable] = [
    _register_data,
    _register_demo,
    _register_eval,
    _register_compare,
    _register_merge,
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
    from .records import RecordError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except (RecordError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
        # Bad input is reported in one clear message; NLFT_DEBUG=1 shows the traceback instead.
        if os.environ.get("NLFT_DEBUG"):
            raise
        print(f"nlft: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("nlft: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
