"""The SmolLM2 grid (``configs/experiment-smollm2.yaml``), run in chunks that fit a working session and
committed as each finishes, so that the next chunk runs on a fresh machine from what is committed.

    python bench/smollm2_grid.py status                              # committed cells, the next chunk's command
    python bench/smollm2_grid.py run --sizes 25 --methods nlft sft   # one chunk (all the config's seeds)
    python bench/smollm2_grid.py merge                               # bench/results/smollm2-grid.{md,csv,json,png}

``run`` restores the experiment's shared state from ``bench/results/smollm2/state/`` into the working folder
(``runs/smollm2`` by default): the nested training sets (so the pool of 2,000 sampled answers is not redrawn), the
base model's evaluation and the learning rates tuned so far. It prints an estimate, runs ``nlft experiment`` on
the chunk's cells, copies the chunk's ``results.json`` to ``bench/results/smollm2/chunks/``, saves the state, and
merges every committed chunk with ``nlft.experiment.merge_chunks`` (which refuses chunks of another plan).
Commit ``bench/results/smollm2*`` after each chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nlft.jsonl import atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "experiment-smollm2.yaml"
RESULTS = ROOT / "bench" / "results"
STATE = RESULTS / "smollm2" / "state"
COSTS = (
    RESULTS / "methods-cost-smollm2.json"
)  # bench/methods_cost.py: every method's cost, measured in one run
CHUNKS = RESULTS / "smollm2" / "chunks"
GRID = RESULTS / "smollm2-grid"
# The files of an experiment folder that every chunk shares (relative to the folder).
SHARED = (
    "experiment.json", "data/size-25/nlft.jsonl", "data/size-50/nlft.jsonl", "data/size-100/nlft.jsonl",
    "base/settings.json", "base/summary.json", "base/items.jsonl", "tuning/rates.json", "tuning/held-out.jsonl",
)  # fmt: skip
# The order the issue asks for: the paper's claim first, then the 2026 baselines and RL, then 100 records.
PLAN = [
    ([25], ["nlft", "sft"]), ([25], ["rft", "sft-gold"]), ([50], ["nlft", "sft"]), ([50], ["rft", "sft-gold"]),
    ([25], ["dft", "sdft"]), ([25], ["sdpo"]), ([25], ["grpo"]), ([50], ["dft", "sdft"]), ([50], ["sdpo"]),
    ([50], ["grpo"]), ([100], ["nlft", "sft"]), ([100], ["rft", "sft-gold"]), ([100], ["dft", "sdft"]),
    ([100], ["sdpo"]), ([100], ["grpo"]),
]  # fmt: skip
# Planning rates on 2 cores until chunks have measured them, seconds per record-epoch: nlft and sft as their tuning
# runs measured (4.0 and 3.5), the others scaled by their cost relative to sft on nlft:mini
# (bench/results/methods-cost-mini.md); and test answers per second.
PLANNING_SECONDS = {"nlft": 4.0, "sft": 3.5, "rft": 3.0, "sft-gold": 3.5, "dft": 3.5, "sdft": 8.5, "sdpo": 21.0,
                    "grpo": 19.0}  # fmt: skip
ANSWERS_PER_SECOND = 1.9  # chunk 1: 500 answers in about 4.4 minutes


def config() -> dict:
    from nlft.experiment import read_experiment_config

    return read_experiment_config(str(CONFIG))


def chunk_files() -> list[Path]:
    return sorted(CHUNKS.glob("*.json"))


def committed_cells() -> dict[str, dict]:
    found = {}
    for path in chunk_files():
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            found[cell["name"]] = cell
    return found


def restore(out: Path) -> list[str]:
    """Copy the committed shared state into ``out`` where it is missing; never replaces a file there."""
    copied = []
    for name in SHARED:
        source, target = STATE / name, out / name
        if source.is_file() and not os.path.lexists(target):  # a dangling link is not written through
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copied.append(name)
    return copied


# The one state file a later chunk adds to; the others are made once (a later chunk's run only rewrites, say, the
# base evaluation's record of how it resumed or experiment.json's last methods: noise in the committed state).
GROWS = ("tuning/rates.json",)


def save_state(out: Path) -> None:
    for name in SHARED:
        source = out / name
        if source.is_file() and (name in GROWS or not (STATE / name).is_file()):
            (STATE / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(STATE / name, source.read_bytes())
    pool = out / "pool" / "judged.jsonl"
    if pool.is_file():  # the pool itself (3.7 MB) stays out of git: what it held, and its checksum
        atomic_write_text(STATE / "pool.json", json.dumps(pool_summary(pool), indent=1) + "\n")


def pool_summary(path: Path) -> dict:
    import hashlib

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    correct = [r for r in rows if r.get("correct")]
    return {
        "answers": len(rows),
        "questions": len({r["question_id"] for r in rows}),
        "correct": len(correct),
        "questions_with_a_correct_answer": len({r["question_id"] for r in correct}),
        "wrong_with_a_judgment": sum(1 for r in rows if not r.get("correct") and r.get("judgment")),
        "cut_off_by_the_token_limit": sum(1 for r in rows if r.get("finish_reason") == "length"),
        "sha256_of_judged_jsonl": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def estimate(
    sizes: list[int], seeds: list[int], methods: list[str], cfg: dict, out: Path | None = None
) -> str:
    """Minutes for the chunk's training and evaluations, from the committed chunks' measured rates (or, where a
    method has none yet, bench/methods_cost.py's, else the planning rates), plus the tuning of methods not tuned
    yet. A run already finished in the working folder ``out`` (a chunk stopped part-way) is not trained again, nor
    evaluated again where its evaluation is complete."""
    from nlft.experiment.steps import final_evaluation, finished

    def trained(m, n, s) -> bool:
        try:
            return out is not None and finished(out / "runs" / f"{m}-{n}-s{s}")
        except ValueError:  # a damaged run.json: the experiment will say so; count the run as to train
            return False

    def evaluated(m, n, s) -> bool:
        if not trained(m, n, s):
            return False
        try:
            final_evaluation(out / "runs" / f"{m}-{n}-s{s}", f"{cfg['task']}:test")
        except (FileNotFoundError, ValueError):
            return False
        return True

    measured: dict[str, list[float]] = {}
    for cell in committed_cells().values():
        if cell.get("seconds_per_record_epoch"):
            measured.setdefault(cell["method"], []).append(cell["seconds_per_record_epoch"])

    bench = {}  # the same-run cost bench, for methods no chunk has measured yet
    if COSTS.is_file():
        bench = {m: c.get("seconds_per_record_epoch") for m, c in json.loads(COSTS.read_text()).items()}

    def per(method):
        values = measured.get(method)
        if values:
            return sum(values) / len(values)
        return bench.get(method) or PLANNING_SECONDS.get(method, 5.0)

    done = committed_cells()
    todo = [(m, n, s) for n in sizes for s in seeds for m in methods if f"{m}-{n}-s{s}" not in done]
    tuned = json.loads((STATE / "tuning" / "rates.json").read_text())["methods"] if (
        STATE / "tuning" / "rates.json").is_file() else {}  # fmt: skip
    untuned = [m for m in methods if m not in tuned]
    # A method tuned in this chunk gets its tuning-size, tuning-seed cell copied from the tuning run, not trained.
    copied = {(m, cfg["tune_size"], cfg["tune_seed"]) for m in untuned}
    to_train = [t for t in todo if t not in copied and not trained(*t)]
    to_evaluate = [t for t in todo if not evaluated(*t)]
    train = sum(per(m) * n * cfg["epochs"] for m, n, s in to_train)
    evaluate = len(to_evaluate) * cfg["test_questions"] / ANSWERS_PER_SECOND
    tune = sum(
        per(m) * cfg["tune_size"] * cfg["epochs"] + cfg["tune_questions"] / ANSWERS_PER_SECOND
        for m in untuned
        for _ in cfg["tune_rates"]
    )
    return (
        f"estimate: {len(todo)} runs, {len(to_train)} to train ({train / 60:.0f} min), "
        f"{'all' if len(to_evaluate) == len(todo) else len(to_evaluate)} to evaluate ({evaluate / 60:.0f} min)"
        + (f", after tuning {', '.join(untuned)} ({tune / 60:.0f} min)" if untuned else "")
        + f": about {(train + evaluate + tune) / 60:.0f} min on 2 cores"
    )


def shown(path: Path) -> Path:
    """A path as printed and passed on: relative to the repository where it lies inside it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def chunk_name(sizes: list[int], seeds: list[int], methods: list[str]) -> str:
    return f"size-{'-'.join(map(str, sizes))}_seed-{'-'.join(map(str, seeds))}_{'-'.join(methods)}"


def run(args: argparse.Namespace) -> int:
    cfg = config()
    seeds = args.seeds or cfg["seeds"]
    for name, given in (("sizes", args.sizes), ("methods", args.methods), ("seeds", seeds)):
        unknown = [x for x in given if x not in cfg[name]]
        if unknown:
            raise ValueError(
                f"--{name} {' '.join(map(str, unknown))}: not in {CONFIG.name} "
                f"({' '.join(map(str, cfg[name]))}); a chunk runs part of that grid"
            )
    out = Path(args.out).resolve()  # from the caller's directory; the experiment runs in the repository's
    out.mkdir(parents=True, exist_ok=True)
    copied = restore(out)
    if copied:
        print(f"restored from {STATE.relative_to(ROOT)}: {', '.join(copied)}")
    print(estimate(args.sizes, seeds, args.methods, cfg, out), flush=True)
    command = [
        "nlft", "experiment", "--config", str(CONFIG.relative_to(ROOT)), "--out", str(shown(out)),
        "--sizes", *map(str, args.sizes), "--seeds", *map(str, seeds), "--methods", *args.methods,
        *(["--no-progress"] if args.no_progress else []),
    ]  # fmt: skip
    print("$ " + shlex.join(command), flush=True)
    started = time.time()
    code = subprocess.call([sys.executable, "-m", "nlft", *command[1:]], cwd=ROOT)
    if code != 0:
        return code
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    import torch

    # What the experiment ran on: it inherits OMP_NUM_THREADS from this process.
    threads = torch.get_num_threads()
    data["chunk"] = {
        "command": shlex.join(command),
        "wall_seconds": round(time.time() - started),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {threads} thread{'s' * (threads != 1)}, "
        f"Python {platform.python_version()}",
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    CHUNKS.mkdir(parents=True, exist_ok=True)
    target = CHUNKS / f"{chunk_name(args.sizes, seeds, args.methods)}.json"
    atomic_write_text(target, json.dumps(data, indent=1) + "\n")
    save_state(out)
    print(f"chunk: {shown(target)}")
    return merge(args)


def merge(args: argparse.Namespace) -> int:
    from nlft.experiment import merge_chunks, write_results

    inputs = [json.loads(p.read_text(encoding="utf-8")) for p in chunk_files()]
    if not inputs:
        print("no chunk committed yet")
        return 0
    options, collected = merge_chunks(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        written = write_results(options, Path(tmp), collected)
        commands = ["", "**Chunks** (each run with `python bench/smollm2_grid.py run ...`, which runs):", ""]
        for path, data in zip(chunk_files(), inputs, strict=True):
            c = data.get("chunk", {})
            commands.append(
                f"- `{path.name}`: `{c.get('command', '?')}` ({took(c.get('wall_seconds'))}, "
                f"{c.get('machine', '?')}, torch {c.get('torch', '?')}, {c.get('finished', '?')})"
            )
        planned = len(options_cells(config()))
        header = (
            f"# SmolLM2-135M-Instruct on mini-math: {grid_title(len(collected.cells), planned)}\n\n"
            "Made by `python bench/smollm2_grid.py merge` from `bench/results/smollm2/chunks/`; the settings are "
            "`configs/experiment-smollm2.yaml`.\n\n"
            "The cost columns, and NLFT's fraction of GRPO's, put together chunks that ran in different sessions "
            "on a shared machine whose speed swings, some on one thread side by side (each chunk's line at the end "
            "says how it ran): compare them within a chunk only. `bench/results/methods-cost-smollm2.md` measures "
            "every method in one run. A chunk's line gives the time of the command that wrote it: a rerun that found "
            "its runs finished took seconds.\n\n"
        )
        for kind, path in written.items():
            target = Path(f"{GRID}.{kind}")
            body = path.read_bytes()
            if kind == "md":
                body = (header + body.decode("utf-8") + "\n".join(commands) + "\n").encode("utf-8")
            atomic_write_bytes(target, body)  # replaces a link, never writes through it
            print(target)
    return 0


def grid_title(done: int, planned: int) -> str:
    """The merged grid's title: "so far" while runs are missing, the whole grid once every planned run is in."""
    return (
        f"the grid so far ({done} of {planned} runs)"
        if done < planned
        else f"the whole grid ({planned} runs)"
    )


def took(seconds) -> str:
    """A chunk command's wall time as its line shows it: seconds under a minute (a rerun that resumed finished
    runs), else minutes."""
    if seconds is None:
        return "time not recorded"
    return f"{seconds} s" if seconds < 60 else f"{seconds / 60:.0f} min"


def options_cells(cfg: dict) -> list[str]:
    return [f"{m}-{n}-s{s}" for n in cfg["sizes"] for s in cfg["seeds"] for m in cfg["methods"]]


def status(args: argparse.Namespace) -> int:
    cfg = config()
    done = committed_cells()
    print(f"committed: {len(done)} of {len(options_cells(cfg))} runs ({len(chunk_files())} chunks)")
    for sizes, methods in PLAN:
        names = [f"{m}-{n}-s{s}" for n in sizes for s in cfg["seeds"] for m in methods]
        missing = [n for n in names if n not in done]
        mark = "done" if not missing else f"{len(names) - len(missing)}/{len(names)}"
        print(f"  {mark:>6}  sizes {' '.join(map(str, sizes))}: {' '.join(methods)}")
    # The next chunk: the first planned one with a missing run, less its methods already committed in full (a chunk
    # may have run part of a planned one).
    nxt = next(((s, todo) for s, m in PLAN if (todo := [x for x in m if any(
        f"{x}-{n}-s{k}" not in done for n in s for k in cfg["seeds"])])), None)  # fmt: skip
    if nxt:
        # ... and its seeds already committed for all of them (a chunk may have run some seeds only).
        seeds = [k for k in cfg["seeds"] if any(f"{x}-{n}-s{k}" not in done for n in nxt[0] for x in nxt[1])]
        print(estimate(nxt[0], seeds, nxt[1], cfg))
        print(
            f"next: python bench/smollm2_grid.py run --sizes {' '.join(map(str, nxt[0]))} --methods {' '.join(nxt[1])}"
            + (f" --seeds {' '.join(map(str, seeds))}" if seeds != cfg["seeds"] else "")
        )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run one chunk, save it and merge")
    p.add_argument("--sizes", type=int, nargs="+", required=True)
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", help="default: the config's")
    p.add_argument(
        "--out", default=str(ROOT / "runs" / "smollm2"), help="working folder (default runs/smollm2)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    sub.add_parser("merge", help="merge the committed chunks into bench/results/smollm2-grid.*").set_defaults(
        func=merge
    )
    sub.add_parser("status", help="what is committed and the next chunk").set_defaults(func=status)
    args = parser.parse_args()
    try:
        sys.exit(args.func(args))
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"smollm2_grid: error: {exc}")


if __name__ == "__main__":
    main()
