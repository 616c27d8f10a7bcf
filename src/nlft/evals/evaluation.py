"""``nlft eval``: GSM8K accuracy of a model, a LoRA adapter or every per-epoch checkpoint of a run.

Questions come from ``questions``, prompts from ``protocols`` (``paper``, ``lm-eval``), scores and summaries from
``summary``; this module runs them against a model and keeps the results.

Every response is graded by the three rules of ``nlft.tasks.answers`` (``strict``, ``flexible``, ``authors``).

Results go to one folder: ``items.jsonl`` (one line per question and seed, written and fsynced as each
response arrives, through ``AppendLog``), ``settings.json`` (what the results depend on; a rerun with other
settings is refused rather than mixed in) and ``summary.json``. A rerun of the same command skips what is
done, so a killed evaluation loses at most the batch in flight. With several seeds (sampling only) each seed
samples every question once and the summary reports each seed's accuracy and their mean and spread.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jsonl import AppendLog, atomic_write_json
from ..models.generation import BackendOptions, SamplingSettings, make_backend
from ..models.loading import BUILTIN_MODELS, free_accelerator_memory, model_source
from ..options import NON_NEGATIVE, POSITIVE, TEMPERATURE, TOP_P, opt
from ..records import Question
from ..runs import EVAL_DIR, Checkpoint, Run
from .protocols import FEWSHOT_SAMPLERS, LM_EVAL_FEWSHOT_SEED, PROTOCOLS, PaperProtocol, make_protocol
from .questions import EvalData, load_eval_data
from .summary import _fmt_acc, curve_rows, item_key, markdown_curve, score_row, summarize

ITEMS_FILE = "items.jsonl"
SUMMARY_FILE = "summary.json"
SETTINGS_FILE = "settings.json"


@dataclass
class EvalSettings:
    """Decoding for an evaluation. ``temperature == 0`` is greedy and takes no seeds; sampling runs one sample
    per question for each seed in ``seeds``. ``max_new_tokens`` None: the protocol's default."""

    temperature: float = opt(
        0.0, type=TEMPERATURE, group="decoding", help="0 is greedy; the NLFT authors sampled once at 0.6"
    )
    top_p: float = opt(1.0, type=TOP_P, group="decoding", help="nucleus sampling; 1.0 is off")
    seeds: tuple[int, ...] | None = opt(
        None,
        group="decoding",
        help="with --temperature > 0: one sample per seed; the summary reports mean and sd",
    )
    max_new_tokens: int | None = opt(
        None, type=POSITIVE, group="decoding", help="default: 512 (paper) or 256 (lm-eval)"
    )
    limit: int | None = None  # EvalOptions.limit

    def seed_list(self) -> list[int | None]:
        if self.temperature <= 0:
            if self.seeds:
                raise ValueError(
                    "greedy decoding (temperature 0) gives the same answer for every seed; pass --temperature to sample"
                )
            return [None]
        seeds = list(self.seeds or (0,))
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"--seeds has duplicates: {' '.join(map(str, seeds))}")
        return seeds


class SettingsMismatch(ValueError):
    pass


MADE_BY = "nlft eval"


def _is_ours(settings: Any) -> bool:
    """Whether a parsed settings.json is one nlft eval wrote (it names itself; older ones hold the data, the
    protocol and the decoding)."""
    return isinstance(settings, dict) and (
        settings.get("made_by") == MADE_BY or {"data", "decoding", "protocol"} <= set(settings)
    )


PATH_SETTINGS = ("model", "adapter", "run")


def _same_setting(key: str, old: Any, new: Any) -> bool:
    """Equal settings; a model, adapter or run folder is the same when both spellings name one folder (a run
    evaluated as ``runs/x`` and then as ``/home/me/runs/x``, or through a link to it, resumes)."""
    if old == new:
        return True
    if key in PATH_SETTINGS and isinstance(old, str) and isinstance(new, str):
        a, b = Path(old), Path(new)
        return a.exists() and b.exists() and a.resolve() == b.resolve()
    return False


