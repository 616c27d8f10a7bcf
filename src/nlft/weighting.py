"""NLFT token weighting (METHOD.md sections 3-5): pure functions of per-token probabilities and hidden states.

The trainer, the saliency map, the studio and the tests all call these functions; nothing else decides a
token's weight. Inputs are 1-D tensors over one record's response tokens (``p_*[t] = P(y_t | X_*, y_<t)``) and
the X_base hidden states ``[n, d]`` that predict them; outputs are detached.

Every constant is a field of ``WeightingConfig`` with the reference default. Where the reference code is
undefined (0/0 ratios, METHOD.md Q5) the ratio is taken as 1: no evidence either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import torch
import torch.nn.functional as F

ClusterMode = Literal["distance", "similarity", "off"]


@dataclass
class WeightingConfig:
    """The settings of the NLFT weighting; defaults are the reference values (METHOD.md sections 3-5)."""

    correct_confidence: float = field(
        default=0.95, metadata={"help": "c: a correct record's token is salient when p_std > c."}
    )
    salient_exponent: float = field(
        default=5.0, metadata={"help": "Salient tokens weigh 1 + ((p_std - c)/(1 - c))^this."}
    )
    cluster_exponent: float = field(
        default=0.3, metadata={"help": "Cluster neighbours of salient tokens weigh (p_std/c)^this."}
    )
    other_exponent: float = field(
        default=0.6, metadata={"help": "Other tokens of a correct record weigh (p_std/c)^this."}
    )
    ratio_threshold: float = field(
        default=1.5,
        metadata={"help": "A token is blamed when p_judge/p_base and p_judge/p_std both exceed this."},
    )
    judge_floor: float = field(default=0.01, metadata={"help": "...and p_judge exceeds this floor."})
    threshold: float = field(
        default=1.5,
        metadata={
            "help": "theta, the sigmoid centre: a blamed token's unlikelihood weight is factor*sigmoid(r1 - theta)."
        },
    )
    unlikelihood_factor: float = field(default=2.0, metadata={"help": "The factor of that sigmoid."})
    blamed_fraction_cutoff: float = field(
        default=0.06,
        metadata={
            "help": "When more than this fraction of a wrong response is blamed, its other tokens get weight 0."
        },
    )
    keep_exponent: float = field(
        default=0.5, metadata={"help": "Otherwise the other tokens of a wrong response weigh p_std^this."}
    )
    cluster: ClusterMode = field(
        default="distance",
        metadata={
            "help": "Phrase expansion around salient/blamed tokens: 'distance' (the reference: absorb neighbours whose "
            "cosine distance to the running centre exceeds the radius), 'similarity' (absorb while similar) or 'off'.",
            "choices": ["distance", "similarity", "off"],
        },
    )
    cluster_radius: float = field(
        default=0.4, metadata={"help": "The clustering radius, in cosine distance."}
    )
    prob_floor: float = field(
        default=1e-5, metadata={"help": "A probability of exactly 0 inside a log is replaced by this."}
    )

    def __post_init__(self) -> None:
        if self.cluster not in ("distance", "similarity", "off"):
            raise ValueError(f"cluster must be 'distance', 'similarity' or 'off', not {self.cluster!r}")
        if not 0.0 < self.correct_confidence < 1.0:
            raise ValueError(f"correct_confidence must lie in (0, 1), got {self.correct_confidence}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_object(cls, obj) -> WeightingConfig:
        """Pick the weighting fields out of any config carrying them (e.g. ``NLFTConfig``)."""
        return cls(**{name: getattr(obj, name) for name in cls.names()})

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.names()}


@dataclass
class TokenWeights:
    """How NLFT treats each response token of one record. All tensors are ``[n]`` and detached."""

    weight: torch.Tensor  # multiplies -log q_t in the loss
    unlikely: torch.Tensor  # bool: trained with q = 1 - p_base (blamed tokens); else q = p_base
    salient: torch.Tensor  # bool: S (confirmed tokens of a correct record, blamed tokens of a wrong one)
    cluster: torch.Tensor  # bool: cluster(S), which includes S
    ratio: torch.Tensor | None = None  # r1 = p_judge / p_base (wrong records)

    @property
    def n(self) -> int:
        return self.weight.shape[0]


# --------------------------------------------------------------------------------------------------------------
# Clustering (section 5)
# --------------------------------------------------------------------------------------------------------------


def cluster_mask(
    hidden: torch.Tensor,
    seeds: torch.Tensor,
    mode: ClusterMode = "distance",
    radius: float = 0.4,
    *,
    sync_every: int = 16,
) -> torch.Tensor:
    """Expand the seed mask into phrases over the hidden states (METHOD.md section 5).

    For each seed i the reference walks left, then right (the running centre carried over), absorbing
    neighbour j while the criterion holds and moving the centre to (centre + h_j) / 2. Walks from different
    seeds are independent, so here they all advance together, one neighbour per step, each turning right as
    soon as its own left walk stops. The host looks at the device only at steps 1, 2, 4, 8, then every
    ``sync_every`` steps — to drop finished walks and to stop once the mask is full — where the reference
    synchronised once per comparison (Q7). The result is the reference's.
    """
    seeds = seeds.to(torch.bool)
    n = seeds.shape[0]
    if mode == "off" or n == 0:
        return seeds.clone()
    if mode not in ("distance", "similarity"):
        raise ValueError(f"unknown cluster mode {mode!r}")
    h = hidden.detach()
    if h.dtype in (torch.float16, torch.bfloat16):
        h = h.float()
    origin = seeds.nonzero().squeeze(1)
    if origin.numel() == 0:
        return seeds.clone()
    hits = seeds.to(torch.int32)
    center = h[origin].clone()
    step = torch.full_like(origin, -1)
    pos = origin - 1
    alive = pos >= 0
    # A seed at position 0 has no left neighbour: its walk starts going right.
    turn = ~alive
    pos = torch.where(turn, origin + 1, pos)
    step = torch.where(turn, torch.ones_like(step), step)
    alive = alive | (turn & (pos < n))
    i, check = 0, 0
    while True:
        if i == check:
            # The only host syncs: drop finished walks, and stop once nothing can change the mask.
            keep = alive.nonzero().squeeze(1)
            if keep.numel() == 0 or bool(hits.all()):
                break
            if keep.numel() < alive.numel():
                center, pos, step, origin, alive = (
                    center[keep],
                    pos[keep],
                    step[keep],
                    origin[keep],
                    alive[keep],
                )
            check = 2 * check if 0 < check < sync_every else check + (1 if check == 0 else sync_every)
        safe = pos.clamp(0, n - 1)
        neighbour = h[safe]
        cos = F.cosine_similarity(center, neighbour, dim=-1)
        take = ((1.0 - cos > radius) if mode == "distance" else (1.0 - cos <= radius)) & alive
        hits.scatter_add_(0, safe, take.to(torch.int32))
        center = torch.where(take.unsqueeze(1), (center + neighbour) / 2, center)
        ahead = pos + step
        go_on = take & (ahead >= 0) & (ahead < n)
        turn = alive & ~go_on & (step < 0)  # a left walk that stopped turns right, centre carried over
        pos = torch.where(go_on, ahead, torch.where(turn, origin + 1, pos))
        step = torch.where(turn, torch.ones_like(step), step)
        alive = go_on | (turn & (origin + 1 < n))
        i += 1
    return hits > 0


# --------------------------------------------------------------------------------------------------------------
# Weights (sections 3 and 4)
# --------------------------------------------------------------------------------------------------------------


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with 0/0 taken as 1 (no evidence) and x/0 as +inf."""
    out = num / den
    return torch.where((num == 0) & (den == 0), torch.ones_like(out), out)


