"""NLFT token weighting (docs/method.md sections 3-5): pure functions of per-token probabilities and hidden states.

The trainer, the saliency map, the studio and the tests all call these functions; nothing else decides a
token's weight. Inputs are 1-D tensors over one record's response tokens (``p_*[t] = P(y_t | X_*, y_<t)``) and
the X_base hidden states ``[n, d]`` that predict them; outputs are detached.

Every constant is a field of ``WeightingConfig`` with the reference default, and that class is the only list of
them: each field's metadata carries its help, its valid range and (for the studio) its control, and the CLI
flags, YAML loading, the studio's controls and all validation are generated from it. Where the reference code is
undefined (0/0 ratios, docs/method.md Q5) the ratio is taken as 1: no evidence either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch

from .clustering import cluster_mask

ClusterMode = Literal["distance", "similarity", "off"]
CLUSTER_MODES = ("distance", "similarity", "off")
# The largest likelihood weight NLFT gives: 1 + 1^k, a correct record's most confident token. (The largest
# unlikelihood weight is the unlikelihood factor: factor * sigmoid(.) < factor.)
LIKELIHOOD_WEIGHT_MAX = 2.0


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric setting: finite, between ``lo`` and ``hi`` (None: unbounded)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def __str__(self) -> str:
        if self.lo is None and self.hi is None:
            return "a finite number"
        if self.hi is None:
            return f"a finite number {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None:
            return f"a number {'<' if self.hi_open else '<='} {self.hi:g}"
        return f"a number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


@dataclass(frozen=True)
class Control:
    """How the studio shows a setting: a slider over [lo, hi] in steps of ``step`` (over log10 of the value when
    ``log``, so that a probability can be set from 1e-6 to 0.5 with one slider), or a choice."""

    label: str
    group: str
    lo: float = 0.0
    hi: float = 1.0
    step: float = 0.01
    log: bool = False


class _Metadata(dict):
    """A field's metadata. ``HfArgumentParser`` (trl's ``TrlParser``, which builds ``nlft train``'s flags from these
    dataclasses) hands ``metadata.copy()`` to argparse as keyword arguments, so ``copy`` gives only the keys
    argparse knows; the range and the control stay readable through the mapping itself."""

    ARGPARSE_KEYS = ("help", "choices")

    def copy(self) -> dict:
        return {k: v for k, v in self.items() if k in self.ARGPARSE_KEYS}


def _setting(
    default: Any,
    help: str,  # noqa: A002 - the dataclass metadata key
    *,
    valid: Range | None = None,
    choices: tuple[str, ...] | None = None,
    control: Control | None = None,
):
    meta = _Metadata(help=help)
    if choices is not None:
        meta["choices"] = list(choices)
    meta["valid"] = valid if valid is not None else Range()
    meta["control"] = control
    return field(default=default, metadata=meta)


_BLAMED = "Wrong records: blamed tokens"
_REST = "Wrong records: the rest"
_CORRECT = "Correct records"
_CLUSTER = "Clustering"


@dataclass(frozen=True)
class SettingSpec:
    """What ``WeightingConfig`` says about one of its fields."""

    name: str
    default: Any
    help: str
    valid: Range
    choices: tuple[str, ...] | None
    control: Control | None

    @property
    def is_choice(self) -> bool:
        return self.choices is not None

    def describe(self) -> str:
        return f"one of {', '.join(self.choices)}" if self.choices else str(self.valid)

    def coerce(self, value: Any, where: str = "") -> Any:
        """``value`` as this setting's type, or ``ValueError`` naming the setting and what it accepts."""
        prefix = f"{where}: " if where else ""
        if self.choices is not None:
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{prefix}{self.name} must be {self.describe()}, not {value!r}")
            return value
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:  # YAML 1.1 reads 1e-5 (no dot) as a string
                number = float(value)
            except ValueError:
                number = None
        if number is None:
            raise ValueError(f"{prefix}{self.name} must be {self.describe()}, not {value!r}")
        if number not in self.valid:
            raise ValueError(f"{prefix}{self.name} must be {self.describe()}, got {value!r}")
        return number


