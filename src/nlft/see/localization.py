"""Does the saliency map point at the error? The step a judgment names, located in the response, against the
tokens NLFT blames (``nlft locate``).

A judgment *locates* a step when it quotes it:

* the arithmetic judge (``nlft judge --backend arithmetic``) opens with ``The step "..." is wrong`` (or
  ``... arrives at``), quoting the step as a reader sees it (annotations removed, spaces collapsed, long steps
  cut with "...");
* MathCritique's step-by-step critiques repeat every step as ``Step sentence: ...`` followed by
  ``Correctness of the step: Wrong`` for the wrong ones: the first such step is the judged one.

The quote is found in the response as a reader sees it (``<<...>>`` annotations skipped, runs of white space
matched as one) and mapped back to the response's characters, then to its tokens.

For a wrong record with a located step, the weighting (``weighting.token_weights``, the trainer's own code)
gives the blamed tokens (``TokenWeights.salient``). Over a set of records:

* **precision**: the share of all blamed tokens that lie in the judged step;
* **recall**: the share of located wrong records with at least one blamed token in the judged step;
* **chance**: the share of the located records' tokens that lie in the judged step — the precision of blaming
  tokens at random, what precision is to be compared with;
* **comprehension**: the mean of log(p_judge / p_base) over the judged step's tokens and over the others: a model
  that reads the judgment raises the judged step's tokens under X_judge more than the rest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..data.arithmetic import ANNOTATION_RE
from ..method.weighting import WeightingConfig, token_weights
from ..train.probes import ProbeRecord

_ARITHMETIC_QUOTE = re.compile(r'The step "(.*?)" (?:is wrong|is also wrong|arrives at)', re.S)
_CRITIQUE_STEP = re.compile(r"Step sentence:\s*(.*?)\s*\n\s*Correctness of the step:\s*(\w+)", re.S)


def judged_quote(judgment: str) -> str | None:
    """The step a judgment names, as it quotes it (None: the judgment names no step)."""
    m = _ARITHMETIC_QUOTE.search(judgment)
    if m:
        return m.group(1)
    for m in _CRITIQUE_STEP.finditer(judgment):
        if m.group(2).lower().startswith("wrong"):
            return m.group(1)
    return None


def _reader_view(text: str) -> tuple[str, list[int]]:
    """``text`` without annotations and with each run of white space as one space, and for every character of
    that view the offset of the character it came from."""
    keep = [True] * len(text)
    for m in ANNOTATION_RE.finditer(text):
        keep[m.start() : m.end()] = [False] * (m.end() - m.start())
    chars, where = [], []
    for i, ch in enumerate(text):
        if not keep[i]:
            continue
        if ch.isspace():
            if chars and chars[-1] == " ":
                continue
            ch = " "
        chars.append(ch)
        where.append(i)
    return "".join(chars), where


def locate_quote(response: str, quote: str) -> tuple[int, int] | None:
    """The characters [start, end) of ``response`` that ``quote`` quotes, or None when it is not found."""
    q = " ".join(ANNOTATION_RE.sub("", quote).split())
    if q.endswith("..."):  # a long step the judgment cut short: its beginning must match
        q = q[:-3].rstrip()
    if not q:
        return None
    view, where = _reader_view(response)
    at = view.find(q)
    if at < 0:
        return None
    return where[at], where[at + len(q) - 1] + 1


def locate_step(response: str, judgment: str | None) -> tuple[int, int] | None:
    """The characters of the step ``judgment`` names in ``response`` (None: none named, or not found)."""
    quote = judged_quote(judgment or "")
    return None if quote is None else locate_quote(response, quote)


def token_span(tokenizer, token_ids: Sequence[int], span: tuple[int, int]) -> torch.Tensor:
    """A mask over ``token_ids`` (a response's tokens) of the tokens whose text overlaps the characters ``span``
    of the decoded response. Offsets come from decoding growing prefixes, so they are the decoder's own."""
    ends, prev = [], 0
    for i in range(len(token_ids)):
        prev = max(prev, len(tokenizer.decode(list(token_ids[: i + 1]), skip_special_tokens=True)))
        ends.append(prev)
    starts = [0, *ends[:-1]]
    a, b = span
    return torch.tensor([s < b and e > a and e > s for s, e in zip(starts, ends)], dtype=torch.bool)


@dataclass
class RecordLocalization:
    id: str
    located: bool
    tokens: int
    step_tokens: int
    blamed: int
    blamed_in_step: int
    log_ratio_step: float | None  # mean log(p_judge / p_base) over the judged step's tokens
    log_ratio_rest: float | None  # ... and over the other tokens


@dataclass
class Localization:
    """What ``localize`` measured over a set of records (see the module docstring)."""

    records: int
    wrong: int
    located: int
    blamed_tokens: int
    blamed_in_step: int
    precision: float | None
    recall: float | None
    chance: float | None
    log_ratio_step: float | None
    log_ratio_rest: float | None
    per_record: list[RecordLocalization]

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("per_record")
        return out

    def lines(self) -> list[str]:
        def pct(x):
            return "-" if x is None else f"{x:.1%}"

        def num(x):
            return "-" if x is None else f"{x:+.3f}"

        return [
            f"records {self.records}, wrong {self.wrong}, with a located judged step {self.located}",
            f"precision {pct(self.precision)} of {self.blamed_tokens} blamed tokens lie in the judged step "
            f"(chance: {pct(self.chance)} of the tokens are in it)",
            f"recall {pct(self.recall)} of located wrong records have a blamed token in the judged step",
            f"comprehension: mean log(p_judge/p_base) {num(self.log_ratio_step)} in the judged step, "
            f"{num(self.log_ratio_rest)} elsewhere",
        ]


def _mean_log_ratio(p_judge: torch.Tensor, p_base: torch.Tensor, mask: torch.Tensor) -> float | None:
    if not bool(mask.any()):
        return None
    tiny = torch.finfo(torch.float32).tiny
    r = torch.log(p_judge[mask].double().clamp(min=tiny)) - torch.log(p_base[mask].double().clamp(min=tiny))
    return float(r.mean())


def localize(
    records: Sequence[ProbeRecord],
    responses: dict[str, str],
    tokenizer,
    cfg: WeightingConfig | None = None,
) -> Localization:
    """Precision and recall of the blamed tokens against the judged steps of ``records`` (scored as the trainer
    scores them: ``saliency.score_records``); ``responses[id]`` is each record's response text."""
    cfg = cfg or WeightingConfig()
    per: list[RecordLocalization] = []
    wrong = 0
    for rec in records:
        if rec.correct:
            continue
        wrong += 1
        span = locate_step(responses[rec.id], rec.judgment)
        n = len(rec.token_ids)
        if span is None:
            per.append(RecordLocalization(rec.id, False, n, 0, 0, 0, None, None))
            continue
        step = token_span(tokenizer, rec.token_ids, span)
        weights = token_weights(False, rec.p_base, rec.p_std, rec.p_judge, rec.hidden, cfg)
        blamed = weights.salient
        per.append(
            RecordLocalization(
                rec.id,
                True,
                n,
                int(step.sum()),
                int(blamed.sum()),
                int((blamed & step).sum()),
                _mean_log_ratio(rec.p_judge, rec.p_base, step),
                _mean_log_ratio(rec.p_judge, rec.p_base, ~step),
            )
        )
    located = [r for r in per if r.located]
    blamed = sum(r.blamed for r in located)
    in_step = sum(r.blamed_in_step for r in located)

    def mean(values):
        values = [v for v in values if v is not None and math.isfinite(v)]
        return sum(values) / len(values) if values else None

    return Localization(
        records=len(records),
        wrong=wrong,
        located=len(located),
        blamed_tokens=blamed,
        blamed_in_step=in_step,
        precision=in_step / blamed if blamed else None,
        recall=sum(r.blamed_in_step > 0 for r in located) / len(located) if located else None,
        chance=sum(r.step_tokens for r in located) / sum(r.tokens for r in located) if located else None,
        log_ratio_step=mean(r.log_ratio_step for r in located),
        log_ratio_rest=mean(r.log_ratio_rest for r in located),
        per_record=per,
    )
