"""The saliency map: how NLFT weighs every response token, for a report (``nlft saliency``) or a live studio.

Three parts, all built on ``weighting.token_weights`` (the trainer's own function, never a copy):

* ``ProbeRecord`` holds one record's weighting inputs (p_base, p_std, p_judge, the X_base hidden states) with
  its token ids, readable token texts, question and judgment. ``score_records`` makes them from a model,
  ``SaliencySnapshots`` from the training model every K steps through ``NLFTTrainer.score_batch``, so the
  weights a snapshot gives are the trainer's weights for that record at that step.
* Snapshots are ``RUN/saliency/step-NNNNNNNN.pt`` files (``torch.save`` of plain tensors, lists and strings,
  read back with ``weights_only=True``), written atomically so a reader never sees half a file.
* ``record_view`` applies a ``WeightingConfig`` to a ``ProbeRecord``: per token its weight, role and numbers;
  per record the counts. ``visualisation`` renders views as HTML; ``studio`` serves them.
"""

from __future__ import annotations

import io
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

from .jsonl import atomic_write_bytes
from .prompts import EncodedRecord
from .records import Record
from .runs import SALIENCY_DIR
from .weighting import TokenWeights, WeightingConfig, token_weights

if TYPE_CHECKING:
    from .trainer import RecordScores

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
_SNAPSHOT_NAME = re.compile(r"step-(\d+)\.pt")


# --------------------------------------------------------------------------------------------------------------
# Token texts
# --------------------------------------------------------------------------------------------------------------


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token's own piece of the decoded text, so that the pieces joined read as the response.

    Decoded incrementally over a short window, as streaming decoders do: byte-level BPE shows spaces and
    newlines as they are (not 'Ġ'/'Ċ'), SentencePiece keeps its leading spaces, and a token that is only part
    of a multi-byte character gets "" while the token completing the character carries it.
    """
    ids = list(ids)
    pieces: list[str] = []
    prefix = read = 0

    def decode(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    for i in range(len(ids)):
        before = decode(ids[prefix:read])
        now = decode(ids[prefix : i + 1])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            pieces.append(now[len(before) :])
            prefix, read = read, i + 1
        else:
            pieces.append("")
    if read < len(ids) and pieces:  # a response cut inside a character: its bytes go to the last token
        pieces[-1] = decode(ids[prefix:])[len(decode(ids[prefix:read])) :]
    return pieces


# --------------------------------------------------------------------------------------------------------------
# What one record needs for display
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ProbeRecord:
    """One record's weighting inputs and what to show with them. Tensors are detached, on the CPU."""

    id: str
    correct: bool
    question: str
    judgment: str | None
    token_ids: list[int]
    tokens: list[str]  # token_texts of token_ids
    p_base: torch.Tensor  # [n] float32
    p_std: torch.Tensor
    p_judge: torch.Tensor | None  # wrong records only
    hidden: torch.Tensor  # [n, d] in the model's dtype: clustering reads it exactly as the trainer did

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "correct": self.correct,
            "question": self.question,
            "judgment": self.judgment,
            "token_ids": torch.tensor(self.token_ids, dtype=torch.long),
            "tokens": list(self.tokens),
            "p_base": self.p_base,
            "p_std": self.p_std,
            "p_judge": self.p_judge,
            "hidden": self.hidden,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeRecord:
        return cls(
            id=str(d["id"]),
            correct=bool(d["correct"]),
            question=str(d["question"]),
            judgment=d["judgment"],
            token_ids=[int(i) for i in d["token_ids"].tolist()],
            tokens=list(d["tokens"]),
            p_base=d["p_base"],
            p_std=d["p_std"],
            p_judge=d["p_judge"],
            hidden=d["hidden"],
        )


