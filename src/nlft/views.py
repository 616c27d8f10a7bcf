"""Views of the NLFT weighting: what each response token of a record weighs, and why.

``ProbeRecord`` holds one record's weighting inputs (p_base, p_std, p_judge, the X_base hidden states) with its
token ids, readable token texts, question and judgment; ``probe_records`` makes them from the trainer's
``RecordScores``. ``record_view`` applies a ``WeightingConfig`` to one, through ``weighting.token_weights`` (the
trainer's own function, never a copy): per token its weight, role and numbers, per record the counts.
``visualisation`` renders views as HTML; ``nlft saliency`` and ``nlft studio`` show them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .prompts import EncodedRecord
from .records import Record
from .weighting import TokenWeights, WeightingConfig, token_weights

if TYPE_CHECKING:
    from .trainer import RecordScores

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
    return RecordView(
        id=rec.id,
        correct=rec.correct,
        question=rec.question,
        judgment=rec.judgment,
        tokens=tokens,
        salient=salient,
        neighbours=int(neighbours.sum()),
        mean_weight=float(w.weight.mean()) if n else 0.0,
        blamed_fraction=None if rec.correct else w.salient_fraction,
        cutoff_exceeded=w.cutoff_exceeded,
        weights=w,
    )
