"""``nlft judge``: a written judgment for every wrong response (docs/method.md section 1; the X_judge prompt reads it).

Records graded wrong and without a judgment are judged; all other records pass through unchanged. Three
back-ends write the judgment:

* ``arithmetic`` (built in, offline): ``nlft.data.arithmetic.judge_response`` checks every calculation and the final
  answer and names the first wrong step;
* ``openai``: any OpenAI-compatible chat endpoint, through ``OpenAIBackend`` (retries with backoff and jitter);
* ``hf``: a local model through transformers, with the same prompt.

The model judges get a configurable prompt (``JudgePrompt``; default ``resources/judge/math.yaml``) that asks
whether the response is correct and, if not, why. As in the NLFT reference, a reply that declares the response
correct marks the record correct (``correct: true``, no judgment). A request that fails for good is recorded on
its record (``judge_error``, ``judgment: null``, ``correct: false``), reported in the summary, and retried by
the next run of the same command, which skips everything already judged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import resource_path
from ..files import check_output_file, check_same_inputs, read_yaml
from ..jsonl import AppendLog
from ..models.generation import BackendOptions, Request, SamplingSettings, describe_backend, make_backend
from ..options import POSITIVE, opt
from ..prompts import TemplateSet, chat_messages, fill
from ..records import Record, load_records
from ..tasks.answers import RULES
from .arithmetic import judge_response
from .sampling import check_same_settings, progress_bar

JUDGE_BACKENDS = ("arithmetic", "openai", "hf")
BUILTIN_JUDGE_PROMPTS = ("math",)
# Keys a judge writes on a record; a record judged again starts without them.
JUDGE_KEYS = ("judge", "judge_error", "judge_reply", "arithmetic")


@dataclass(frozen=True)
class JudgePrompt:
    """The judge's instructions: a system and a user message, and the line that declares a response correct."""

    system: str
    user: str
    correct_marker: str = "The response is correct."
    name: str = "custom"

    @classmethod
    def load(cls, spec: str | os.PathLike | None = None) -> JudgePrompt:
        """A built-in prompt (``math``, the default) or a YAML file with ``system``, ``user`` and optionally
        ``correct_marker``; placeholders ``{question} {response} {reference} {system}``."""
        spec = spec or "math"
        if str(spec) in BUILTIN_JUDGE_PROMPTS:
            path = resource_path("judge", f"{spec}.yaml")
        else:
            path = Path(spec)
            if not path.exists():
                raise FileNotFoundError(
                    f"judge prompt '{spec}': neither a built-in ({', '.join(BUILTIN_JUDGE_PROMPTS)}) nor a file"
                )
        data = read_yaml(path, "judge prompt")
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: a judge prompt is a YAML mapping with 'system' and 'user'")
        missing = [k for k in ("system", "user") if not isinstance(data.get(k), str)]
        if missing:
            raise ValueError(f"{path}: judge prompt is missing '{missing[0]}' (a string)")
        unknown = set(data) - {"name", "system", "user", "correct_marker"}
        if unknown:
            raise ValueError(f"{path}: unknown keys in judge prompt: {', '.join(sorted(unknown))}")
        marker = str(data.get("correct_marker") or cls.correct_marker)
        if not _words(marker):
            raise ValueError(f"{path}: correct_marker must contain words")
        return cls(data["system"], data["user"], marker, str(data.get("name", path.stem)))

    def fingerprint(self) -> str:
        """A short hash of the wording (a rerun with an edited prompt file is not mixed with earlier judgments)."""
        import hashlib

        text = f"{self.system}\x00{self.user}\x00{self.correct_marker}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def messages(self, record: Record, default_system: str = "") -> list[dict[str, str]]:
        values = {
            "question": record.question,
            "response": record.response,
            "reference": record.reference or "",
            "system": record.system if record.system is not None else default_system,
        }
        return chat_messages(fill(self.system, values), fill(self.user, values))

    def says_correct(self, reply: str) -> bool:
        """Whether the reply declares the response correct: a line that is only the marker, give or take case,
        markdown (``###``, ``**``), quotes and final punctuation. A sentence that merely contains the words
        ("The response is correct up to step 2, but ...") does not count."""
        marker = _words(self.correct_marker)
        return any(_words(line) == marker for line in reply.splitlines()) or _words(reply) == marker


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower().replace("’", "'")))


