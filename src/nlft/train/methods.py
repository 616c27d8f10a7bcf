"""Training methods: what ``nlft train --method`` can be, one table entry each.

Every method trains the same model (the same LoRA, schedule and seed, from ``nlft.train.run``) on the same encoded
records; a method only says which trainer runs and on what it is fed:

* ``nlft``: ``NLFTTrainer`` on all records, with the NLFT loss (docs/method.md);
* ``sft``: trl's ``SFTTrainer``, default loss, on exactly the token ids NLFT trains on (the X_base prompt,
  masked, and the same response; docs/method.md Q8);
* ``rft`` and ``sft-gold``: the same SFT on the correct responses only, or on the questions' gold solutions;
* ``grpo``: trl's ``GRPOTrainer`` on the same questions (the X_base prompt), rewarded 1 for a correct final
  answer and 0 otherwise, optionally after an SFT warm-up on the gold solutions (as ReFT does);
* ``dft``: trl's SFT with ``loss_type="dft"`` (each token's loss scaled by its detached probability) on exactly
  ``sft``'s token ids;
* ``sdft`` and ``sdpo``: trl's experimental self-distillation trainers on the same questions: the model's own
  rollouts, pulled toward the model shown privileged context (``sdft``: the standard answer, as NLFT's X_std
  prompt; ``sdpo``: the judgment as environment feedback, and a successful sibling rollout where there is one).

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

    def config(self, job: TrainingJob):
        """trl's ``SFTConfig`` it trains with (the shared schedule; variants change the loss)."""
        return sft_config(job.args)

    def build_trainer(self, job: TrainingJob):
        import datasets
        from trl import SFTTrainer

        return SFTTrainer(
            model=job.model,
            args=self.config(job),
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


class DFTMethod(SFTMethod):
    name = "dft"
    help = (
        "Dynamic Fine-Tuning (arXiv 2508.05629): trl's SFTTrainer with loss_type='dft', each token's loss scaled by "
        "its detached probability, on exactly the token ids sft trains on"
    )

    def config(self, job: TrainingJob):
        config = sft_config(job.args)
        config.loss_type = "dft"
        return config


def check_rollouts(settings, prefix: str, *, least: int, why: str = "") -> None:
    """The rollout settings every on-policy method has (``<prefix>_num_generations``, ``_max_completion_length``,
    ``_temperature``), checked alike."""
    generations = getattr(settings, f"{prefix}_num_generations")
    length = getattr(settings, f"{prefix}_max_completion_length")
    temperature = getattr(settings, f"{prefix}_temperature")
    if generations < least:
        reason = f" ({why})" if why else ""
        raise ValueError(f"--{prefix}_num_generations must be at least {least}{reason}, got {generations}")
    if length < 1:
        raise ValueError(f"--{prefix}_max_completion_length must be at least 1, got {length}")
    if not temperature > 0:
        raise ValueError(f"--{prefix}_temperature must be above 0, got {temperature}")


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
        check_rollouts(self, "grpo", least=2, why="GRPO compares a group")
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
            float(self.task.grade(_text(c), Question("reward", "", ref), self.rule).correct)
            for c, ref in zip(completions, reference)
        ]


def _text(completion) -> str:
    """A completion's text: trl hands conversational rows' completions over as messages."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return completion


def prompt_text(job: TrainingJob, ids: list[int], method: str, record_id: str) -> str:
    """A prompt's ids as the text trl tokenizes back to exactly those ids (without the BOS token the tokenizer adds
    itself, which trl's call adds again)."""
    tok = job.tokenizer
    ids = list(ids)
    added = tok("")["input_ids"]
    text = tok.decode(ids[len(added) :] if added and ids[: len(added)] == added else ids)
    if tok(text)["input_ids"] != ids:
        raise ValueError(
            f"--method {method}: record {record_id}: its prompt does not tokenize back to the same ids"
        )
    return text


def questions_of(job: TrainingJob, method: str) -> list[tuple[EncodedRecord, Any]]:
    """The first record of each distinct question (encoded, and its text), in the records' order; every one
    must have a standard answer."""
    out, seen = [], set()
    for record, text in zip(job.records, job.texts):
        if text.question in seen:
            continue
        seen.add(text.question)
        if not text.reference:
            raise ValueError(f"--method {method}: record {text.id} has no standard answer (reference)")
        out.append((record, text))
    return out


def grpo_prompts(job: TrainingJob) -> list[dict[str, str]]:
    """One row per question of the records: the X_base prompt as text (it tokenizes back to the ids NLFT's X_base
    prompt has) and the standard answer the reward grades against."""
    return [
        {"prompt": prompt_text(job, record.prompt_ids["base"], "grpo", text.id), "reference": text.reference}
        for record, text in questions_of(job, "grpo")
    ]