def correct_weights(
    p_std: torch.Tensor, hidden: torch.Tensor, cfg: WeightingConfig | None = None
) -> TokenWeights:
    """Weights of a correct record's tokens (section 3): confirmed tokens (p_std > c) are weighted up."""
    cfg = cfg or WeightingConfig()
    p_std = p_std.detach()
    c = cfg.correct_confidence
    scaled = p_std / c
    salient = scaled > 1
    cluster = cluster_mask(hidden, salient, cfg.cluster, cfg.cluster_radius)
    weight = scaled.pow(cfg.other_exponent)
    weight = torch.where(cluster, scaled.pow(cfg.cluster_exponent), weight)
    boost = 1 + ((p_std - c) / (1 - c)).clamp(min=0).pow(cfg.salient_exponent)
    weight = torch.where(salient, boost, weight)
    return TokenWeights(weight, torch.zeros_like(salient), salient, cluster)


def incorrect_weights(
    p_base: torch.Tensor,
    p_std: torch.Tensor,
    p_judge: torch.Tensor,
    hidden: torch.Tensor,
    cfg: WeightingConfig | None = None,
) -> TokenWeights:
    """Weights of a wrong record's tokens (section 4): tokens the judgment makes likelier are blamed."""
    cfg = cfg or WeightingConfig()
    p_base, p_std, p_judge = p_base.detach(), p_std.detach(), p_judge.detach()
    r1 = _ratio(p_judge, p_base)
    r2 = _ratio(p_judge, p_std)
    salient = (r1 > cfg.ratio_threshold) & (r2 > cfg.ratio_threshold) & (p_judge > cfg.judge_floor)
    cluster = cluster_mask(hidden, salient, cfg.cluster, cfg.cluster_radius)
    n = p_base.shape[0]
    blamed_fraction = salient.sum() / max(n, 1)
    keep = torch.where(
        blamed_fraction > cfg.blamed_fraction_cutoff, torch.zeros_like(p_std), p_std.pow(cfg.keep_exponent)
    )
    weight = torch.where(cluster, torch.zeros_like(keep), keep)
    unlikely_w = cfg.unlikelihood_factor * torch.sigmoid(r1 - cfg.threshold)
    weight = torch.where(salient, unlikely_w, weight)
    return TokenWeights(weight, salient.clone(), salient, cluster, ratio=r1)


def token_weights(
    correct: bool,
    p_base: torch.Tensor,
    p_std: torch.Tensor,
    p_judge: torch.Tensor | None,
    hidden: torch.Tensor,
    cfg: WeightingConfig | None = None,
) -> TokenWeights:
    """Dispatch on the record's polarity."""
    if correct:
        return correct_weights(p_std, hidden, cfg)
    if p_judge is None:
        raise ValueError("a wrong record needs p_judge")
    return incorrect_weights(p_base, p_std, p_judge, hidden, cfg)