def _check_settings(out: Path, fingerprint: dict[str, Any], overwrite: bool, *, write: bool = True) -> None:
    """Refuse to mix results of different settings in one folder; ``overwrite`` starts it afresh. Only a folder
    nlft eval made (its settings.json names it) is ever resumed or replaced; files of any other kind are refused
    untouched, ``--overwrite`` or not. ``write=False`` only checks (nothing is deleted or written)."""
    from ..files import check_regular, read_json

    file = out / SETTINGS_FILE
    fingerprint = {"made_by": MADE_BY, **fingerprint}
    for name in (ITEMS_FILE, SUMMARY_FILE, SETTINGS_FILE):
        if (out / name).is_symlink():
            raise SettingsMismatch(f"{out / name}: is a symbolic link; nlft never writes through one")
        check_regular(out / name, "--out")
    if file.exists():
        old = read_json(file, "evaluation settings file")
        if not _is_ours(old):
            raise SettingsMismatch(
                f"{file}: not the settings of an nlft evaluation; nlft eval writes only into a new folder or one it "
                "made (--overwrite never replaces other files): choose another --out"
            )
        changed = sorted(
            k
            for k in (set(old) | set(fingerprint)) - {"made_by"}
            if not _same_setting(k, old.get(k), fingerprint.get(k))
        )
        if changed and not overwrite:
            raise SettingsMismatch(
                f"{out} holds evaluation results made with other settings ({', '.join(changed)} differ); "
                "pass --overwrite to replace them or --out to write elsewhere"
            )
        if changed and overwrite and write:  # ours: started afresh
            for name in (ITEMS_FILE, SUMMARY_FILE, SETTINGS_FILE):
                (out / name).unlink(missing_ok=True)
    else:
        strangers = [name for name in (ITEMS_FILE, SUMMARY_FILE) if (out / name).exists()]
        if strangers:
            raise SettingsMismatch(
                f"{out}: holds {' and '.join(strangers)} but no {SETTINGS_FILE}, so not an evaluation nlft can "
                "resume or replace (--overwrite never replaces other files): choose another --out"
            )
    if write:
        atomic_write_json(file, fingerprint)


@dataclass
class _Plan:
    questions: list[Question]
    seeds: list[int | None]
    decoding: dict[str, Any]
    fingerprint: dict[str, Any]


def _plan(protocol, data: EvalData, settings: EvalSettings, describe: dict[str, Any] | None) -> _Plan:
    seeds = settings.seed_list()
    questions = data.questions[: settings.limit] if settings.limit else data.questions
    if not questions:
        raise ValueError(f"{data.spec}: no questions to evaluate")
    decoding = {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_new_tokens": settings.max_new_tokens or protocol.max_new_tokens,
        "stop": list(protocol.stop),
    }
    fingerprint = {**(describe or {}), **protocol.fingerprint(), "data": data.spec, "decoding": decoding}
    return _Plan(list(questions), seeds, decoding, fingerprint)


def pending(
    protocol, data: EvalData, out: str | Path, settings: EvalSettings, *, describe=None, overwrite=False
) -> int:
    """How many items ``evaluate`` would still generate into ``out``, checked before a model is loaded: a
    finished checkpoint costs nothing on a rerun, and a settings mismatch fails before minutes of loading."""
    out = Path(out)
    plan = _plan(protocol, data, settings, describe)
    keys = [item_key(q.id, seed) for seed in plan.seeds for q in plan.questions]
    if overwrite:
        return len(keys)
    _check_settings(out, plan.fingerprint, overwrite, write=False)
    if not (out / ITEMS_FILE).exists():
        return len(keys)
    with AppendLog(out / ITEMS_FILE, key="key") as log:
        return sum(1 for k in keys if k not in log)


