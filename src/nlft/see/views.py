"""Views of the NLFT weighting: what each response token of a record weighs, and why.

``record_view`` applies a ``WeightingConfig`` to a ``ProbeRecord`` (``nlft.train.probes``) through
``weighting.token_weights`` (the trainer's own function, never a copy): per token its weight, role and numbers,
per record the counts.
``visualisation`` renders views as HTML; ``nlft saliency`` and ``nlft studio`` show them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..method.weighting import TokenWeights, WeightingConfig, token_weights
from ..train.probes import ProbeRecord

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