def probe_records(
    scores: Sequence[RecordScores], encoded: Sequence[EncodedRecord], texts: dict[str, Record], tokenizer
) -> list[ProbeRecord]:
    """``ProbeRecord``s from ``RecordScores`` (``NLFTTrainer.score_batch`` / ``trainer.batch_scores``) of
    ``encoded``, in the same order, with the question and judgment of ``texts[id]``."""
    out = []
    for rec, enc in zip(scores, encoded):
        if rec.id != enc.id:
            raise ValueError(f"scores for record {rec.id} do not belong to record {enc.id}")
        text = texts[enc.id]
        out.append(
            ProbeRecord(
                id=enc.id,
                correct=enc.correct,
                question=text.question,
                judgment=text.judgment,
                token_ids=list(enc.response_ids),
                tokens=token_texts(tokenizer, enc.response_ids),
                p_base=rec.p_base.detach().float().cpu(),
                p_std=rec.p_std.detach().float().cpu(),
                p_judge=rec.p_judge.detach().float().cpu() if rec.p_judge is not None else None,
                hidden=rec.hidden.detach().cpu(),
            )
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# Views: the weighting applied to a record
# --------------------------------------------------------------------------------------------------------------

ROLES = ("confirmed", "blamed", "neighbour", "other")


@dataclass
class TokenView:
    index: int
    id: int
    text: str
    p_base: float
    p_std: float
    p_judge: float | None
    ratio: float | None  # p_judge / p_base (wrong records)
    weight: float
    unlikely: bool  # trained with log(1 - p_base): pushed down
    role: str  # one of ROLES: S of a correct record, S of a wrong one, cluster(S) \ S, the rest


@dataclass
class RecordView:
    id: str
    correct: bool
    question: str
    judgment: str | None
    tokens: list[TokenView]
    salient: int  # |S|: confirmed (correct record) or blamed (wrong record) tokens
    neighbours: int  # |cluster(S) \ S|
    mean_weight: float
    blamed_fraction: float | None  # |S| / n of a wrong record
    cutoff_exceeded: bool  # wrong record: more than blamed_fraction_cutoff blamed, so the rest weighs 0
    weights: TokenWeights = field(repr=False)

    @property
    def n(self) -> int:
        return len(self.tokens)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "correct": self.correct,
            "question": self.question,
            "judgment": self.judgment,
            "n": self.n,
            "salient": self.salient,
            "neighbours": self.neighbours,
            "mean_weight": _finite(self.mean_weight),
            "blamed_fraction": self.blamed_fraction,
            "cutoff_exceeded": self.cutoff_exceeded,
            "tokens": [
                {
                    "i": t.index,
                    "id": t.id,
                    "text": t.text,
                    "p_base": _finite(t.p_base),
                    "p_std": _finite(t.p_std),
                    "p_judge": _finite(t.p_judge),
                    "ratio": _finite(t.ratio),
                    "weight": _finite(t.weight),
                    "unlikely": t.unlikely,
                    "role": t.role,
                }
                for t in self.tokens
            ],
        }


def _finite(x: float | None) -> float | str | None:
    """JSON has no inf/nan; a ratio x/0 is written as the string 'inf'."""
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def record_view(rec: ProbeRecord, cfg: WeightingConfig) -> RecordView:
    """How NLFT weighs each token of ``rec`` under ``cfg``, computed by ``weighting.token_weights``."""
    w = token_weights(rec.correct, rec.p_base, rec.p_std, rec.p_judge, rec.hidden, cfg)
    n = w.n
    neighbours = w.cluster & ~w.salient
    roles = []
    for s, nb in zip(w.salient.tolist(), neighbours.tolist()):
        roles.append(("confirmed" if rec.correct else "blamed") if s else "neighbour" if nb else "other")
    weight = w.weight.tolist()
    ratio = w.ratio.tolist() if w.ratio is not None else [None] * n
    p_judge = rec.p_judge.tolist() if rec.p_judge is not None else [None] * n
    tokens = [
        TokenView(i, tid, text, pb, ps, pj, r, wt, bool(u), role)
        for i, (tid, text, pb, ps, pj, r, wt, u, role) in enumerate(
            zip(
                rec.token_ids,
                rec.tokens,
                rec.p_base.tolist(),
                rec.p_std.tolist(),
                p_judge,
                ratio,
                weight,
                w.unlikely.tolist(),
                roles,
            )
        )
    ]
    salient = int(w.salient.sum())
    fraction = salient / max(n, 1)
    return RecordView(
        id=rec.id,
        correct=rec.correct,
        question=rec.question,
        judgment=rec.judgment,
        tokens=tokens,
        salient=salient,
        neighbours=int(neighbours.sum()),
        mean_weight=float(w.weight.mean()) if n else 0.0,
        blamed_fraction=None if rec.correct else fraction,
        cutoff_exceeded=(not rec.correct) and fraction > cfg.blamed_fraction_cutoff,
        weights=w,
    )


