"""The learning rate of each method, chosen from the same few values on held-out train questions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .options import ExperimentOptions
from .plan import Cell
from .steps import evaluate, final_evaluation, finished, train_run

TUNING = "tuning"


def held_out_questions(o: ExperimentOptions) -> list:
    """The tuning runs' questions: the last ``tune_questions`` of the task's train split, which the pool (the
    first ``pool_questions``) never reaches, and no test question."""
    from ..tasks import get_task

    train = get_task(o.task).load("train")
    if o.pool_questions + o.tune_questions > len(train):
        raise ValueError(
            f"--tune-questions {o.tune_questions}: with --pool-questions {o.pool_questions} the held-out questions "
            f"would overlap the pool ({o.task} has {len(train)} train questions)"
        )
    return train[-o.tune_questions :]


def choose_rate(scores: dict[str, float]) -> float:
    """The rate with the best held-out accuracy; a tie goes to the smaller rate (the smaller change)."""
    return min((-accuracy, float(rate)) for rate, accuracy in scores.items())[1]


def tune_rates(o: ExperimentOptions, out: Path) -> dict[str, Any]:
    """Each tuned method trained once per ``--tune-rates`` rate on the ``tune_size`` subset (seed ``tune_seed``),
    scored on the held-out questions after its last epoch; the best rate is kept in OUT/tuning/rates.json (method
    by method, as each finishes) and set in ``o.tuned_rates``. Methods already in that file are not tuned again."""
    from ..files import read_json
    from ..jsonl import atomic_write_jsonl, atomic_write_text

    folder = out / TUNING
    path = folder / "rates.json"
    settings = {
        "rates": list(o.tune_rates), "size": o.tune_size, "seed": o.tune_seed, "questions": o.tune_questions,
        "epochs": o.epochs,
    }  # fmt: skip
    state: dict[str, Any] = {"settings": settings, "methods": {}}
    if path.is_file():
        state = read_json(path, "tuning results")
        if not isinstance(state, dict) or state.get("settings") != settings:
            raise ValueError(
                f"{path}: rates tuned with other settings ({state.get('settings') if isinstance(state, dict) else state}"
                f", now {settings}); use another --out"
            )
    questions = folder / "held-out.jsonl"
    if not questions.is_file():
        rows = [{"id": q.id, "question": q.question, "reference": q.reference} for q in held_out_questions(o)]
        atomic_write_jsonl(questions, rows)
    for method in o.tuned():
        if method in state["methods"]:
            continue
        cell = Cell(method, o.tune_size, o.tune_seed)
        scores = {}
        for rate in o.tune_rates:
            run = folder / f"{cell.name}-lr{rate:g}"
            train_run(o, run, out, cell, rate)
            evaluate(o, run, data=str(questions), limit=o.tune_questions)
            _, summary = final_evaluation(run, str(questions))
            scores[f"{rate:g}"] = summary["accuracy"]["authors"]
        state["methods"][method] = {"accuracy": scores, "chosen": choose_rate(scores)}
        atomic_write_text(path, json.dumps(state, indent=1) + "\n")
        print(
            f"tuning {method}: held-out accuracy "
            + ", ".join(f"{r} {100 * a:.1f}%" for r, a in scores.items())
            + f"; chosen {state['methods'][method]['chosen']:g}",
            flush=True,
        )
    o.tuned_rates.update({m: state["methods"][m]["chosen"] for m in o.tuned()})
    return state


def reuse_tuning_run(o: ExperimentOptions, out: Path, cell: Cell) -> bool:
    """Copy the tuning run at the chosen rate into the grid as ``cell`` when it is that cell: the same records
    (``tune_size``), seed (``tune_seed``), rate and settings, so the same command but for its folder (training is
    deterministic: on SmolLM2 the retrained cells' adapters were byte for byte the tuning runs'). The copy leaves
    out the tuning evaluation, names its source in run.json (``copied_from``) and its own folder in config.yaml;
    it is made beside the cell and renamed, so that a killed copy is never taken for a finished run. Returns
    whether the cell was copied; a cell already begun in place is left to train."""
    import yaml

    from ..files import read_yaml
    from ..jsonl import atomic_write_text
    from ..runs import EVAL_DIR
    from ..train.run import CONFIG_FILE, update_run_info

    if cell.method not in o.tuned() or (cell.size, cell.seed) != (o.tune_size, o.tune_seed):
        return False
    target = out / "runs" / cell.name
    source = out / TUNING / f"{cell.name}-lr{o.rate(cell.method):g}"
    if target.exists() or target.is_symlink() or not finished(source):
        return False
    partial = target.with_name(f".{cell.name}.copying")
    if partial.is_symlink() or (partial.exists() and not partial.is_dir()):
        raise FileExistsError(f"{partial}: not a folder nlft made; move it away and rerun")
    if partial.exists():
        shutil.rmtree(partial)  # an earlier copy, killed before its rename
    shutil.copytree(source, partial, symlinks=True, ignore=shutil.ignore_patterns(EVAL_DIR))
    config = read_yaml(partial / CONFIG_FILE, "run configuration")
    config["output_dir"] = str(target.resolve())
    atomic_write_text(partial / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    update_run_info(partial, copied_from=str(source.relative_to(out)))
    partial.rename(target)
    print(
        f"\n== {cell.name}: the tuning run {source.name} is this cell (same records, seed and rate): copied =="
    )
    return True
