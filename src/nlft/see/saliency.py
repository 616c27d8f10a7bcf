"""``nlft saliency``: score records with a model (or read a training snapshot) and write the saliency report.

Every response token is coloured by how NLFT weighs it. The weights come from ``weighting.token_weights`` through
``views.record_view``; the scores from ``train.scores.batch_scores`` (the trainer's own scoring), so a report shows
what training would do with these records. ``visualisation`` renders the page.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..method.weighting import WeightingConfig
from ..models.loading import DTYPES
from ..options import NON_NEGATIVE, POSITIVE, number, opt
from ..prompts import EncodedRecord
from ..records import Record
from ..train.probes import ProbeRecord, probe_records
from .views import RecordView, record_view

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Scoring records outside training (nlft saliency)
# --------------------------------------------------------------------------------------------------------------


def score_records(
    model,
    tokenizer,
    encoded: Sequence[EncodedRecord],
    texts: dict[str, Record],
    *,
    reference_probs: str = "live",
    batch_size: int = 4,
    chunk_size: int = 1024,
    progress: bool = True,
) -> list[ProbeRecord]:
    """Score ``encoded`` with ``model`` as the trainer does (``train.scores.batch_scores``), in eval mode.

    ``reference_probs``: ``live`` scores X_std/X_judge with the model as it is (adapter on), ``initial`` with
    the adapter disabled (the frozen base model), as during training with those settings.
    """
    from ..train.batches import NLFTCollator, eval_batches
    from ..train.reference import check_reference_probs
    from ..train.scores import batch_scores

    check_reference_probs(reference_probs, model, allow_cached=False)

    def score(batch):
        return batch_scores(model, batch, reference_probs=reference_probs, chunk_size=chunk_size)

    out: list[ProbeRecord] = []
    collator = NLFTCollator(tokenizer.pad_token_id)
    for part, scores in eval_batches(
        model, encoded, collator, score, batch_size=batch_size, progress=progress
    ):
        out += probe_records(scores, part, texts, tokenizer)
    return out


# --------------------------------------------------------------------------------------------------------------
# nlft saliency: the report
# --------------------------------------------------------------------------------------------------------------


def run_settings(run_dir: str | Path) -> dict[str, Any]:
    """What a run trained with: run.json, then its resolved config.yaml (weighting fields included)."""
    from ..files import read_yaml
    from ..runs import load_run

    run = load_run(run_dir)
    settings = dict(run.info)
    settings.update(run.info.get("nlft") or {})
    config = Path(run_dir) / "config.yaml"
    if config.is_file():
        settings.update(read_yaml(config, "run config") or {})
    settings["data"] = run.data  # resolved: the run may be read from another directory
    return settings


def _weighting_of(settings: dict[str, Any]) -> WeightingConfig:
    return WeightingConfig(**{k: settings[k] for k in WeightingConfig.names() if k in settings})


@dataclass
class Report:
    path: Path
    views: list[RecordView]
    weighting: WeightingConfig


@dataclass
class Scored:
    """Records scored by a model as the trainer scores them, with what they were scored under."""

    records: list[ProbeRecord]
    texts: dict[str, Record]
    tokenizer: Any
    weighting: WeightingConfig
    details: dict[str, Any]
    name: str


@dataclass(kw_only=True)
class ScoringOptions:
    """How records are scored with a model (``score_data``; ``nlft saliency`` and ``nlft locate``). The weighting
    settings come as ``overrides`` beside these, one flag per ``WeightingConfig`` field."""

    data: str | None = opt(
        None, help="records (.jsonl/.json/HF dataset, or nlft:sample); default: the run's data"
    )
    split: str | None = opt(None, help="split, for Hugging Face datasets")
    limit: int | None = opt(None, type=POSITIVE, help="records to score (the first ones)")
    templates: str | None = opt(
        None, help="prompt template set: math, generic or a YAML file (default: the run's, else math)"
    )
    chat_template: str | None = opt(
        None, help="chat template for tokenizers without one (llama3 or a Jinja file)"
    )
    eos_token: str | None = opt(None, help="token that ends a response (default: the tokenizer's EOS)")
    max_length: int | None = opt(
        None,
        type=number(int, 2, what="at least 2"),
        help="longest sequence; prompts are cut from the left (default: the run's, else 2048)",
    )
    reference_probs: str | None = opt(
        None,
        choices=("live", "initial"),
        help="score X_std/X_judge with the adapter on (live) or off (initial: the frozen base model); "
        "default: as the run trained (its cached probabilities are the frozen base model's), else live",
    )
    dtype: str = opt("auto", choices=DTYPES, help="weight dtype")
    device: str | None = opt(None, help="cuda, mps or cpu (default: the best available)")
    batch_size: int = opt(4, type=POSITIVE, help="records scored at once")
    weighting: str | None = opt(
        None, group="weighting", help="YAML of weighting fields (e.g. the one nlft studio writes)"
    )


@dataclass(kw_only=True)
class ReportOptions:
    """``nlft saliency``: where the weights come from (a model, or a training snapshot) and where the report goes."""

    model: str | None = opt(
        None,
        help="hub id, model folder, LoRA adapter folder or run folder (its final adapter); or --snapshot",
    )
    snapshot: str | None = opt(
        None, help="a training snapshot: RUN/saliency/step-N.pt, or a run folder (its newest, or --step)"
    )
    step: int | None = opt(None, type=NON_NEGATIVE, help="with --snapshot RUN: the step to show")
    out: str = opt("saliency.html", help="the HTML file to write")
    overwrite: bool = opt(False, help="replace a report an earlier nlft saliency wrote at --out")


def _our_report(path: Path) -> bool:
    from .visualisation import GENERATOR

    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">' in head


@dataclass(kw_only=True)
class LocateOptions:
    """``nlft locate``: the model whose map is measured, and where the figures go."""

    model: str = opt(help="hub id, model folder, LoRA adapter folder or run folder (its final adapter)")
    out: str | None = opt(None, help="also write the figures and every record's as JSON here")


def score_data(
    model: str,
    *,
    data: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    templates: str | None = None,
    chat_template: str | None = None,
    eos_token: str | None = None,
    max_length: int | None = None,
    reference_probs: str | None = None,
    weighting: str | None = None,
    overrides: dict[str, Any] | None = None,
    dtype: str = "auto",
    device: str | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> Scored:
    """Load ``model`` and score the records of ``data`` with it (``score_records``).

    A run folder as ``model`` supplies what it trained with — data, templates, max_length, the weighting and
    where p_std/p_judge came from (``cached`` ones came from the frozen base model: ``initial`` here) — unless
    given here. The weighting is then laid over with the ``weighting`` YAML and the ``overrides``.
    """
    from ..models.loading import load_model
    from ..prompts import RecordEncoder
    from ..records import load_records, resolve_records_spec
    from ..runs import is_run

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    trained = run_settings(model) if is_run(model) else {}
    data = data or trained.get("data")
    if not data:
        raise ValueError("no records: pass --data (a records file, or nlft:sample)")
    base = _weighting_of(trained) if trained else WeightingConfig()
    from ..train.config import resolve_weighting

    cfg = resolve_weighting(base, weighting, overrides)
    if reference_probs is None:
        reference_probs = "initial" if trained.get("reference_probs") in ("initial", "cached") else "live"
    texts = load_records(resolve_records_spec(data), split=split or trained.get("data_split"))[:limit]
    if not texts:
        raise ValueError(f"{data}: holds no records to show")
    net, tokenizer, weights = load_model(model, dtype=dtype, device=device)
    encoder = RecordEncoder(
        tokenizer,
        templates or trained.get("templates") or "math",
        max_length=max_length or trained.get("max_length") or 2048,
        on_overlong="error",
        chat_template=chat_template or trained.get("chat_template"),
        eos_token=eos_token or trained.get("eos_token"),
    )
    encoded = encoder.encode_all(texts).records
    by_id = {t.id: t for t in texts}
    records = score_records(
        net,
        tokenizer,
        encoded,
        by_id,
        reference_probs=reference_probs,
        batch_size=batch_size,
        progress=progress,
    )
    adapter = f" + {weights.adapter}" if weights.adapter else ""
    details = {"model": f"{weights.base_model}{adapter}", "data": data, "reference probs": reference_probs}
    return Scored(records, by_id, tokenizer, cfg, details, Path(str(model)).name)


def make_report(
    out: str | Path,
    *,
    model: str | None = None,
    snapshot: str | None = None,
    step: int | None = None,
    limit: int | None = 8,
    weighting: str | None = None,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    **scoring: Any,
) -> Report:
    """Score records with ``model`` (``score_data``, which takes the other keywords) or read a training
    ``snapshot``; weigh them and write an HTML report (an existing ``out`` only if an earlier report, and
    ``overwrite``)."""
    from ..files import check_output_file, check_replaceable
    from ..jsonl import atomic_write_text
    from .visualisation import render_report

    if model is None and snapshot is None:
        raise ValueError("name what to show: a model (--model) or a training snapshot (--snapshot)")
    if model is not None and snapshot is not None:
        raise ValueError("give either a model (--model) or a training snapshot (--snapshot), not both")
    data = scoring.get("data")
    check_output_file(out, inputs=(data,) if data else ())
    check_replaceable(out, _our_report(Path(out)), overwrite=overwrite, what="a saliency report nlft wrote")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    if snapshot is not None:
        from ..train.snapshots import find_snapshot, load_snapshot

        path = find_snapshot(snapshot, step)
        snap = load_snapshot(path)
        from ..train.config import resolve_weighting

        cfg = resolve_weighting(snap.weighting, weighting, overrides)
        records = snap.records[:limit]
        details = {"snapshot": path, "step": snap.step, "reference probs": snap.reference_probs}
        title = f"NLFT saliency: training snapshot, step {snap.step}"
    else:
        scored = score_data(model, limit=limit, weighting=weighting, overrides=overrides, **scoring)
        return write_report(out, scored)
    views = [record_view(r, cfg) for r in records]
    out = Path(out)
    atomic_write_text(out, render_report(views, cfg, title=title, details=details))
    return Report(out, views, cfg)


def write_report(
    out: str | Path, scored: Scored, *, records: list | None = None, title: str | None = None
) -> Report:
    """The HTML report of records scored by ``score_data`` (``records``: a chosen few of them, in order)."""
    from ..jsonl import atomic_write_text
    from .visualisation import render_report

    views = [record_view(r, scored.weighting) for r in (scored.records if records is None else records)]
    out = Path(out)
    title = title or f"NLFT saliency: {scored.name}"
    atomic_write_text(out, render_report(views, scored.weighting, title=title, details=scored.details))
    return Report(out, views, scored.weighting)


def locate(model: str, *, out: str | Path | None = None, **scoring: Any):
    """``nlft locate``: score the records with ``model`` (``score_data``'s keywords) and measure how well the
    blamed tokens find the step each judgment names (``localization.localize``); ``out`` gets the figures and
    every record's as JSON."""
    import json

    from ..files import check_output_file
    from ..jsonl import atomic_write_text
    from .localization import localize

    if out is not None:
        data = scoring.get("data")
        check_output_file(out, inputs=(data,) if data else ())
    scored = score_data(model, **scoring)
    result = localize(
        scored.records, {i: t.response for i, t in scored.texts.items()}, scored.tokenizer, scored.weighting
    )
    if out is not None:
        body = {
            **result.summary(),
            "details": {k: str(v) for k, v in scored.details.items()},
            "per_record": [vars(r) for r in result.per_record],
        }
        atomic_write_text(Path(out), json.dumps(body, indent=1) + "\n")
    return result
