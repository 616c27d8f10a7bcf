"""Probe records: one record's weighting inputs (p_base, p_std, p_judge, the X_base hidden states) with its token
ids, readable token texts, question and judgment, made from the trainer's ``RecordScores``. Training writes them
into saliency snapshots (``train.snapshots``); ``nlft.see`` turns them into views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..prompts import EncodedRecord
from ..records import Record

if TYPE_CHECKING:
    from .scores import RecordScores

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
    """``ProbeRecord``s from ``RecordScores`` (``NLFTTrainer.score_batch`` / ``train.scores.batch_scores``) of
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
