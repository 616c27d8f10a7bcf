"""The ``nlft`` command line. Each command's implementation is imported only when it runs, so ``--help`` is quick."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__

EPILOG = """\
Typical path:
  nlft data build POOL --size 50 --ratio 2:1 --out data/
  nlft train --config configs/gsm8k-llama3-8b-nlft.yaml --data data/nlft.jsonl --saliency_steps 10
  nlft studio runs/gsm8k-llama3-8b-nlft      # watch and tune the token weights while it trains
See the README for the method and for running on real models."""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        # "(default: None)" says nothing; such options explain their default in their help.
        if action.default is None:
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
        "(wrong answers + teacher notes) or GSM8K gold solutions (as correct responses).",
    )
    p.add_argument("source", choices=["mathcritique", "mathdial", "gsm8k-gold"])
    p.add_argument(
        "path", nargs="?", default=None, help="input file (a GSM8K folder for gsm8k-gold; omit for the hub)"
    )
    p.add_argument("--split", default="train", help="GSM8K split, for gsm8k-gold")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", required=True, help="output .jsonl")
    p.set_defaults(func=_data_import)


# ----------------------------------------------------------------------------------------------------------------
# nlft train (its options come from the config dataclasses, parsed by trl's TrlParser)
# ----------------------------------------------------------------------------------------------------------------


def run_train(argv: Sequence[str]) -> int:
    from .config import parse_train_args
    from .train import train

    _setup_logging()
    data, model, args = parse_train_args(list(argv))
    result = train(data, model, args)
    last = next((h for h in reversed(result.log_history) if "loss" in h), {})
    print(
        f"{result.method}: {result.global_step} steps on {result.records} records in {result.seconds:.0f}s"
        + (f", last logged loss {last['loss']:.4g}" if "loss" in last else "")
        + (f"; {result.skipped} records skipped" if result.skipped else "")
    )
    print(f"run folder: {result.run_dir} (adapter/, epochs/, logs/, run.json, config.yaml)")
    return 0


def _setup_logging() -> None:
    import logging
    import warnings

    # PEFT reads a property transformers 5 deprecated; the warning is theirs and says nothing to our users.
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*deprecated", category=FutureWarning
    )

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("nlft").setLevel(logging.INFO)


def _register_train(sub) -> None:
    # Listed for --help; main() hands `nlft train ...` straight to run_train, whose parser knows the options.
    p = sub.add_parser(
        "train",
        help="train with NLFT or the SFT baseline (LoRA; YAML config + overrides; `nlft train --help`)",
        add_help=False,
    )
    p.set_defaults(func=lambda args: run_train([]))


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
        "Build a dataset from the bundled sample (MathCritique critiques + GSM8K gold answers), then train\n"
        "the embedded tiny Llama on it with NLFT and with the SFT baseline (same responses, LoRA, schedule),\n"
        "and print what was made and where. A few minutes on 2 CPU cores; nothing is downloaded.",
    )
    p.add_argument("--out", default="runs/demo", help="demo folder (data/, nlft/, sft/)")
    p.add_argument(
        "--size", type=int, default=12, help="records to select from the bundled sample (2:1 correct:wrong)"
    )
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo folder first")
    p.set_defaults(func=_demo)


# ----------------------------------------------------------------------------------------------------------------
# nlft saliency / nlft studio
# ----------------------------------------------------------------------------------------------------------------


def _saliency(args: argparse.Namespace) -> int:
    from .saliency import make_report
    from .weighting import WeightingConfig

    _setup_logging()
    report = make_report(
        args.out,
        model=args.model,
        snapshot=args.snapshot,
        step=args.step,
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
    for v in report.views:
        what = f"{v.salient} confirmed" if v.correct else f"{v.salient} blamed"
        print(
            f"  {v.id:<28} {'correct' if v.correct else 'wrong':<7} {v.n:>5} tokens  {what:<13} mean weight {v.mean_weight:.3g}"
        )
    print(f"wrote {report.path} ({len(report.views)} records)")
    return 0


def _register_saliency(sub) -> None:
    from dataclasses import fields

    from .weighting import WeightingConfig

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
    p.add_argument("--step", type=int, default=None, help="with --snapshot RUN: the step to show")
    p.add_argument(
        "--data", help="records (.jsonl/.json/HF dataset, or nlft:sample); default: the run's data"
    )
    p.add_argument("--split", default=None, help="split, for Hugging Face datasets")
    p.add_argument("--limit", type=int, default=8, help="records to show (the first ones)")
    p.add_argument("--out", default="saliency.html", help="the HTML file to write")
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
        type=int,
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
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--batch-size", type=int, default=4, help="records scored at once")
    w = p.add_argument_group(
        "weighting",
        "Start from the run's settings (or the reference defaults), then --weighting, then these flags.",
    )
    w.add_argument(
        "--weighting", default=None, help="YAML of weighting fields (e.g. the one nlft studio writes)"
    )
    for f in fields(WeightingConfig):
        if f.name == "prob_floor":  # enters the loss only, never a weight
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "cluster":
            w.add_argument(
                flag, dest=f.name, choices=f.metadata["choices"], default=None, help=f.metadata["help"]
            )
        else:
            w.add_argument(flag, dest=f.name, type=float, default=None, help=f.metadata["help"])
    p.set_defaults(func=_saliency)


def _studio(args: argparse.Namespace) -> int:
    from .studio import serve

    _setup_logging()
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
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.set_defaults(func=_studio)


REGISTRARS: list[Callable] = [
    _register_data,
    _register_train,
    _register_demo,
    _register_saliency,
    _register_studio,
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

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if argv[:1] == ["train"]:
            code = run_train(argv[1:])
        else:
            args = parser.parse_args(argv)
            code = args.func(args)
    except (RecordError, ValueError, FileNotFoundError, NotADirectoryError) as exc:
        # Bad input is reported in one clear message; NLFT_DEBUG=1 shows the traceback instead.
        if os.environ.get("NLFT_DEBUG"):
            raise
        print(f"nlft: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("nlft: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