def evaluate(
    backend,
    protocol,
    data: EvalData,
    out: str | Path,
    settings: EvalSettings,
    *,
    describe: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``data`` with ``backend`` (``HFBackend`` or ``OpenAIBackend``; None when ``pending`` says nothing
    is left) under ``protocol``; resume from ``out``.

    ``describe`` (model, adapter, run, checkpoint, ...) is stored in the settings and the summary. (A local
    back-end batches prompts of similar length itself.)
    Returns the summary, also written to ``out/summary.json``.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    plan = _plan(protocol, data, settings, describe)
    seeds, questions, decoding = plan.seeds, plan.questions, plan.decoding
    _check_settings(out, plan.fingerprint, overwrite)

    prompted = protocol.build(questions)
    keys = [item_key(p.question.id, seed) for seed in seeds for p in prompted]
    started = time.monotonic()
    generated = failed = 0
    errors: list[str] = []
    with AppendLog(out / ITEMS_FILE, key="key") as log:
        from ..files import check_same_inputs

        check_same_inputs(  # the same ids, but other questions (the file at that path changed): not resumed
            {row["key"]: row for row in log.rows()},
            {
                item_key(p.question.id, seed): {"question": p.question.question}
                for seed in seeds
                for p in prompted
            },
            out / ITEMS_FILE,
            "evaluation items",
        )
        resumed = sum(1 for k in keys if k in log)
        done_rows = [log.get(k) for k in keys if k in log]
        rules = data.task.rules
        right = Counter(rule for r in done_rows for rule in rules if r["correct"][rule])
        bar = tqdm(
            total=len(keys),
            initial=resumed,
            desc=describe.get("checkpoint", "eval") if describe else "eval",
            unit="q",
            disable=not progress,
            dynamic_ncols=True,
        )

        def show() -> None:
            n = max(1, len(done_rows))
            bar.set_postfix_str(
                " ".join(f"{rule}={100 * right[rule] / n:.1f}%" for rule in rules), refresh=False
            )

        show()
        for seed in seeds:
            todo = [p for p in prompted if item_key(p.question.id, seed) not in log]
            if not todo:
                continue
            if backend is None:
                raise ValueError(
                    f"{out}: {len(todo)} items still to generate, and no back-end to generate them"
                )
            backend.settings = SamplingSettings(
                max_new_tokens=decoding["max_new_tokens"],
                temperature=settings.temperature,
                top_p=settings.top_p,
                seed=seed or 0,
                stop=protocol.stop,
            )
            by_key = {p.request.key: p for p in todo}
            for request, completion in backend.generate([p.request for p in todo]):
                if not completion.ok:
                    # Not recorded: a rerun retries it.
                    failed += 1
                    errors.append(f"{request.key}: {completion.error}")
                    bar.update(1)
                    continue
                row = score_row(by_key[request.key], seed, completion, data.task)
                log.append(row)
                generated += 1
                done_rows.append(row)
                right.update(rule for rule in rules if row["correct"][rule])
                show()
                bar.update(1)
        bar.close()
        rows = log.rows()

    summary = {
        **(describe or {}),
        "protocol": protocol.name,
        "data": data.spec,
        "data_name": data.name,
        "questions": len(questions),
        "seeds": [s for s in seeds if s is not None],
        "decoding": decoding,
        **{k: v for k, v in protocol.fingerprint().items() if k not in ("protocol", "prompt")},
        **summarize(rows, keys, seeds, rules),
        "this_run": {
            "generated": generated,
            "resumed": resumed,
            "failed": failed,
            "seconds": round(time.monotonic() - started, 1),
        },
    }
    if errors:
        summary["this_run"]["errors"] = errors[:20]
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Models, checkpoints and result folders
# ----------------------------------------------------------------------------------------------------------------


def checkpoints(run: Run, *, all_checkpoints: bool, include_base: bool) -> list[Checkpoint]:
    """The weights to evaluate in a run folder: the final ones, or every per-epoch save (and the base model as
    epoch 0 with ``include_base``)."""
    chosen = run.epochs() if all_checkpoints else [run.final()]
    if all_checkpoints and not chosen:
        raise FileNotFoundError(
            f"{run.path}: no per-epoch checkpoints under epochs/ (nothing for --all-checkpoints)"
        )
    if include_base:
        chosen = [Checkpoint(run.base_model, None, "base", 0.0), *chosen]
    return chosen


def checkpoint_describe(run: Run, checkpoint: Checkpoint) -> dict[str, Any]:
    """What results of one checkpoint of a run record about it (``nlft compare`` reads these)."""
    adapter = str(checkpoint.adapter) if checkpoint.adapter else None
    return {
        "model": checkpoint.base_model,
        "adapter": adapter,
        "run": str(run.path),
        "method": run.method,
        "checkpoint": checkpoint.label,
        "epoch": checkpoint.epoch,
    }


def folder_name(protocol: str, data_name: str, tag: str | None = None, checkpoint: str | None = None) -> str:
    """``<protocol>-<data>[-<tag>][-<checkpoint>]``; the final weights of a run have no checkpoint part."""
    if tag is not None and not re.fullmatch(r"[A-Za-z0-9_.+=-]+", tag):
        raise ValueError(
            f"--tag {tag!r}: use letters, digits and _ . + = - only (it becomes part of a folder name)"
        )
    parts = [protocol, data_name, tag, None if checkpoint in (None, "final") else checkpoint]
    return "-".join(p for p in parts if p)


def default_out(model: str, adapter: str | None, name: str) -> Path:
    """Where results of a model that is not a run folder go: ``evals/<model>[+<adapter>]/<name>``."""

    def slug(text: str) -> str:
        parts = [p for p in Path(text).parts if p not in ("/", ".", "..")]
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts[-2:])) or "model"

    who = slug(model) + (f"+{slug(adapter)}" if adapter else "")
    return Path("evals") / who / name