@dataclass
class WeightingConfig:
    """The settings of the NLFT weighting; defaults are the reference values (docs/method.md sections 3-5)."""

    correct_confidence: float = _setting(
        0.95,
        "c: a correct record's token is salient when p_std > c.",
        valid=Range(0.0, 1.0, lo_open=True, hi_open=True),
        control=Control("confidence c", _CORRECT, 1e-5, 0.999, 0.01, log=True),
    )
    salient_exponent: float = _setting(
        5.0,
        "Salient tokens weigh 1 + ((p_std - c)/(1 - c))^this.",
        valid=Range(0.0, 100.0),
        control=Control("salient exponent", _CORRECT, 0.5, 10.0, 0.1),
    )
    cluster_exponent: float = _setting(
        0.3,
        "Cluster neighbours of salient tokens weigh (p_std/c)^this.",
        valid=Range(0.0, 100.0),
        control=Control("cluster exponent", _CORRECT, 0.0, 2.0, 0.05),
    )
    other_exponent: float = _setting(
        0.6,
        "Other tokens of a correct record weigh (p_std/c)^this.",
        valid=Range(0.0, 100.0),
        control=Control("other exponent", _CORRECT, 0.0, 2.0, 0.05),
    )
    ratio_threshold: float = _setting(
        1.5,
        "A token is blamed when p_judge/p_base and p_judge/p_std both exceed this.",
        valid=Range(0.0),
        control=Control("ratio threshold", _BLAMED, 0.5, 5.0, 0.05),
    )
    judge_floor: float = _setting(
        0.01,
        "...and p_judge exceeds this floor.",
        valid=Range(0.0, 1.0, hi_open=True),
        control=Control("judge floor", _BLAMED, 1e-6, 0.5, 0.02, log=True),
    )
    threshold: float = _setting(
        1.5,
        "theta, the sigmoid centre: a blamed token's unlikelihood weight is factor*sigmoid(r1 - theta).",
        valid=Range(),
        control=Control("θ, sigmoid centre", _BLAMED, 0.0, 5.0, 0.05),
    )
    unlikelihood_factor: float = _setting(
        2.0,
        "The factor of that sigmoid.",
        valid=Range(0.0, 100.0),
        control=Control("unlikelihood factor", _BLAMED, 0.0, 5.0, 0.05),
    )
    blamed_fraction_cutoff: float = _setting(
        0.06,
        "When more than this fraction of a wrong response is blamed, its other tokens get weight 0.",
        valid=Range(0.0, 1.0),
        control=Control("blamed fraction cutoff", _REST, 0.0, 1.0, 0.005),
    )
    keep_exponent: float = _setting(
        0.5,
        "Otherwise the other tokens of a wrong response weigh p_std^this.",
        valid=Range(0.0, 100.0),
        control=Control("keep exponent", _REST, 0.0, 2.0, 0.05),
    )
    cluster: ClusterMode = _setting(
        "distance",
        "Phrase expansion around salient/blamed tokens: 'distance' (the reference: absorb neighbours whose "
        "cosine distance to the running centre exceeds the radius), 'similarity' (absorb while similar) or 'off'.",
        choices=CLUSTER_MODES,
        control=Control("cluster criterion", _CLUSTER),
    )
    cluster_radius: float = _setting(
        0.4,
        "The clustering radius, in cosine distance.",
        valid=Range(0.0, 2.0),
        control=Control("cluster radius", _CLUSTER, 0.0, 2.0, 0.01),
    )
    # Enters the loss only, never a weight: no studio control.
    prob_floor: float = _setting(
        1e-5,
        "A probability of exactly 0 inside a log is replaced by this.",
        valid=Range(0.0, 1.0, lo_open=True, hi_open=True),
    )

    def __post_init__(self) -> None:
        for spec in self.specs():
            object.__setattr__(self, spec.name, spec.coerce(getattr(self, spec.name)))

    # -- the settings, as data ------------------------------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(spec.name for spec in cls.specs())

    @classmethod
    def specs(cls) -> tuple[SettingSpec, ...]:
        return tuple(
            SettingSpec(
                f.name,
                f.default,
                f.metadata["help"],
                f.metadata["valid"],
                tuple(f.metadata["choices"]) if "choices" in f.metadata else None,
                f.metadata["control"],
            )
            for f in fields(WeightingConfig)
        )

    @classmethod
    def spec(cls, name: str) -> SettingSpec:
        for spec in cls.specs():
            if spec.name == name:
                return spec
        raise KeyError(name)

    @classmethod
    def from_object(cls, obj) -> WeightingConfig:
        """Pick the weighting fields out of any config carrying them (e.g. ``NLFTConfig``)."""
        return cls(**{name: getattr(obj, name) for name in cls.names()})

    @classmethod
    def coerce_mapping(cls, values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """The weighting fields of ``values``, each checked and converted (``ValueError`` naming ``where``, the
        field and its valid range); a key that is no weighting field is an error too."""
        names = cls.names()
        prefix = f"{where}: " if where else ""
        unknown = sorted(str(k) for k in values if k not in names)
        if unknown:
            raise ValueError(
                f"{prefix}unknown weighting field(s) {', '.join(unknown)} (known: {', '.join(names)})"
            )
        return {k: cls.spec(k).coerce(v, where) for k, v in values.items()}

    def replace(self, values: Mapping[str, Any] | None, where: str = "") -> WeightingConfig:
        """A copy with the fields in ``values`` replaced (validated as ``coerce_mapping`` does)."""
        return WeightingConfig(**{**self.to_dict(), **self.coerce_mapping(values or {}, where)})

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.names()}


