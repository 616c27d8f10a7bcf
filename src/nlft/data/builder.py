"""Dataset builder: choose N graded records with a chosen correct:wrong mix and write NLFT and SFT files.

The NLFT file holds the records (our field names). The SFT file holds, for the very same records and in the
same order, trl's conversational prompt/completion rows whose completion is the same response, so that an SFT
baseline trains on exactly what NLFT trains on (docs/method.md Q8). Selection is seeded and independent of the
pool's line order; both files are written atomically.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..jsonl import atomic_write_json, atomic_write_jsonl
from ..options import POSITIVE, opt
from ..prompts import TemplateSet
from ..records import Record, load_records

NLFT_FILE = "nlft.jsonl"
SFT_FILE = "sft.jsonl"
MANIFEST_FILE = "manifest.json"


def parse_ratio(text: str | None) -> tuple[int, int] | None:
    """``"C:W"`` (correct:wrong, as in the NLFT authors' scripts), ``correct``, ``wrong``, or ``natural`` (None)."""
    if text is None or text == "natural":
        return None
    if text == "correct":
        return (1, 0)
    if text == "wrong":
        return (0, 1)
    parts = text.split(":")
    try:
        c, w = (int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"ratio '{text}': expected C:W with whole numbers (e.g. 1:2), 'correct', 'wrong' or 'natural'"
        ) from None
    if c < 0 or w < 0 or c + w == 0:
        raise ValueError(f"ratio '{text}': parts must be non-negative and not both zero")
    return (c, w)


def split_counts(size: int, ratio: tuple[int, int]) -> tuple[int, int]:
    """(correct, wrong) counts for ``size`` records, the correct share rounded half up."""
    c, w = ratio
    n_correct = (2 * size * c + (c + w)) // (2 * (c + w))
    return n_correct, size - n_correct


@dataclass
class Selection:
    records: list[Record]
    n_correct: int
    n_wrong: int
    unjudged: int  # wrong records left out because they have no judgment yet


def select(
    pool: Sequence[Record], size: int, ratio: tuple[int, int] | None = None, seed: int = 42
) -> Selection:
    """Pick ``size`` records: ``ratio`` = (correct, wrong) parts, or None for the pool's natural mix."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    usable = sorted((r for r in pool if r.is_correct or r.judgment is not None), key=lambda r: r.id)
    unjudged = len(pool) - len(usable)
    rng = random.Random(seed)
    if ratio is None:
        if size > len(usable):
            raise ValueError(
                f"asked for {size} records, the pool has {len(usable)} usable ones" + _unjudged_note(unjudged)
            )
        chosen = rng.sample(usable, size)
    else:
        correct = [r for r in usable if r.is_correct]
        wrong = [r for r in usable if not r.is_correct]
        n_c, n_w = split_counts(size, ratio)
        short = []
        if n_c > len(correct):
            short.append(f"{n_c} correct (the pool has {len(correct)})")
        if n_w > len(wrong):
            short.append(f"{n_w} wrong with a judgment (the pool has {len(wrong)})")
        if short:
            raise ValueError(
                f"size {size} at ratio {ratio[0]}:{ratio[1]} needs "
                + " and ".join(short)
                + _unjudged_note(unjudged)
            )
        chosen = rng.sample(correct, n_c) + rng.sample(wrong, n_w)
        rng.shuffle(chosen)
    n_correct = sum(r.is_correct for r in chosen)
    return Selection(chosen, n_correct, len(chosen) - n_correct, unjudged)


def _unjudged_note(unjudged: int) -> str:
    return (
        f"; {unjudged} wrong records without a judgment were not counted (run `nlft judge`)"
        if unjudged
        else ""
    )


def sft_row(record: Record, templates: TemplateSet) -> dict:
    """trl's conversational prompt/completion row: the X_base prompt and the same response."""
    return {
        "id": record.id,
        "prompt": templates.chat("base", record),
        "completion": [{"role": "assistant", "content": record.response}],
    }


@dataclass
class BuildResult:
    nlft_path: Path
    sft_path: Path
    manifest_path: Path
    selection: Selection
    pool_size: int
    skipped: int

    def summary(self) -> str:
        s = self.selection
        lines = [
            f"selected {len(s.records)} of {self.pool_size} pool records: {s.n_correct} correct, {s.n_wrong} wrong",
            f"  NLFT records: {self.nlft_path}",
            f"  SFT prompt/completion (same responses): {self.sft_path}",
        ]
        if s.unjudged:
            lines.append(f"  {s.unjudged} wrong records without a judgment were left out (run `nlft judge`)")
        if self.skipped:
            lines.append(f"  {self.skipped} invalid pool lines were skipped")
        return "\n".join(lines)


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(kw_only=True)
class BuildOptions:
    """``nlft data build``: the arguments of ``build_dataset``."""

    pool: str = opt(
        positional=True, help="graded records: .jsonl, .json, a saved HF dataset folder or a hub id"
    )
    out_dir: str = opt("data", flag="out", help="output folder")
    size: int = opt(type=POSITIVE, help="number of records to select")
    ratio: str | None = opt(
        "natural", help="correct:wrong, e.g. 1:2; or 'correct', 'wrong', 'natural' (the pool's mix)"
    )
    seed: int = opt(42, help="seed of the selection")
    templates: str = opt("math", help="prompt template set for the SFT prompts: math, generic or a YAML file")
    skip_invalid: bool = opt(False, help="skip and count invalid pool lines instead of stopping")
    overwrite: bool = opt(False, help="replace a dataset an earlier nlft data build wrote in --out")


MADE_BY = "nlft data build"


def _made_here(out: Path) -> bool:
    """Whether folder ``out`` holds a dataset nlft data build wrote (its manifest says so; older manifests hold
    the pool, the size and the ids), and nothing else but that dataset."""
    import json

    try:
        manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    ours = isinstance(manifest, dict) and (
        manifest.get("made_by") == MADE_BY or {"pool", "size", "ids"} <= set(manifest)
    )
    return ours and {p.name for p in out.iterdir()} <= {NLFT_FILE, SFT_FILE, MANIFEST_FILE}


def check_build_folder(out: Path, overwrite: bool) -> None:
    """``--out`` for a dataset: new, empty, or an earlier build's (replaced with ``--overwrite`` only)."""
    from ..files import check_replaceable

    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise NotADirectoryError(
            f"--out {out}: is not a folder (a file or a link); name a folder for the dataset"
        )
    if out.is_dir() and any(out.iterdir()):
        check_replaceable(out, _made_here(out), overwrite=overwrite, what="a dataset nlft data build made")


def build_dataset(
    pool: str | Path,
    out_dir: str | Path,
    *,
    size: int,
    ratio: str | None = None,
    seed: int = 42,
    templates: str | Path | None = "math",
    skip_invalid: bool = False,
    overwrite: bool = False,
) -> BuildResult:
    """Select ``size`` records of ``pool`` at ``ratio`` into ``out_dir`` (nlft.jsonl, sft.jsonl, manifest.json).
    ``out_dir`` must be new, empty, or a dataset an earlier build wrote (replaced only with ``overwrite``)."""
    out = Path(out_dir)
    check_build_folder(out, overwrite)
    records = load_records(pool, skip_invalid=skip_invalid)
    parsed = parse_ratio(ratio)
    selection = select(records, size, parsed, seed)
    template_set = TemplateSet.load(templates)
    nlft_path, sft_path, manifest_path = out / NLFT_FILE, out / SFT_FILE, out / MANIFEST_FILE
    atomic_write_jsonl(nlft_path, (r.to_dict() for r in selection.records))
    atomic_write_jsonl(sft_path, (sft_row(r, template_set) for r in selection.records))
    atomic_write_json(
        manifest_path,
        {
            "made_by": MADE_BY,
            "pool": str(pool),
            "pool_sha256": _sha256(Path(pool)),
            "size": size,
            "ratio": ratio or "natural",
            "seed": seed,
            "templates": template_set.name,
            "correct": selection.n_correct,
            "wrong": selection.n_wrong,
            "ids": [r.id for r in selection.records],
        },
    )
    return BuildResult(nlft_path, sft_path, manifest_path, selection, len(records), len(records.skipped))