@dataclass
class EvalOptions:
    """Everything ``nlft eval`` does, as one typed value (``run_eval``); the CLI only fills it in.

    ``model`` is a hub id, a model folder, an adapter folder or a run folder (with ``backend.backend ==
    "openai"``: the served model's name); the back-end's other options (batch size, dtype, server, timeouts,
    retries) are ``backend``'s, built by ``generation.make_backend`` as for sampling and judging.
    """

    model: str = opt(
        positional=True,
        help="hub id, model folder, LoRA adapter folder or run folder (with --backend openai: the served model's name)",
    )
    backend: BackendOptions = field(default_factory=BackendOptions)
    adapter: str | None = opt(None, help="LoRA adapter folder to apply to MODEL")
    all_checkpoints: bool = opt(
        False, help="evaluate every per-epoch checkpoint of a run folder (RUN/epochs/epoch-N)"
    )
    include_base: bool = opt(False, help="also evaluate the run's base model, as epoch 0")
    data: str = opt(
        "gsm8k:test",
        group="data",
        help="gsm8k:<split>, another task's split (mini-math:test), nlft:sample (50 GSM8K test questions "
        "shipped with nlft), or a question file (.jsonl/.json/HF dataset) with gold answers",
    )
    gsm8k_dir: str | None = opt(
        None,
        group="data",
        help="local GSM8K folder with <split>.jsonl (default: the hub dataset openai/gsm8k)",
    )
    limit: int | None = opt(None, type=POSITIVE, group="data", help="evaluate the first N questions only")
    protocol: str = opt(
        "paper", choices=PROTOCOLS, group="protocol", help="paper (the NLFT paper's) or lm-eval"
    )
    templates: str | None = opt(
        None,
        group="protocol",
        help="paper: template set for the system prompt (default: the run's, else math)",
    )
    chat_template: str | None = None  # the back-end's (--chat-template)
    num_fewshot: int = opt(5, type=NON_NEGATIVE, group="protocol", help="lm-eval: exemplars per prompt")
    fewshot_data: str | None = opt(
        None, group="protocol", help="lm-eval: where exemplars come from (default: gsm8k:train)"
    )
    fewshot_sampler: str = opt(
        "lm-eval",
        choices=FEWSHOT_SAMPLERS,
        group="protocol",
        help="lm-eval: seeded draw per question as lm-eval does, or the first k",
    )
    fewshot_seed: int = opt(
        LM_EVAL_FEWSHOT_SEED, group="protocol", help="lm-eval: seed of the exemplar draws (1234 is lm-eval's)"
    )
    settings: EvalSettings = field(default_factory=EvalSettings)
    out: str | None = opt(
        None,
        group="output",
        help="results folder (default: RUN/eval/... for a run folder, else evals/<model>/...)",
    )
    tag: str | None = opt(
        None, group="output", help="a name added to the results folder, to keep variants apart (e.g. t0.6)"
    )
    overwrite: bool = opt(
        False, group="output", help="discard results already in the folder instead of resuming"
    )
    progress: bool = opt(True, negate="quiet", group="output", help="no progress bar")

    def __post_init__(self) -> None:
        if self.chat_template is None:
            self.chat_template = self.backend.chat_template
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol '{self.protocol}': choose from {', '.join(PROTOCOLS)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")
        if self.limit is not None and self.settings.limit is None:
            self.settings.limit = self.limit  # one limit, whichever of the two a caller set
        elif self.limit is not None and self.settings.limit != self.limit:
            raise ValueError(
                f"limit {self.limit} and settings.limit {self.settings.limit} disagree; give one"
            )
        self.settings.seed_list()  # bad decoding options fail before anything is loaded


def run_eval(options: EvalOptions) -> int:
    """``nlft eval``: evaluate a model, an adapter or the checkpoints of a run; print what was found.

    Returns the exit status: 0, or 1 when some requests failed (a rerun retries just those).
    """
    from dataclasses import replace

    from ..jsonl import atomic_write_text
    from ..runs import is_run, load_run

    o = options
    hf = o.backend.backend == "hf"
    run = load_run(o.model) if hf and is_run(o.model) else None
    if (o.all_checkpoints or o.include_base) and run is None:
        raise ValueError(
            f"{o.model}: --all-checkpoints and --include-base need a run folder (one with run.json) and --backend hf"
        )
    if run is not None and o.adapter:
        raise ValueError(f"{o.model} is a run folder; --adapter goes with a base model")
    if o.adapter and not hf:
        raise ValueError("--adapter needs --backend hf (serve the adapter and name it as the model instead)")
    if hf and run is None and o.model not in BUILTIN_MODELS:
        model_source(o.model)  # a missing local folder: refused before the questions come from the hub
    templates = o.templates or (run.templates if run else None) or "math"
    data = load_eval_data(o.data, o.gsm8k_dir)
    fewshot_data = o.fewshot_data or ("gsm8k:train" if o.data.startswith("gsm8k:") else None)
    if o.protocol == "lm-eval" and o.num_fewshot and fewshot_data is None:
        raise ValueError(
            "--protocol lm-eval on a question file needs --fewshot-data (exemplars with worked answers) or --num-fewshot 0"
        )
    protocol = make_protocol(
        o.protocol,
        templates=templates,
        data=data,
        num_fewshot=o.num_fewshot,
        fewshot_data=fewshot_data or "",
        fewshot_sampler=o.fewshot_sampler,
        fewshot_seed=o.fewshot_seed,
        gsm8k_dir=o.gsm8k_dir,
    )
    name = folder_name(protocol.name, data.name, o.tag)
    # The paper protocol's layout for tokenizers without a chat template is its template set's.
    layout = protocol.templates if isinstance(protocol, PaperProtocol) else None

    if not hf:
        out = Path(o.out) if o.out else default_out(o.model, None, name)
        describe = {"model": o.model, "backend": "openai", "base_url": o.backend.base_url, "tag": o.tag}
        backend = make_backend(replace(o.backend, model=o.model), SamplingSettings(), layout)
        summary = evaluate(
            backend,
            protocol,
            data,
            out,
            o.settings,
            describe=describe,
            overwrite=o.overwrite,
            progress=o.progress,
        )
        _report(summary, out)
        return _exit_code(summary)

    targets: list[Checkpoint | None] = (
        checkpoints(run, all_checkpoints=o.all_checkpoints, include_base=o.include_base) if run else [None]
    )
    if o.out and len(targets) > 1:
        raise ValueError(
            "--out names one folder; with --all-checkpoints results go to RUN/eval/<protocol>-<data>-<checkpoint>/"
        )
    code = 0
    summaries = []
    for target in targets:
        if target is None:
            base, adapter = o.model, o.adapter
            out = Path(o.out) if o.out else default_out(base, adapter, name)
            describe = {"model": base, "adapter": adapter}
        else:
            base, adapter = target.base_model, str(target.adapter) if target.adapter else None
            out = (
                Path(o.out)
                if o.out
                else run.path / EVAL_DIR / folder_name(protocol.name, data.name, o.tag, target.label)
            )
            describe = checkpoint_describe(run, target)
        chat_template = o.chat_template or (run.chat_template if run else None)
        describe.update(tag=o.tag, backend="hf", dtype=o.backend.dtype, chat_template=chat_template)
        summary = _eval_hf(
            replace(o.backend, model=base, adapter=adapter, chat_template=chat_template),
            layout,
            protocol,
            data,
            out,
            o.settings,
            describe,
            overwrite=o.overwrite,
            progress=o.progress,
        )
        free_accelerator_memory()
        _report(summary, out)
        summaries.append(summary)
        code = max(code, _exit_code(summary))
    if run is not None and o.all_checkpoints:
        rows = curve_rows(summaries)
        table = markdown_curve(rows, f"{run.path.name}: {protocol.name} protocol, {data.spec}")
        print("\n" + table)
        prefix = folder_name(protocol.name, data.name, o.tag)
        atomic_write_text(run.path / EVAL_DIR / f"{prefix}-curve.md", table + "\n")
    return code


def _eval_hf(
    options: BackendOptions,
    layout,
    protocol,
    data,
    out,
    settings,
    describe,
    *,
    overwrite: bool,
    progress: bool,
) -> dict[str, Any]:
    if not pending(protocol, data, out, settings, describe=describe, overwrite=overwrite):
        return evaluate(None, protocol, data, out, settings, describe=describe, progress=progress)
    backend = make_backend(options, SamplingSettings(), layout)
    return evaluate(
        backend,
        protocol,
        data,
        out,
        settings,
        describe=describe,
        overwrite=overwrite,
        progress=progress,
    )


def _report(summary: dict[str, Any], out: Path) -> None:
    t = summary["this_run"]
    head = summary.get("checkpoint") or summary.get("adapter") or summary.get("model")
    print(
        f"{head}: {summary['done']}/{summary['items']} items ({t['resumed']} resumed, {t['generated']} generated",
        end="",
    )
    print(f", {t['failed']} failed)" if t["failed"] else ")")
    print(f"  accuracy  {_fmt_acc(summary['accuracy'], summary.get('accuracy_std'))}")
    exact = summary.get("lm_eval_exact_match") or {}
    if any(v is not None for v in exact.values()):
        print(
            "  lm-eval exact match  "
            + "  ".join(f"{rule} {100 * v:5.1f}%" for rule, v in exact.items() if v is not None)
        )
    for err in t.get("errors", [])[:3]:
        print(f"  failed: {err}")
    print(f"  results   {out / ITEMS_FILE}, {out / SUMMARY_FILE}")


def _exit_code(summary: dict[str, Any]) -> int:
    if summary["this_run"]["failed"]:
        print("  some requests failed; rerun the same command to retry just those")
        return 1
    return 0
