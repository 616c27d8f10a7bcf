"""``nlft data make``: from a question set (a GSM8K split) to an NLFT dataset in one resumable command.

    OUT/samples.jsonl   the model's own answers, graded        (nlft sample)
    OUT/judged.jsonl    the same records, wrong ones judged    (nlft judge)
    OUT/data/           nlft.jsonl, sft.jsonl, manifest.json   (nlft data build)

Each step resumes from its file, so rerunning the same command after a crash, or with a larger ``--limit``
when the pool is too small for the requested size and mix, redoes nothing that is done.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..models.generation import BackendOptions, SamplingSettings, make_backend
from ..models.loading import free_accelerator_memory
from ..options import POSITIVE, opt
from ..records import Question
from ..tasks import Task, grader_for
from ..tasks.answers import NumericTask
from .builder import BuildResult, build_dataset
from .judging import JudgeOptions, JudgeSummary, judge_records, load_judge
from .sampling import QuestionOptions, SampleSettings, SampleSummary, load_question_set, sample_questions

SAMPLES_FILE = "samples.jsonl"
JUDGED_FILE = "judged.jsonl"
DATA_DIR = "data"


@dataclass
class MakeResult:
    sampled: SampleSummary
    judged: JudgeSummary
    built: BuildResult

    def summary(self) -> str:
        return "\n".join(
            [
                "1. sample",
                self.sampled.summary(),
                "2. judge",
                self.judged.summary(),
                "3. build",
                self.built.summary(),
            ]
        )


@dataclass(kw_only=True)
class MakeOptions(QuestionOptions, SampleSettings):
    """Everything ``nlft data make`` does besides its two back-ends (the sampler's and the judge's)."""

    out: str = opt(help="output folder")
    size: int = opt(type=POSITIVE, help="records in the dataset")
    ratio: str = opt("natural", help="correct:wrong, e.g. 1:1; or 'correct', 'wrong', 'natural'")
    build_seed: int = opt(42, help="seed of the record selection")
    progress: bool = opt(True, negate="no_progress", help="no progress bars")


def run_make(options: MakeOptions, sampler: BackendOptions, judge: JudgeOptions) -> MakeResult:
    """``nlft data make``: the questions of ``options``, sampled with ``sampler``, judged by ``judge``, built."""
    o = options
    return make_dataset(
        load_question_set(o.questions, split=o.split, limit=o.limit),
        o.out,
        sampler=sampler,
        settings=o.decoding(),
        judge=judge,
        size=o.size,
        ratio=o.ratio,
        seed=o.build_seed,
        samples=o.samples,
        templates=o.templates,
        system=o.system,
        task=grader_for(o.questions),
        rule=o.rule,
        progress=o.progress,
    )


def make_dataset(
    questions: Sequence[Question],
    out_dir: str | os.PathLike,
    *,
    sampler: BackendOptions,
    settings: SamplingSettings,
    judge: JudgeOptions,
    size: int,
    ratio: str | None = None,
    seed: int = 42,
    samples: int = 1,
    templates: str | Path | None = "math",
    system: str | None = None,
    task: Task | None = None,
    rule: str | None = None,
    progress: bool = True,
) -> MakeResult:
    """Sample with ``sampler`` and ``settings``, judge with ``judge``, build ``size`` records at ``ratio``.

    The judge is loaded only once sampling is done, so a local sampling model is freed first. What can be
    refused (the size and mix, results files of other settings, an empty question set) is refused before any
    model loads."""
    from ..jsonl import AppendLog
    from ..prompts import TemplateSet
    from .builder import parse_ratio
    from .judging import judge_stamp
    from .sampling import check_same_settings, sample_stamp

    if size < 1:
        raise ValueError(f"--size must be at least 1, got {size}")
    parse_ratio(ratio)
    if not questions:
        raise ValueError("no questions to sample")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: is a file, not a folder")
    task = task or NumericTask()
    rule = rule or task.default_rule
    task.check_rule(rule)
    template_set = TemplateSet.load(templates)
    stamp = sample_stamp(sampler.describe(), settings, template_set, system, rule)
    check_same_settings(
        next(iter(AppendLog.peek(out / SAMPLES_FILE).values()), None), stamp, out / SAMPLES_FILE, "samples"
    )
    judged = AppendLog.peek(out / JUDGED_FILE)
    first = next((r["judge"] for r in judged.values() if isinstance(r.get("judge"), dict)), None)
    check_same_settings(first, judge_stamp(judge), out / JUDGED_FILE, "judgments")
    sampled, judged = sample_and_judge(
        questions, out, sampler=sampler, settings=settings, judge=judge, samples=samples, templates=templates,
        system=system, task=task, rule=rule, progress=progress,
    )  # fmt: skip
    try:
        built = build_dataset(
            out / JUDGED_FILE,
            out / DATA_DIR,
            size=size,
            ratio=ratio,
            seed=seed,
            templates=templates,
            overwrite=True,  # the make's own data folder, rebuilt from its pool on every rerun
        )
    except ValueError as exc:
        raise ValueError(
            f"{exc}.\nThe samples and judgments so far are kept in {out}; rerun with a larger --limit (more questions) "
            "or more --samples to add to them."
        ) from None
    return MakeResult(sampled, judged, built)


def sample_and_judge(
    questions: Sequence[Question],
    out: Path,
    *,
    sampler: BackendOptions,
    settings: SamplingSettings,
    judge: JudgeOptions,
    samples: int = 1,
    templates: str | Path | None = "math",
    system: str | None = None,
    task: Task | None = None,
    rule: str | None = None,
    progress: bool = True,
) -> tuple[SampleSummary, JudgeSummary]:
    """Steps 1 and 2: ``OUT/samples.jsonl`` and ``OUT/judged.jsonl``, each resumed from its file. The sampling
    model is freed before the judge loads."""
    backend = make_backend(sampler, settings, templates)
    sampled = sample_questions(
        questions,
        out / SAMPLES_FILE,
        backend,
        samples=samples,
        templates=templates,
        system=system,
        task=task,
        rule=rule,
        provenance=sampler.describe(),
        progress=progress,
    )
    del backend
    free_accelerator_memory()
    judged = judge_records(
        out / SAMPLES_FILE, out / JUDGED_FILE, load_judge(judge, templates), progress=progress
    )
    return sampled, judged