def weight_scale(cfg: WeightingConfig, unlikely: bool) -> float:
    """The largest weight a token of this kind can get: what the saliency map's full colour stands for."""
    return cfg.unlikelihood_factor if unlikely else LIKELIHOOD_WEIGHT_MAX


@dataclass
class TokenWeights:
    """How NLFT treats each response token of one record. All tensors are ``[n]`` and detached."""

    weight: torch.Tensor  # multiplies -log q_t in the loss
    unlikely: torch.Tensor  # bool: trained with q = 1 - p_base (blamed tokens); else q = p_base
    salient: torch.Tensor  # bool: S (confirmed tokens of a correct record, blamed tokens of a wrong one)
    cluster: torch.Tensor  # bool: cluster(S), which includes S
    ratio: torch.Tensor | None = None  # r1 = p_judge / p_base (wrong records)
    # Wrong records: more than ``blamed_fraction_cutoff`` of the tokens are blamed, so the others weigh 0.
    cutoff_exceeded: bool = False

    @property
    def n(self) -> int:
        return self.weight.shape[0]

    @property
    def salient_fraction(self) -> float:
        """|S| / n: the confirmed fraction of a correct record, the blamed fraction of a wrong one."""
        return float(self.salient.sum()) / max(self.n, 1)


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
    cutoff_exceeded = int(salient.sum()) / max(n, 1) > cfg.blamed_fraction_cutoff
    keep = torch.zeros_like(p_std) if cutoff_exceeded else p_std.pow(cfg.keep_exponent)
    weight = torch.where(cluster, torch.zeros_like(keep), keep)
    unlikely_w = cfg.unlikelihood_factor * torch.sigmoid(r1 - cfg.threshold)
    weight = torch.where(salient, unlikely_w, weight)
    return TokenWeights(weight, salient.clone(), salient, cluster, ratio=r1, cutoff_exceeded=cutoff_exceeded)


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