@dataclass
class Verdict:
    """A judge's finding on one record: correct, or a judgment, or an error."""

    correct: bool = False
    judgment: str | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# The arithmetic judge reads a response line by line; beyond this size it refuses (a per-record judge error)
# rather than spend minutes and gigabytes on text no model answer is.
MAX_JUDGED_CHARS = 100_000


class ArithmeticJudge:
    """The offline judge: checks calculations and the final answer (``nlft.data.arithmetic``)."""

    def __init__(self, rule: str = "authors"):
        self.rule = rule

    def describe(self) -> dict[str, Any]:
        return {"backend": "arithmetic", "rule": self.rule}

    def judge(self, records: Iterable[Record]) -> Iterator[tuple[Record, Verdict]]:
        for record in records:
            if len(record.response) > MAX_JUDGED_CHARS:
                yield (
                    record,
                    Verdict(
                        error=f"cannot judge: the response is {len(record.response):,} characters long, more than "
                        f"the arithmetic judge reads ({MAX_JUDGED_CHARS:,})"
                    ),
                )
                continue
            try:
                found = judge_response(
                    record.response, record.reference or "", question=record.question, rule=self.rule
                )
            except ValueError as exc:
                yield record, Verdict(error=f"cannot judge: {exc}")
                continue
            yield record, Verdict(found.correct, found.judgment, detail={"arithmetic": found.to_dict()})


class ModelJudge:
    """A language model as judge, through ``OpenAIBackend`` or ``HFBackend``."""

    def __init__(
        self,
        backend,
        prompt: JudgePrompt | None = None,
        *,
        default_system: str = "",
        describe: dict | None = None,
    ):
        self.backend = backend
        self.prompt = prompt or JudgePrompt.load()
        self.default_system = default_system
        self._describe = describe or describe_backend(backend)

    def describe(self) -> dict[str, Any]:
        settings = getattr(self.backend, "settings", None)
        return {
            **self._describe,
            "prompt": self.prompt.name,
            "prompt_wording": self.prompt.fingerprint(),
            "max_new_tokens": getattr(settings, "max_new_tokens", None),
        }

    def judge(self, records: Iterable[Record]) -> Iterator[tuple[Record, Verdict]]:
        by_key = {}
        requests = []
        for record in records:
            by_key[record.id] = record
            requests.append(Request(record.id, messages=self.prompt.messages(record, self.default_system)))
        for request, completion in self.backend.generate(requests):
            record = by_key[request.key]
            if not completion.ok:
                yield record, Verdict(error=completion.error or "no reply")
            elif not completion.text.strip():
                yield record, Verdict(error="empty reply")
            elif self.prompt.says_correct(completion.text):
                yield record, Verdict(True, None, detail={"judge_reply": completion.text.strip()})
            else:
                yield record, Verdict(False, completion.text.strip())


@dataclass
class JudgeOptions:
    """Which judge: ``arithmetic``, or a model (``openai``/``hf``) described by ``model``, with ``prompt``."""

    backend: str = opt(
        "arithmetic",
        choices=JUDGE_BACKENDS,
        group="judging",
        help="arithmetic: the built-in offline checker; openai/hf: a model with the judge prompt",
    )
    model: BackendOptions | None = None  # for openai / hf; its ``backend`` field is set from ``backend``
    prompt: str | None = opt(
        None,
        flag="judge_prompt",
        group="judging",
        help="judge prompt: built-in 'math' or a YAML file with system, user, correct_marker; unset: math",
    )
    max_new_tokens: int = opt(
        1024,
        type=POSITIVE,
        flag="judge_max_new_tokens",
        group="judging",
        help="openai/hf: length limit of a judgment",
    )
    rule: str = opt(
        "authors", choices=RULES, group="judging", help="arithmetic: how the final answer is read"
    )