# --------------------------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The probe records' weighting inputs at one training step, and the settings the run trained with."""

    step: int
    records: list[ProbeRecord]
    weighting: WeightingConfig
    epoch: float | None = None
    reference_probs: str = "live"
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "reference_probs": self.reference_probs,
            "created": self.created,
            "weighting": self.weighting.to_dict(),
            "records": [r.to_dict() for r in self.records],
        }


def snapshot_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / SALIENCY_DIR


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    return snapshot_dir(run_dir) / f"step-{step:08d}.pt"


def write_snapshot(run_dir: str | Path, snap: Snapshot) -> Path:
    """Store ``snap`` as ``RUN/saliency/step-N.pt``, atomically (the studio may be reading the folder)."""
    buffer = io.BytesIO()
    torch.save(snap.to_dict(), buffer)
    path = snapshot_path(run_dir, snap.step)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def list_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of every complete snapshot, by step. Temporary files of a write in progress start with '.'."""
    root = snapshot_dir(run_dir)
    found = []
    for path in root.iterdir() if root.is_dir() else []:
        m = _SNAPSHOT_NAME.fullmatch(path.name)
        if m and path.is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot file; a file that is not one is named in the error."""
    path = Path(path)
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises several unrelated types for a damaged or foreign file
        raise ValueError(f"{path}: not a readable saliency snapshot ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{path}: not a saliency snapshot of format {SNAPSHOT_FORMAT}")
    try:
        return Snapshot(
            step=int(data["step"]),
            records=[ProbeRecord.from_dict(r) for r in data["records"]],
            weighting=WeightingConfig(**data["weighting"]),
            epoch=data["epoch"],
            reference_probs=str(data["reference_probs"]),
            created=float(data["created"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: damaged saliency snapshot (field {exc})") from None


# --------------------------------------------------------------------------------------------------------------
# The training callback
# --------------------------------------------------------------------------------------------------------------


def choose_probe(records: Sequence[EncodedRecord], k: int) -> list[EncodedRecord]:
    """``k`` records to follow, wrong and correct alternating in data order, so that both kinds are shown."""
    wrong = [r for r in records if not r.correct]
    right = [r for r in records if r.correct]
    out: list[EncodedRecord] = []
    while len(out) < k and (wrong or right):
        for pool in (wrong, right):
            if pool and len(out) < k:
                out.append(pool.pop(0))
    return out


class SaliencySnapshots(TrainerCallback):
    """Every ``every`` optimizer steps (and at the start and the end of training) stores a ``Snapshot`` of the
    probe records in ``RUN/saliency/``, scored by the trainer's own ``score_batch``.

    The model is scored in eval mode without gradient, so dropout does not make the snapshot random, and only
    by the main process, on the unwrapped model (no collective operation runs, the others wait at the next
    step). ``trainer`` is set by ``nlft.train.train`` (an ``NLFTTrainer``).
    """

    def __init__(
        self, run_dir: str | Path, probe: Sequence[EncodedRecord], texts: dict[str, Record], every: int
    ):
        if every < 1:
            raise ValueError(f"saliency snapshots every {every} steps: must be at least 1")
        missing = [r.id for r in probe if r.id not in texts]
        if missing:
            raise ValueError(f"saliency probe records without their text: {', '.join(missing)}")
        self.run_dir = Path(run_dir)
        self.probe = list(probe)
        self.texts = texts
        self.every = every
        self.trainer = None
        self._last_step: int | None = None

    def snapshot(self, step: int, epoch: float | None) -> Path:
        trainer = self.trainer
        if trainer is None or not hasattr(trainer, "score_batch"):
            raise RuntimeError("SaliencySnapshots needs its NLFTTrainer (set .trainer)")
        model = trainer.model
        device = next(model.parameters()).device
        batch_size = max(trainer.args.per_device_train_batch_size, 1)
        was_training = model.training
        model.eval()
        records: list[ProbeRecord] = []
        try:
            with torch.no_grad():
                for start in range(0, len(self.probe), batch_size):
                    part = self.probe[start : start + batch_size]
                    batch = trainer.data_collator([r.to_features() for r in part])
                    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                    scores = trainer.score_batch(model, batch)
                    records += probe_records(scores, part, self.texts, trainer.processing_class)
        finally:
            model.train(was_training)
        snap = Snapshot(
            step=step,
            records=records,
            weighting=trainer.weighting,
            epoch=epoch,
            reference_probs=trainer.args.reference_probs,
        )
        self._last_step = step
        path = write_snapshot(self.run_dir, snap)
        logger.debug("saliency snapshot of step %d: %s", step, path)
        return path

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.snapshot(state.global_step, state.epoch)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and state.global_step % self.every == 0:
            self.snapshot(state.global_step, state.epoch)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self._last_step != state.global_step:
            self.snapshot(state.global_step, state.epoch)
        return control


def snapshot_callback(
    run_dir: str | Path, records: Sequence[EncodedRecord], texts: Sequence[Record], every: int, probe: int
) -> SaliencySnapshots:
    """The callback ``nlft train`` adds when ``saliency_steps > 0``: ``probe`` of ``records`` every ``every`` steps."""
    if probe < 1:
        raise ValueError(f"saliency_probe must be at least 1, got {probe}")
    chosen = choose_probe(records, probe)
    wanted = {r.id for r in chosen}
    return SaliencySnapshots(run_dir, chosen, {t.id: t for t in texts if t.id in wanted}, every)


# --------------------------------------------------------------------------------------------------------------
# Scoring records outside training (nlft saliency)
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
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
    """Score ``encoded`` with ``model`` as the trainer does (``trainer.batch_scores``), in eval mode.

    ``reference_probs``: ``live`` scores X_std/X_judge with the model as it is (adapter on), ``initial`` with
    the adapter disabled (the frozen base model), as during training with those settings.
    """
    from tqdm.auto import tqdm

    from .trainer import NLFTCollator, batch_scores

    if reference_probs not in ("live", "initial"):
        raise ValueError(f"reference_probs must be live or initial here, not {reference_probs!r}")
    if reference_probs == "initial" and not hasattr(model, "disable_adapter"):
        raise ValueError("--reference-probs initial disables the LoRA adapter, so --model must have one")
    collator = NLFTCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    model.eval()
    out: list[ProbeRecord] = []
    with tqdm(total=len(encoded), desc="scoring", unit="record", disable=not progress) as bar:
        for start in range(0, len(encoded), batch_size):
            part = list(encoded[start : start + batch_size])
            batch = collator([r.to_features() for r in part])
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            scores = batch_scores(model, batch, reference_probs=reference_probs, chunk_size=chunk_size)
            out += probe_records(scores, part, texts, tokenizer)
            bar.update(len(part))
    return out


# --------------------------------------------------------------------------------------------------------------
# nlft saliency: the report
# --------------------------------------------------------------------------------------------------------------


def load_weighting_file(path: str | Path) -> dict[str, Any]:
    """The weighting fields of a YAML file: one that ``nlft studio`` wrote, or any ``nlft train`` config.

    Other training fields are passed over; a key that is no field at all (a typo) is an error naming the file.
    """
    import yaml

    from .config import CONFIG_CLASSES

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of weighting fields, e.g. 'threshold: 1.5'")
    names = WeightingConfig.names()
    known = {f.name for cls in CONFIG_CLASSES for f in fields(cls)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ValueError(
            f"{path}: unknown field(s) {', '.join(unknown)} (weighting fields: {', '.join(names)})"
        )
    out = {}
    for key in names:
        if key not in data:
            continue
        value = data[key]
        if key != "cluster" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{path}: field '{key}' must be a number, not {value!r}")
        out[key] = value if key == "cluster" else float(value)
    return out


def resolve_weighting(
    base: WeightingConfig, file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> WeightingConfig:
    """``base``, then the fields of ``file``, then ``overrides`` (e.g. command-line flags)."""
    values = base.to_dict()
    source = "weighting settings"
    if file is not None:
        values.update(load_weighting_file(file))
        source = str(file)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return WeightingConfig(**values)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def run_settings(run_dir: str | Path) -> dict[str, Any]:
    """What a run trained with: run.json, then its resolved config.yaml (weighting fields included)."""
    import yaml

    from .runs import load_run

    run = load_run(run_dir)
    settings = dict(run.info)
    settings.update(run.info.get("nlft") or {})
    config = Path(run_dir) / "config.yaml"
    if config.is_file():
        settings.update(yaml.safe_load(config.read_text(encoding="utf-8")) or {})
    return settings


def _weighting_of(settings: dict[str, Any]) -> WeightingConfig:
    return WeightingConfig(**{k: settings[k] for k in WeightingConfig.names() if k in settings})


def find_snapshot(spec: str | Path, step: int | None = None) -> Path:
    """A snapshot file, or the snapshot of ``step`` (default: the newest) of a run folder."""
    spec = Path(spec)
    if spec.is_file():
        return spec
    found = dict(list_snapshots(spec))
    if not found:
        raise FileNotFoundError(
            f"{spec}: no saliency snapshots (saliency/step-N.pt); train with --saliency_steps K"
        )
    if step is None:
        return found[max(found)]
    if step not in found:
        raise FileNotFoundError(
            f"{spec}: no snapshot of step {step} (stored: {', '.join(map(str, sorted(found)))})"
        )
    return found[step]


@dataclass
class Report:
    path: Path
    views: list[RecordView]
    weighting: WeightingConfig


def make_report(
    out: str | Path,
    *,
    model: str | None = None,
    snapshot: str | None = None,
    step: int | None = None,
    data: str | None = None,
    split: str | None = None,
    limit: int | None = 8,
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
) -> Report:
    """Score records with ``model`` (or read a training ``snapshot``), weigh them, write an HTML report.

    A run folder as ``model`` supplies what it trained with — data, templates, max_length, the weighting and
    where p_std/p_judge came from (``cached`` ones came from the frozen base model: ``initial`` here) — unless
    given here. The weighting is then laid over with the ``weighting`` YAML and the ``overrides``.
    """
    from .jsonl import atomic_write_text
    from .visualisation import render_report

    if (model is None) == (snapshot is None):
        raise ValueError("give either a model (--model) or a training snapshot (--snapshot), not both")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    if snapshot is not None:
        path = find_snapshot(snapshot, step)
        snap = load_snapshot(path)
        cfg = resolve_weighting(snap.weighting, weighting, overrides)
        records = snap.records[:limit]
        details = {"snapshot": path, "step": snap.step, "reference probs": snap.reference_probs}
        title = f"NLFT saliency: training snapshot, step {snap.step}"
    else:
        from .modeling import load_model
        from .prompts import RecordEncoder
        from .records import load_records
        from .runs import is_run
        from .train import resolve_data

        trained = run_settings(model) if is_run(model) else {}
        data = data or trained.get("data")
        if not data:
            raise ValueError("no records: pass --data (a records file, or nlft:sample)")
        base = _weighting_of(trained) if trained else WeightingConfig()
        cfg = resolve_weighting(base, weighting, overrides)
        if reference_probs is None:
            reference_probs = "initial" if trained.get("reference_probs") in ("initial", "cached") else "live"
        net, tokenizer, weights = load_model(model, dtype=dtype, device=device)
        texts = load_records(resolve_data(data), split=split or trained.get("data_split"))[:limit]
        encoder = RecordEncoder(
            tokenizer,
            templates or trained.get("templates") or "math",
            max_length=max_length or trained.get("max_length") or 2048,
            on_overlong="error",
            chat_template=chat_template or trained.get("chat_template"),
            eos_token=eos_token or trained.get("eos_token"),
        )
        encoded = encoder.encode_all(texts).records
        records = score_records(
            net,
            tokenizer,
            encoded,
            {t.id: t for t in texts},
            reference_probs=reference_probs,
            batch_size=batch_size,
            progress=progress,
        )
        adapter = f" + {weights.adapter}" if weights.adapter else ""
        details = {
            "model": f"{weights.base_model}{adapter}",
            "data": data,
            "reference probs": reference_probs,
        }
        title = f"NLFT saliency: {Path(str(model)).name}"
    views = [record_view(r, cfg) for r in records]
    out = Path(out)
    atomic_write_text(out, render_report(views, cfg, title=title, details=details))
    return Report(out, views, cfg)
