"""Evaluation protocols: how questions become generation requests.

* ``paper`` (docs/method.md section 8): the X_base prompt NLFT trains on, zero-shot, through the chat template;
  generation ends at EOS; 512 new tokens.
* ``lm-eval``: lm-eval's ``gsm8k`` task (version 3.0), byte for byte. The prompt is ``k`` exemplars
  ``"Question: {question}\\nAnswer: {solution}\\n\\n"`` from the train split followed by
  ``"Question: {question}\\nAnswer:"``; generation stops at ``Question:``, ``</s>`` or ``<|im_end|>``; 256 new
  tokens (lm-eval's ``max_gen_toks``). Exemplars are drawn as lm-eval's default sampler draws them: one
  ``random.Random(1234)`` for the whole run and ``rnd.sample(train, k)`` for each evaluated question in
  order, so the i-th prompt is the one ``lm_eval --tasks gsm8k`` builds for the i-th test question (also
  under ``--limit``). ``fewshot_sampler="first"`` uses the first ``k`` exemplars for every question instead
  (lm-eval's ``first_n``). When the exemplars come from the very split being evaluated, the question itself
  is never its own exemplar (lm-eval draws ``k + 1`` and drops it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.generation import Request
from ..prompts import TemplateSet
from ..records import Question, Record
from .questions import EvalData, load_eval_data

PROTOCOLS = ("paper", "lm-eval")
FEWSHOT_SAMPLERS = ("lm-eval", "first")

# lm-eval's gsm8k task, version 3.0 (lm_eval/tasks/gsm8k/gsm8k.yaml) and its defaults.
LM_EVAL_STOP = ("Question:", "</s>", "<|im_end|>")
LM_EVAL_FEWSHOT_SEED = 1234
LM_EVAL_MAX_NEW_TOKENS = 256
PAPER_MAX_NEW_TOKENS = 512


@dataclass
class Prompted:
    """One question made into a request (without a seed yet), and what the per-item results should remember."""

    question: Question
    request: Request
    info: dict[str, Any] = field(default_factory=dict)


class PaperProtocol:
    """Zero-shot, chat template, the template set's system prompt: exactly the X_base prompt of training."""

    name = "paper"
    stop: tuple[str, ...] = ()
    max_new_tokens = PAPER_MAX_NEW_TOKENS

    def __init__(self, templates: str | Path | TemplateSet | None = "math"):
        self.templates = TemplateSet.load(templates)

    def messages(self, question: Question) -> list[dict[str, str]]:
        as_record = Record(
            id=question.id,
            question=question.question,
            response="",
            reference=question.reference,
            system=question.system,
        )
        return self.templates.chat("base", as_record)

    def build(self, questions: Sequence[Question]) -> list[Prompted]:
        return [Prompted(q, Request(q.id, messages=self.messages(q))) for q in questions]

    def fingerprint(self) -> dict[str, Any]:
        # The wording itself, not just the set's name: an edited template file must not resume old results.
        base = self.templates.base
        return {
            "protocol": self.name,
            "templates": self.templates.name,
            "prompt": {"system": self.templates.system, "base": [base.system, base.user]},
        }


class LmEvalProtocol:
    """lm-eval's gsm8k task: k-shot "Question: ...\\nAnswer:" prompts with its exemplar sampling (module docstring)."""

    name = "lm-eval"
    stop = LM_EVAL_STOP
    max_new_tokens = LM_EVAL_MAX_NEW_TOKENS

    def __init__(
        self,
        exemplars: Sequence[Question],
        num_fewshot: int = 5,
        *,
        sampler: str = "lm-eval",
        seed: int = LM_EVAL_FEWSHOT_SEED,
        exclude_self: bool = False,
        source: str = "gsm8k:train",
    ):
        if sampler not in FEWSHOT_SAMPLERS:
            raise ValueError(f"few-shot sampler '{sampler}': choose from {', '.join(FEWSHOT_SAMPLERS)}")
        if num_fewshot < 0:
            raise ValueError(f"--num-fewshot must be 0 or more, got {num_fewshot}")
        need = num_fewshot + (1 if exclude_self else 0)
        if num_fewshot and len(exemplars) < need:
            raise ValueError(
                f"{num_fewshot}-shot prompts need {need} exemplars; {source} has {len(exemplars)}"
            )
        missing = [q.id for q in exemplars if q.reference is None]
        if num_fewshot and missing:
            raise ValueError(
                f"few-shot exemplars need worked answers; {source} has none for {', '.join(missing[:5])}"
            )
        self.exemplars = list(exemplars)
        self.num_fewshot = num_fewshot
        self.sampler = sampler
        self.seed = seed
        self.exclude_self = exclude_self
        self.source = source

    @staticmethod
    def turn(question: str, answer: str | None = None) -> str:
        """One lm-eval turn: ``doc_to_text``, then the target delimiter, target and few-shot delimiter."""
        text = f"Question: {question}\nAnswer:"
        return text if answer is None else f"{text} {answer}\n\n"

    def _shots(self, rnd: random.Random, question: Question) -> list[Question]:
        k = self.num_fewshot
        if k == 0:
            return []
        if self.sampler == "first":
            pool = (
                [x for x in self.exemplars if x.question != question.question]
                if self.exclude_self
                else self.exemplars
            )
            return pool[:k]
        if not self.exclude_self:
            return rnd.sample(self.exemplars, k)
        # As lm-eval does when the exemplars come from the evaluated split: draw one more, drop the question itself.
        return [x for x in rnd.sample(self.exemplars, k + 1) if x.question != question.question][:k]

    def build(self, questions: Sequence[Question]) -> list[Prompted]:
        # One generator for the whole ordered set, as in lm-eval: prompt i depends on the draws for 0..i-1.
        rnd = random.Random(self.seed)
        out = []
        for q in questions:
            shots = self._shots(rnd, q)
            text = "".join(self.turn(s.question, s.reference) for s in shots) + self.turn(q.question)
            out.append(Prompted(q, Request(q.id, text=text), {"fewshot_ids": [s.id for s in shots]}))
        return out

    def fingerprint(self) -> dict[str, Any]:
        return {
            "protocol": self.name,
            "num_fewshot": self.num_fewshot,
            "fewshot_sampler": self.sampler,
            "fewshot_seed": self.seed,
            "fewshot_data": self.source,
        }


def make_protocol(
    name: str,
    *,
    templates: str | Path | TemplateSet | None = "math",
    data: EvalData | None = None,
    num_fewshot: int = 5,
    fewshot_data: str = "gsm8k:train",
    fewshot_sampler: str = "lm-eval",
    fewshot_seed: int = LM_EVAL_FEWSHOT_SEED,
    gsm8k_dir: str | Path | None = None,
):
    if name == "paper":
        return PaperProtocol(templates)
    if name == "lm-eval":
        exemplars = load_eval_data(fewshot_data, gsm8k_dir, need="solution").questions if num_fewshot else []
        same = data is not None and data.spec == fewshot_data
        return LmEvalProtocol(
            exemplars,
            num_fewshot,
            sampler=fewshot_sampler,
            seed=fewshot_seed,
            exclude_self=same,
            source=fewshot_data,
        )
    raise ValueError(f"protocol '{name}': choose from {', '.join(PROTOCOLS)}")
