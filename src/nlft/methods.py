"""Training methods: what ``nlft train --method`` can be, one table entry each.

Every method trains the same model (the same LoRA, schedule and seed, from ``nlft.train``) on the same encoded
records; a method only says which trainer runs and on what it is fed:

* ``nlft``: ``NLFTTrainer`` on all records, with the NLFT loss (docs/method.md);
* ``sft``: trl's ``SFTTrainer``, default loss, on exactly the token ids NLFT trains on (the X_base prompt,
  masked, and the same response; docs/method.md Q8).

A new method is a new ``Method`` subclass in ``METHODS``, with its own settings dataclass (``settings_class``)
when it has any; ``config.CONFIG_CLASSES`` picks those up, so ``nlft train --help`` lists them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .prompts import EncodedRecord

logger = logging.getLogger(__name__)


@dataclass
class TrainingJob:
    """What every method gets: the run, the model with its LoRA, the encoded records and their texts."""

    data: Any  # config.DataConfig
    model_cfg: Any  # config.ModelConfig
    args: Any  # config.NLFTConfig: the schedule every method shares
    run_dir: Path
    model: Any
    tokenizer: Any
    base_name: str
    records: list[EncodedRecord]
    texts: list[Any]  # records.Record of each record, in the same order (questions, judgments, references)
    callbacks: list = field(default_factory=list)
    settings: Any = None  # the method's own settings (an instance of its ``settings_class``), if it has one
    resuming: bool = False  # continuing the run from one of its checkpoints


class Method:
    """One training method. ``build_trainer`` returns a ``transformers.Trainer`` ready to ``train()``."""

    name: ClassVar[str]
    help: ClassVar[str]
    # Whether the run trains with the NLFT weighting (run.json records its settings; saliency snapshots exist).
    uses_weighting: ClassVar[bool] = False
    settings_class: ClassVar[type | None] = None

    def build_trainer(self, job: TrainingJob):
        raise NotImplementedError


class NLFTMethod(Method):
    name = "nlft"
    help = "NLFT: the weighted per-token loss on the records' responses (docs/method.md)"
    uses_weighting = True

    def build_trainer(self, job: TrainingJob):
        import datasets

        from .runs import REFERENCE_PROBS_FILE
        from .trainer import NLFTCollator, NLFTTrainer, load_reference_cache, records_fingerprint

        collator = NLFTCollator(job.tokenizer.pad_token_id)
        cached: dict = {}
        if job.args.reference_probs == "cached":
            # Read back when the run already has them (a resumed run); otherwise the trainer computes them at its
            # first step, through the prepared model, on every process.
            path = job.run_dir / REFERENCE_PROBS_FILE
            fingerprint = records_fingerprint(job.records, job.base_name)
            cached = dict(
                reference_cache=load_reference_cache(path, fingerprint),
                reference_records=job.records,
                reference_file=path,
                reference_fingerprint=fingerprint,
            )
        return NLFTTrainer(
            model=job.model,
            args=job.args,
            train_dataset=datasets.Dataset.from_list([r.to_features() for r in job.records]),
            data_collator=collator,
            processing_class=job.tokenizer,
            callbacks=job.callbacks,
            **cached,
        )


def sft_config(args):
    """trl's ``SFTConfig`` with every ``TrainingArguments`` field taken from the NLFT config (same schedule)."""
    from transformers import TrainingArguments
    from trl import SFTConfig

    shared = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    values = {name: getattr(args, name) for name in shared}
    values = {k: getattr(v, "value", v) for k, v in values.items()}
    if values["train_sampling_strategy"] == "group_by_length" and values["per_device_train_batch_size"] == 1:
        values["train_sampling_strategy"] = "random"  # as NLFTTrainer does: the same order for both methods
    return SFTConfig(**values, max_length=None, packing=False, dataset_kwargs={})


def sft_rows(records: list[EncodedRecord]) -> list[dict[str, list[int]]]:
    """trl's tokenized language-modelling rows: the X_base prompt (masked) and the response, as NLFT sees them."""
    return [
        {"input_ids": r.input_ids("base"), "labels": [-100] * len(r.prompt_ids["base"]) + r.response_ids}
        for r in records
    ]


class SFTMethod(Method):
    name = "sft"
    help = "the fair SFT baseline: trl's SFTTrainer on the same responses after the X_base prompt"

    def rows(self, job: TrainingJob) -> list[dict[str, list[int]]]:
        """The language-modelling rows it trains on (the variants below choose other ones)."""
        return sft_rows(job.records)

    def build_trainer(self, job: TrainingJob):
        import datasets
        from trl import SFTTrainer

        return SFTTrainer(
            model=job.model,
            args=sft_config(job.args),
            train_dataset=datasets.Dataset.from_list(self.rows(job)),
            processing_class=job.tokenizer,
            callbacks=job.callbacks,
        )


class RFTMethod(SFTMethod):
    name = "rft"
    help = (
        "rejection-sampling fine-tuning: the SFT baseline on the correct responses only (the wrong ones and "
        "their judgments are left out)"
    )

    def rows(self, job: TrainingJob) -> list[dict[str, list[int]]]:
        kept = [r for r in job.records if r.correct]
        if not kept:
            raise ValueError(f"--method rft: {job.data.data} holds no correct records to train on")
        return sft_rows(kept)


class GoldSFTMethod(SFTMethod):
    name = "sft-gold"
    help = (
        "SFT on the gold solutions of the same questions (the paper's original baseline), one per question, "
        "after the same X_base prompt"
    )

    def rows(self, job: TrainingJob) -> list[dict[str, list[int]]]:
        from .prompts import RecordEncoder
        from .records import Record

        encoder = RecordEncoder(
            job.tokenizer,
            job.data.templates,
            max_length=job.data.max_length,
            on_overlong="error",
            chat_template=job.data.chat_template,
            eos_token=job.data.eos_token,
        )
        seen, gold = set(), []
        for text in job.texts:
            if text.question in seen:
                continue
            if not text.reference:
                raise ValueError(f"--method sft-gold: record {text.id} has no standard answer (reference) to train on")
            seen.add(text.question)
            gold.append(
                Record(id=f"{text.id}-gold", question=text.question, response=text.reference, reference=text.reference,
                       system=text.system, correct=True)
            )  # fmt: skip
        return sft_rows(encoder.encode_all(gold).records)


METHODS: dict[str, Method] = {m.name: m for m in (NLFTMethod(), SFTMethod(), RFTMethod(), GoldSFTMethod())}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {name!r}") from None


def settings_classes() -> tuple[type, ...]:
    """The settings dataclasses of the methods that have their own (parsed with the training config)."""
    return tuple(m.settings_class for m in METHODS.values() if m.settings_class is not None)