@dataclass(kw_only=True)
class JudgeFiles:
    """What ``nlft judge`` reads and writes (``run_judge``)."""

    source: str = opt(
        positional=True, metavar="records", help="graded records: .jsonl, .json or a Hugging Face dataset"
    )
    out: str = opt(help="results file (.jsonl), appended to and resumed from")
    templates: str = opt("math", help="template set whose system prompt fills {system} in the judge prompt")
    skip_invalid: bool = opt(False, help="skip invalid record lines instead of stopping")
    progress: bool = opt(True, negate="no_progress", help="no progress bar")


def load_judge(options: JudgeOptions, templates: str | Path | TemplateSet | None = "math"):
    """An ``ArithmeticJudge`` or a ``ModelJudge`` (greedy decoding, so that a rerun judges the same way)."""
    if options.backend not in JUDGE_BACKENDS:
        raise ValueError(f"judge back-end '{options.backend}': choose from {', '.join(JUDGE_BACKENDS)}")
    if options.backend == "arithmetic":
        return ArithmeticJudge(options.rule)
    if options.model is None or not options.model.model:
        raise ValueError(f"the {options.backend} judge needs a model (--judge-model / --model)")
    model = replace(options.model, backend=options.backend)
    settings = SamplingSettings(max_new_tokens=options.max_new_tokens, temperature=0.0)
    template_set = TemplateSet.load(templates)
    backend = make_backend(model, settings, template_set)
    return ModelJudge(
        backend,
        JudgePrompt.load(options.prompt),
        default_system=template_set.system,
        describe=model.describe(),
    )


def needs_judgment(record: Record) -> bool:
    return not record.is_correct and record.judgment is None


@dataclass
class JudgeSummary:
    path: Path
    records: int
    passed_through: int  # correct, or judged already in the input
    to_judge: int
    earlier: int  # judged by an earlier run
    judged_wrong: int  # in the whole file: wrong records with a judgment written by the judge
    judged_correct: int  # the judge found the response correct after all
    failed: list[dict] = field(default_factory=list)  # records whose judging failed for good (in the file)
    retried: int = 0  # failures of an earlier run redone in this one

    def summary(self) -> str:
        lines = [
            f"{self.path}: {self.records} records; {self.to_judge} needed a judgment: {self.judged_wrong} judged wrong, "
            f"{self.judged_correct} found correct by the judge, {len(self.failed)} failed",
            f"  {self.passed_through} passed through (correct, or already judged)"
            + (f"; {self.earlier} judged by an earlier run" if self.earlier else "")
            + (f"; {self.retried} earlier failures retried" if self.retried else ""),
        ]
        if self.failed:
            lines.append(
                f"  failed (judge_error on the record; rerun the same command to retry): {_ids(self.failed)}"
            )
        return "\n".join(lines)


