"""Training methods: what ``nlft train --method`` can be, one table entry each.

Every method trains the same model (the same LoRA, schedule and seed, from ``nlft.train.run``) on the same encoded
records; a method only says which trainer runs and on what it is fed:

* ``nlft``: ``NLFTTrainer`` on all records, with the NLFT loss (docs/method.md);
* ``sft``: trl's ``SFTTrainer``, default loss, on exactly the token ids NLFT trains on (the X_base prompt,
  masked, and the same response; docs/method.md Q8);
* ``rft`` and ``sft-gold``: the same SFT on the correct responses only, or on the questions' gold solutions;
* ``grpo``: trl's ``GRPOTrainer`` on the same questions (the X_base prompt), rewarded 1 for a correct final
  answer and 0 otherwise, optionally after an SFT warm-up on the gold solutions (as ReFT does).

A new method is a new ``Method`` subclass in ``METHODS``, with its own settings dataclass (``settings_class``)
when it has any; ``config.CONFIG_CLASSES`` picks those up, so ``nlft train --help`` lists them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..prompts import EncodedRecord
from ..tasks import Task, get_task

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

    def run_info(self, trainer) -> dict:
        """What a run of this method adds to run.json once trained (its costs beyond time and memory)."""
        return {}


class NLFTMethod(Method):
    name = "nlft"
    help = "NLFT: the weighted per-token loss on the records' responses (docs/method.md)"
    uses_weighting = True

    def build_trainer(self, job: TrainingJob):
        import datasets

        from ..runs import REFERENCE_PROBS_FILE
        from .batches import NLFTCollator
        from .reference import ReferenceCache
        from .trainer import NLFTTrainer

        collator = NLFTCollator(job.tokenizer.pad_token_id)
        cached: dict = {}
        if job.args.reference_probs == "cached":
            # Read back when the run already has them (a resumed run); otherwise the trainer computes them at its
            # first step, through the prepared model, on every process.
            cached["reference_cache"] = ReferenceCache(
                job.run_dir / REFERENCE_PROBS_FILE, job.records, job.base_name
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
        from ..prompts import RecordEncoder
        from ..records import Record

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
                raise ValueError(
                    f"--method sft-gold: record {text.id} has no standard answer (reference) to train on"
                )
            seen.add(text.question)
            gold.append(
                Record(id=f"{text.id}-gold", question=text.question, response=text.reference, reference=text.reference,
                       system=text.system, correct=True)
            )  # fmt: skip
        return sft_rows(encoder.encode_all(gold).records)


@dataclass
class GRPOSettings:
    """``--method grpo``: the RL baseline's own settings. The defaults are trl's ``GRPOConfig`` defaults, except the
    warm-up (off; ReFT's recipe warms up with SFT first) and the reward rule (the evaluation's)."""

    grpo_num_generations: int = field(
        default=8, metadata={"help": "completions sampled per question (the group GRPO compares within)"}
    )
    grpo_max_completion_length: int = field(
        default=512, metadata={"help": "most tokens generated per completion"}
    )
    grpo_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the completions"})
    grpo_beta: float = field(
        default=0.0, metadata={"help": "KL coefficient against the starting model (0: none)"}
    )
    grpo_warmup_epochs: float = field(
        default=0.0,
        metadata={
            "help": "epochs of SFT on the questions' gold solutions before the RL (ReFT's warm-up); 0: none"
        },
    )
    grpo_reward_rule: str | None = field(
        default=None,
        metadata={
            "help": "grading rule of the correctness reward, one of the --task's (numeric: authors, the default)"
        },
    )

    def __post_init__(self) -> None:
        if self.grpo_num_generations < 2:
            raise ValueError(
                f"--grpo_num_generations must be at least 2 (GRPO compares a group), got {self.grpo_num_generations}"
            )
        if self.grpo_max_completion_length < 1:
            raise ValueError(
                f"--grpo_max_completion_length must be at least 1, got {self.grpo_max_completion_length}"
            )
        if not self.grpo_temperature > 0:
            raise ValueError(f"--grpo_temperature must be above 0, got {self.grpo_temperature}")
        if self.grpo_beta < 0 or self.grpo_warmup_epochs < 0:
            raise ValueError("--grpo_beta and --grpo_warmup_epochs must be at least 0")


class CorrectnessReward:
    """trl reward function: 1.0 where a completion is right by ``task``'s grader against the question's standard
    answer, else 0.0 (graded as ``nlft eval`` grades). Counts the tokens it is shown: the tokens generated, for
    the cost table."""

    def __init__(self, task: Task | None = None, rule: str | None = None):
        from ..tasks.answers import NumericTask

        self.task = task or NumericTask()
        self.rule = rule or self.task.default_rule
        self.task.check_rule(self.rule)
        self.tokens = 0
        self.__name__ = "correct"  # trl names the reward's logged metrics after it

    def __call__(self, prompts, completions, reference, completion_ids=None, **_) -> list[float]:
        from ..records import Question

        if completion_ids is not None:
            self.tokens += sum(len(ids) for ids in completion_ids)
        return [
            float(self.task.grade(c, Question("reward", "", ref), self.rule).correct)
            for c, ref in zip(completions, reference)
        ]


def grpo_prompts(job: TrainingJob) -> list[dict[str, str]]:
    """One row per question of the records: the X_base prompt as text (it tokenizes back to the ids NLFT's X_base
    prompt has) and the standard answer the reward grades against."""
    tok = job.tokenizer
    rows, seen = [], set()
    for record, text in zip(job.records, job.texts):
        if text.question in seen:
            continue
        seen.add(text.question)
        if not text.reference:
            raise ValueError(
                f"--method grpo: record {text.id} has no standard answer (reference) to reward against"
            )
        ids = list(record.prompt_ids["base"])
        added = tok("")[
            "input_ids"
        ]  # what the tokenizer adds itself (a BOS token), which trl's call adds again
        if added and ids[: len(added)] == added:
            ids = ids[len(added) :]
        prompt = tok.decode(ids)
        if tok(prompt)["input_ids"] != list(record.prompt_ids["base"]):
            raise ValueError(
                f"--method grpo: record {text.id}: its prompt does not tokenize back to the same ids"
            )
        rows.append({"prompt": prompt, "reference": text.reference})
    return rows


class GRPOMethod(Method):
    name = "grpo"
    help = (
        "the RL baseline (ReFT-style): trl's GRPOTrainer on the same questions with a correctness reward, "
        "optionally after an SFT warm-up on the gold solutions (--grpo_warmup_epochs)"
    )
    settings_class = GRPOSettings

    def build_trainer(self, job: TrainingJob):
        import datasets
        from transformers import TrainingArguments
        from trl import GRPOConfig, GRPOTrainer

        settings = job.settings or GRPOSettings()
        if settings.grpo_warmup_epochs > 0 and not job.resuming:  # a checkpoint holds the warmed-up weights
            self.warm_up(job, settings)
        shared = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
        values = {k: getattr(v, "value", v) for k, v in ((n, getattr(job.args, n)) for n in shared)}
        # The same questions per optimizer step as the other methods' records: trl's batch counts completions.
        values["per_device_train_batch_size"] = (
            job.args.per_device_train_batch_size * settings.grpo_num_generations
        )
        values["train_sampling_strategy"] = "random"
        values["remove_unused_columns"] = False  # the reward reads the rows' standard answers
        config = GRPOConfig(
            **values,
            num_generations=settings.grpo_num_generations,
            max_completion_length=settings.grpo_max_completion_length,
            temperature=settings.grpo_temperature,
            beta=settings.grpo_beta,
        )
        prompts = grpo_prompts(job)
        per_step = (
            job.args.per_device_train_batch_size * job.args.gradient_accumulation_steps * job.args.world_size
        )
        if len(prompts) < per_step:
            raise ValueError(
                f"--method grpo: {job.data.data} has {len(prompts)} distinct questions, fewer than the {per_step} that one "
                "optimizer step samples for (per_device_train_batch_size x gradient_accumulation_steps x processes)"
            )
        return GRPOTrainer(
            model=job.model,
            reward_funcs=[CorrectnessReward(get_task(job.data.task), settings.grpo_reward_rule)],
            args=config,
            train_dataset=datasets.Dataset.from_list(prompts),
            processing_class=job.tokenizer,
            callbacks=job.callbacks,
        )

    def warm_up(self, job: TrainingJob, settings: GRPOSettings) -> None:
        """ReFT's warm-up: SFT on the gold solutions, in place on the LoRA weights, before the RL; nothing saved."""
        import datasets
        from trl import SFTTrainer

        args = sft_config(job.args)
        args.num_train_epochs, args.max_steps, args.save_strategy = settings.grpo_warmup_epochs, -1, "no"
        args.report_to = []
        logger.info("grpo: %g epochs of SFT warm-up on the gold solutions", settings.grpo_warmup_epochs)
        SFTTrainer(
            model=job.model,
            args=args,
            train_dataset=datasets.Dataset.from_list(GoldSFTMethod().rows(job)),
            processing_class=job.tokenizer,
        ).train()

    def run_info(self, trainer) -> dict:
        """Completion tokens generated, over all processes, since the run last started (a resumed run counts
        from its restart)."""
        import torch

        local = sum(f.tokens for f in trainer.reward_funcs if isinstance(f, CorrectnessReward))
        total = trainer.accelerator.reduce(torch.tensor(local, device=trainer.accelerator.device), "sum")
        return {"tokens_generated": int(total)}


METHODS: dict[str, Method] = {
    m.name: m for m in (NLFTMethod(), SFTMethod(), RFTMethod(), GoldSFTMethod(), GRPOMethod())
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {name!r}") from None


def settings_classes() -> tuple[type, ...]:
    """The settings dataclasses of the methods that have their own (parsed with the training config)."""
    return tuple(m.settings_class for m in METHODS.values() if m.settings_class is not None)