def questions_per_forward(batch: int, generations: int) -> int:
    """How many questions' rollouts one forward pass of an on-policy trainer holds: the most that keep it within
    ``max(batch, generations)`` completions and divide ``batch``. A forward is then never larger than another
    method's batch of records, or one question's group: GRPO's 4 questions x 8 rollouts in one forward held
    float32 logits over SmolLM2's 49,152-token vocabulary for 32 completions at once, past 24 GB."""
    room = max(batch, generations)
    return max(q for q in range(1, batch + 1) if batch % q == 0 and q * generations <= room)


def trainer_values(job: TrainingJob, generations: int) -> dict[str, Any]:
    """The shared ``TrainingArguments`` for an on-policy trl trainer: the same questions per optimizer step as the
    other methods' records (trl's batch counts completions, ``generations`` per question), split into forwards of
    ``questions_per_forward`` questions with gradient accumulation. trl still generates once per optimizer step
    (its ``steps_per_generation`` defaults to the accumulation steps) and splits the rollouts across them."""
    from transformers import TrainingArguments

    shared = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    values = {k: getattr(v, "value", v) for k, v in ((n, getattr(job.args, n)) for n in shared)}
    batch = job.args.per_device_train_batch_size
    questions = questions_per_forward(batch, generations)
    values["per_device_train_batch_size"] = questions * generations
    values["gradient_accumulation_steps"] = job.args.gradient_accumulation_steps * (batch // questions)
    values["train_sampling_strategy"] = "random"
    values["remove_unused_columns"] = False  # the reward and the teacher read the rows' other columns
    return values


def resumable(trainer_class):
    """``trainer_class`` (one of trl's on-policy trainers) with its question order a function of the seed and the
    epoch. trl's ``RepeatSampler`` shuffles with one generator that runs on from epoch to epoch, and has no
    ``set_epoch``; a run resumed from a checkpoint starts a fresh one and would see another order than the run
    it continues. Reseeding it at each epoch (the first epoch keeps trl's own order) makes a resumed run end where
    an uninterrupted one ends. Nothing else of the trainer changes."""

    class Resumable(trainer_class):
        def _get_train_sampler(self, dataset=None):
            sampler = super()._get_train_sampler(dataset)
            generator, seed = getattr(sampler, "generator", None), getattr(sampler, "seed", None) or 0
            if generator is not None:
                sampler.set_epoch = lambda epoch: generator.manual_seed((seed + 1_000_003 * epoch) % 2**63)
            return sampler

    Resumable.__name__ = Resumable.__qualname__ = trainer_class.__name__
    return Resumable


def check_questions(job: TrainingJob, method: str, rows: list) -> None:
    per_step = (
        job.args.per_device_train_batch_size * job.args.gradient_accumulation_steps * job.args.world_size
    )
    if len(rows) < per_step:
        raise ValueError(
            f"--method {method}: {job.data.data} has {len(rows)} distinct questions, fewer than the {per_step} that one "
            "optimizer step samples for (per_device_train_batch_size x gradient_accumulation_steps x processes)"
        )


class GRPOMethod(Method):
    name = "grpo"
    help = (
        "the RL baseline (ReFT-style): trl's GRPOTrainer on the same questions with a correctness reward, "
        "optionally after an SFT warm-up on the gold solutions (--grpo_warmup_epochs)"
    )
    settings_class = GRPOSettings

    def build_trainer(self, job: TrainingJob):
        import datasets
        from trl import GRPOConfig, GRPOTrainer

        settings = job.settings or GRPOSettings()
        if settings.grpo_warmup_epochs > 0 and not job.resuming:  # a checkpoint holds the warmed-up weights
            self.warm_up(job, settings)
        config = GRPOConfig(
            **trainer_values(job, settings.grpo_num_generations),
            num_generations=settings.grpo_num_generations,
            max_completion_length=settings.grpo_max_completion_length,
            temperature=settings.grpo_temperature,
            beta=settings.grpo_beta,
        )
        prompts = grpo_prompts(job)
        check_questions(job, "grpo", prompts)
        return resumable(GRPOTrainer)(
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
        return _generated_tokens(trainer)


class GeneratedTokens:
    """A callback of trl's self-distillation trainers: counts the completion tokens each batch generated."""

    def __init__(self):
        self.tokens = 0

    def on_self_distillation_batch_prepared(self, *, completion_ids=None, teacher_attention_mask=None, **_):
        if completion_ids is not None and teacher_attention_mask is not None:
            self.tokens += int(teacher_attention_mask[:, -completion_ids.shape[1] :].sum())

    def __getattr__(self, name: str):
        if name.startswith("on_"):  # every other Trainer event: nothing to do
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def _generated_tokens(trainer) -> dict:
    """Completion tokens generated, over all processes, since the run last started."""
    import torch

    local = sum(c.tokens for c in trainer.callback_handler.callbacks if isinstance(c, GeneratedTokens))
    local += sum(f.tokens for f in getattr(trainer, "reward_funcs", []) if isinstance(f, CorrectnessReward))
    total = trainer.accelerator.reduce(torch.tensor(local, device=trainer.accelerator.device), "sum")
    return {"tokens_generated": int(total)}


@dataclass
class SDFTSettings:
    """``--method sdft``: trl's ``SDFTConfig`` defaults (top-k logit distillation, the frozen initial model as the
    teacher), except one rollout per question and completions as long as ``grpo``'s."""

    sdft_num_generations: int = field(default=1, metadata={"help": "rollouts per question at each step"})
    sdft_max_completion_length: int = field(default=256, metadata={"help": "longest rollout, in tokens"})
    sdft_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the rollouts"})
    sdft_teacher: str = field(
        default="base",
        metadata={
            "help": "the teacher: base (the initial model), live (the current one) or ema (a moving average)",
            "choices": ["base", "live", "ema"],
        },
    )

    def __post_init__(self) -> None:
        check_rollouts(self, "sdft", least=1)
        if self.sdft_teacher not in ("base", "live", "ema"):
            raise ValueError(f"--sdft_teacher must be base, live or ema, not {self.sdft_teacher!r}")


def sdft_rows(job: TrainingJob) -> list[dict[str, str]]:
    """One row per question: the X_base prompt (the student's) and the X_std prompt (the teacher's, whole: trl's
    ``teacher_prompt_template`` is set to ``{privileged_context}``), both as text that tokenizes to NLFT's ids.
    Every encoded record has both prompts already."""
    return [
        {
            "prompt": prompt_text(job, record.prompt_ids["base"], "sdft", text.id),
            "privileged_context": prompt_text(job, record.prompt_ids["std"], "sdft", text.id),
        }
        for record, text in questions_of(job, "sdft")
    ]


class SDFTMethod(Method):
    name = "sdft"
    help = (
        "self-distillation fine-tuning (arXiv 2601.19897): trl's experimental SDFTTrainer on the records' questions; "
        "the model's own rollouts distilled toward the model shown the standard answer (the teacher's prompt is "
        "NLFT's X_std prompt), on-policy"
    )
    settings_class = SDFTSettings

    def build_trainer(self, job: TrainingJob):
        import datasets
        from trl.experimental.sdft import SDFTConfig, SDFTTrainer

        settings = job.settings or SDFTSettings()
        rows = sdft_rows(job)
        check_questions(job, "sdft", rows)
        config = SDFTConfig(
            **trainer_values(job, settings.sdft_num_generations),
            num_generations=settings.sdft_num_generations,
            max_completion_length=settings.sdft_max_completion_length,
            temperature=settings.sdft_temperature,
            teacher_model_kind=settings.sdft_teacher,
            max_prompt_length=job.data.max_length,
        )
        # The teacher's prompt is X_std whole (its own layout, not the student's prompt with the answer appended).
        # trl's config insists on both placeholders when it is made; the trainer only formats the template.
        config.teacher_prompt_template = "{privileged_context}"
        return resumable(SDFTTrainer)(
            model=job.model,
            args=config,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=job.tokenizer,
            callbacks=[*job.callbacks, GeneratedTokens()],
        )

    def run_info(self, trainer) -> dict:
        return _generated_tokens(trainer)


@dataclass
class SDPOSettings:
    """``--method sdpo``: trl's ``SDPOConfig`` defaults (an EMA teacher, sampled-token distillation), with the
    records' judgments as environment feedback and completions as long as ``grpo``'s."""

    sdpo_num_generations: int = field(default=4, metadata={"help": "rollouts per question at each step"})
    sdpo_max_completion_length: int = field(default=256, metadata={"help": "longest rollout, in tokens"})
    sdpo_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the rollouts"})
    sdpo_feedback_template: str = field(
        default="\nThe following is feedback from your unsuccessful earlier attempt:\n\n{feedback_raw}\n\n",
        metadata={
            "help": "how a judgment is put to the teacher ({feedback_raw} is the judge's text; trl's default)"
        },
    )
    sdpo_reward_rule: str | None = field(
        default=None, metadata={"help": "the grader's rule for the reward (default: the task's)"}
    )

    def __post_init__(self) -> None:
        check_rollouts(self, "sdpo", least=2, why="a successful sibling is the teacher's demonstration")
        if "{feedback_raw}" not in self.sdpo_feedback_template:
            raise ValueError("--sdpo_feedback_template must contain {feedback_raw} (where the judgment goes)")


def sdpo_rows(job: TrainingJob) -> list[dict[str, Any]]:
    """One row per question: the X_base prompt as chat messages (trl rebuilds the teacher's user turn from them),
    the standard answer for the reward, and the first judgment of the question's wrong records as feedback."""
    from ..prompts import TemplateSet, chat_messages

    templates = TemplateSet.load(job.data.templates)
    judgments: dict[str, str] = {}
    for text in job.texts:
        if text.judgment and text.question not in judgments:
            judgments[text.question] = text.judgment
    rows = []
    for record, text in questions_of(job, "sdpo"):
        messages = chat_messages(*templates.messages("base", text))
        rendered = job.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        rendered = (
            rendered["input_ids"] if isinstance(rendered, dict) or hasattr(rendered, "keys") else rendered
        )
        if list(rendered) != list(record.prompt_ids["base"]):
            raise ValueError(
                f"--method sdpo: record {text.id}: the tokenizer's chat template does not render the X_base prompt as "
                "nlft does (trl's SDPO needs chat messages to reprompt the teacher); use a model with a chat template"
            )
        rows.append(
            {
                "prompt": messages,
                "reference": text.reference,
                "privileged_context": judgments.get(text.question),
            }
        )
    return rows


def _resume_ema_teacher(trainer) -> None:
    """trl keeps SDPO's EMA teacher (a LoRA adapter) in memory and makes it afresh from zeros when training begins,
    which a resumed run cannot do: the checkpoint already holds the teacher adapter (PEFT saves every adapter),
    and making it again fails. Here a run that finds the teacher adapter in its model carries on from its
    weights, so a resumed run ends where an uninterrupted one ends."""
    from trl.experimental.sdpo.teacher_sync import PEFTAdapterEMACallback

    for callback in trainer.callback_handler.callbacks:
        if not isinstance(callback, PEFTAdapterEMACallback):
            continue
        original = callback._initialize_teacher_adapter

        def initialize(callback=callback, original=original):
            model = (
                callback.accelerator.unwrap_model(callback.model) if callback.accelerator else callback.model
            )
            name = callback.teacher_adapter_name
            if callback._initialized or name not in getattr(model, "peft_config", {}):
                return original()
            from peft import get_peft_model_state_dict

            callback.teacher_adapter_config = model.peft_config[name]
            state = get_peft_model_state_dict(model, adapter_name=name)
            callback.shadow_weights = {k: v.detach().clone() for k, v in state.items()}
            callback._initialized = True

        callback._initialize_teacher_adapter = initialize


class SDPOMethod(Method):
    name = "sdpo"
    help = (
        "self-distillation policy optimization (arXiv 2601.20802): trl's experimental SDPOTrainer on the records' "
        "questions, rewarded by the task's grader; the teacher is the model reprompted with the question's judgment "
        "(the judge's words) and a successful sibling rollout where there is one"
    )
    settings_class = SDPOSettings

    def build_trainer(self, job: TrainingJob):
        import datasets
        from trl.experimental.sdpo import SDPOConfig, SDPOTrainer

        settings = job.settings or SDPOSettings()
        rows = sdpo_rows(job)
        check_questions(job, "sdpo", rows)
        config = SDPOConfig(
            **trainer_values(job, settings.sdpo_num_generations),
            num_generations=settings.sdpo_num_generations,
            max_completion_length=settings.sdpo_max_completion_length,
            temperature=settings.sdpo_temperature,
            include_environment_feedback=True,
            feedback_template=settings.sdpo_feedback_template,
            max_prompt_length=job.data.max_length,
        )
        trainer = resumable(SDPOTrainer)(
            model=job.model,
            reward_funcs=[CorrectnessReward(get_task(job.data.task), settings.sdpo_reward_rule)],
            args=config,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=job.tokenizer,
            callbacks=job.callbacks,
        )
        _resume_ema_teacher(trainer)
        return trainer

    def run_info(self, trainer) -> dict:
        return _generated_tokens(trainer)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        NLFTMethod(),
        SFTMethod(),
        RFTMethod(),
        GoldSFTMethod(),
        DFTMethod(),
        GRPOMethod(),
        SDFTMethod(),
        SDPOMethod(),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {name!r}") from None


def settings_classes() -> tuple[type, ...]:
    """The settings dataclasses of the methods that have their own (parsed with the training config)."""
    return tuple(m.settings_class for m in METHODS.values() if m.settings_class is not None)