def _ids(rows: list[dict], limit: int = 10) -> str:
    shown = ", ".join(str(r["id"]) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def judged_row(record: Record, verdict: Verdict, stamp: dict[str, Any]) -> dict:
    """The output row of a judged record. A record found correct carries no judgment."""
    row = record.to_dict()
    for key in JUDGE_KEYS:
        row.pop(key, None)
    row["judgment"] = None if verdict.correct or verdict.error else verdict.judgment
    row["correct"] = bool(verdict.correct) and not verdict.error
    row["judge"] = {
        **stamp,
        "verdict": "error" if verdict.error else ("correct" if verdict.correct else "wrong"),
    }
    if verdict.error:
        row["judge_error"] = verdict.error
    row.update(verdict.detail)
    return row


def run_judge(
    source: str | os.PathLike,
    out: str | os.PathLike,
    options: JudgeOptions,
    *,
    templates: str | Path | TemplateSet | None = "math",
    skip_invalid: bool = False,
    progress: bool = True,
) -> JudgeSummary:
    """``nlft judge``: the output path, the records and a results file of other settings are checked before a
    judge model loads."""
    out = check_output_file(out, inputs=(source,))
    records = load_records(source, skip_invalid=skip_invalid)
    if not records:
        raise ValueError(f"{source}: no records to judge")
    ids = {r.id for r in records if needs_judgment(r)}
    existing = AppendLog.peek(out)
    check_judge_file(existing, records, out)
    first = next(
        (
            row["judge"]
            for row in existing.values()
            if row["id"] in ids and isinstance(row.get("judge"), dict)
        ),
        None,
    )
    check_same_settings(first, judge_stamp(options), out, "judgments")
    return judge_records(records, out, load_judge(options, templates), progress=progress)


def check_judge_file(rows: dict[str, dict], records: list, out: Path) -> None:
    """An existing ``--out`` is resumed only when it is this command's results on these records: every row a record
    of the input (its id, question and response), nothing else. A file of the user's, or judgments of other
    records under the same ids, is refused untouched."""
    by_id = {r.id: r for r in records}
    for key, row in rows.items():
        if key not in by_id or not {"question", "response"} <= set(row):
            from ..console import printable

            raise ValueError(
                f"{out}: holds rows that are not judgments of these records (id {printable(key)!r}); nlft judge "
                "resumes only its own results on the same records: choose another --out"
            )
    check_same_inputs(
        rows, {r.id: {"question": r.question, "response": r.response} for r in records}, out, "judgments"
    )


def judge_stamp(options: JudgeOptions) -> dict[str, Any]:
    """What a judgment depends on (the judge's ``describe``), worked out without loading a judge model."""
    if options.backend == "arithmetic":
        return ArithmeticJudge(options.rule).describe()
    if options.model is None:
        raise ValueError(f"the {options.backend} judge needs a model (--judge-model / --model)")
    prompt = JudgePrompt.load(options.prompt)
    return {
        **replace(options.model, backend=options.backend).describe(),
        "prompt": prompt.name,
        "prompt_wording": prompt.fingerprint(),
        "max_new_tokens": options.max_new_tokens,
    }


def judge_records(
    source,
    out: str | os.PathLike,
    judge,
    *,
    skip_invalid: bool = False,
    progress: bool = True,
) -> JudgeSummary:
    """Judge every wrong, unjudged record of ``source`` with ``judge`` and write all records to ``out``.

    ``out`` is an append-only results file: rerunning skips records already there, except those whose judging
    failed, which are dropped and judged again. ``source`` is a records file or already loaded records.
    """
    records = source if isinstance(source, list) else load_records(source, skip_invalid=skip_invalid)
    out = check_output_file(out, inputs=(source,) if not isinstance(source, list) else ())
    stamp = judge.describe()
    with AppendLog(out) as log:
        check_judge_file({row["id"]: row for row in log.rows()}, records, out)
        failed_before = [row["id"] for row in log.rows() if row.get("judge_error")]
        retried = log.remove(failed_before)
        ids = {r.id for r in records if needs_judgment(r)}
        judged_before = next(
            (row["judge"] for row in log.rows() if row["id"] in ids and isinstance(row.get("judge"), dict)),
            None,
        )
        check_same_settings(judged_before, stamp, out, "judgments")
        earlier = sum(1 for r in records if needs_judgment(r) and r.id in log)
        passed = 0
        for record in records:  # correct and already-judged records are written as they are, first
            if not needs_judgment(record):
                passed += 1
                if record.id not in log:
                    log.append(record.to_dict())
        todo = [r for r in records if needs_judgment(r) and r.id not in log]
        bar = progress_bar(len(records) - passed, earlier, "judging", "record", progress)
        counts = {"wrong": 0, "correct": 0, "failed": 0}
        for record, verdict in judge.judge(todo):
            log.append(judged_row(record, verdict, stamp))
            counts["failed" if verdict.error else ("correct" if verdict.correct else "wrong")] += 1
            bar.update(1)
            bar.set_postfix(counts, refresh=False)
        bar.close()
        rows = [row for row in log.rows() if row["id"] in ids]
    verdicts = [row.get("judge", {}).get("verdict") for row in rows]
    return JudgeSummary(
        path=out,
        records=len(records),
        passed_through=passed,
        to_judge=len(ids),
        earlier=earlier,
        judged_wrong=verdicts.count("wrong"),
        judged_correct=verdicts.count("correct"),
        failed=[row for row in rows if row.get("judge_error")],
        retried=retried,
    )
