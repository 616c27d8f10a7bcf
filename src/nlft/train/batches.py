"""A batch of encoded records as the NLFT passes read it: collation, the padded sequences of one forward, and the
one scoring loop outside training steps (reference cache, saliency snapshots, ``nlft saliency``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..method.scoring import score_responses
from ..prompts import EncodedRecord


@dataclass
class NLFTCollator:
    """Right-pads the X_base, X_std and (wrong records only) X_judge sequences of a batch of encoded records."""

    pad_token_id: int

    def _pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids, mask

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        responses = [f["response_ids"] for f in features]
        batch: dict[str, Any] = {
            "ids": [f["id"] for f in features],
            "correct": [bool(f["correct"]) for f in features],
            "response_lens": [len(r) for r in responses],
        }
        for kind in ("base", "std"):
            prompts = [f[f"{kind}_prompt_ids"] for f in features]
            batch[f"{kind}_input_ids"], batch[f"{kind}_attention_mask"] = self._pad(
                [p + r for p, r in zip(prompts, responses)]
            )
            batch[f"{kind}_prompt_lens"] = [len(p) for p in prompts]
        rows = [i for i, f in enumerate(features) if not f["correct"]]
        batch["judge_rows"] = rows
        if rows:
            prompts = [features[i]["judge_prompt_ids"] for i in rows]
            batch["judge_input_ids"], batch["judge_attention_mask"] = self._pad(
                [p + responses[i] for p, i in zip(prompts, rows)]
            )
            batch["judge_prompt_lens"] = [len(p) for p in prompts]
        return batch


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def eval_batches(
    model,
    records: Sequence[EncodedRecord],
    collator: NLFTCollator,
    score: Callable[[dict[str, Any]], Any],
    *,
    batch_size: int = 4,
    progress: bool = False,
    desc: str = "scoring",
) -> Iterator[tuple[list[EncodedRecord], Any]]:
    """``score(batch)`` of each batch of ``records`` (collated, on the model's device), with ``model`` in eval
    mode (no dropout) and without gradient; the model's mode is restored afterwards.

    The one scoring loop outside training steps: the reference-probability cache, the saliency snapshots and
    ``nlft saliency`` all go through it.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=len(records), desc=desc, unit="record", disable=not progress) as bar:
            for start in range(0, len(records), max(batch_size, 1)):
                part = list(records[start : start + max(batch_size, 1)])
                batch = to_device(collator([r.to_features() for r in part]), device)
                yield part, score(batch)
                bar.update(len(part))
    finally:
        model.train(was_training)


def _pass(inputs: dict, parts: list[tuple[str, int]], pad_id: int = 0):
    """One padded batch of the (kind, record row) sequences in ``parts``: (input_ids, attention_mask,
    prompt_lens, response_lens). The sequences of one forward: the X_base rows (and, with ``incorrect_sft: judge``,
    the X_judge rows) of the training pass, or the X_std and X_judge rows of the scoring pass."""
    judge_at = {row: i for i, row in enumerate(inputs["judge_rows"])}
    seqs, prompt_lens, response_lens = [], [], []
    for kind, row in parts:
        i = judge_at[row] if kind == "judge" else row
        mask = inputs[f"{kind}_attention_mask"][i]
        seqs.append(inputs[f"{kind}_input_ids"][i, : int(mask.sum())])
        prompt_lens.append(inputs[f"{kind}_prompt_lens"][i])
        response_lens.append(inputs["response_lens"][row])
    width = max(len(x) for x in seqs)
    ids = seqs[0].new_full((len(seqs), width), pad_id)
    mask = torch.zeros_like(ids)
    for r, x in enumerate(seqs):
        ids[r, : len(x)] = x
        mask[r, : len(x)] = 1
    return ids, mask, prompt_lens, response_lens


def _score_pass(
    model, inputs: dict, parts, chunk_size: int, *, want_hidden: bool = False
) -> list[torch.Tensor]:
    ids, mask, prompt_lens, response_lens = _pass(inputs, parts)
    scored = score_responses(
        model, ids, mask, prompt_lens, response_lens, want_hidden=want_hidden, chunk_size=chunk_size
    )
    return scored
