"""How often the arithmetic judge blames a step that GPT-4's MathCritique critique also marks wrong.

    python bench/judge_agreement.py [--data ../shared/data/mathcritique/mathcritique_gsm8k_triples.jsonl] [--show N]

MathCritique (Xi et al., 2024) holds 100 wrong Llama-3-8B answers to GSM8K train questions, each with a GPT-4
critique that repeats every step ("Step sentence: ...") and marks it "Correctness of the step: Correct|Wrong".
For every answer whose final number is wrong, the arithmetic judge (``nlft judge --backend arithmetic``) names
one step; this script finds that step among the critique's step sentences (by text similarity, since the
critique drops the calculator annotations) and counts how often the critique marks it Wrong.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from difflib import SequenceMatcher
from pathlib import Path

from nlft.data.arithmetic import judge_response, strip_annotations
from nlft.tasks.answers import grade

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1].parent / "shared/data/mathcritique/mathcritique_gsm8k_triples.jsonl"
)
_STEP_RE = re.compile(
    r"Step sentence:\s*(.*?)\s*\n\s*Correctness of the step:\s*(Correct|Wrong)", re.S | re.I
)


def critique_steps(critique: str) -> list[tuple[str, bool]]:
    """(step sentence, marked wrong) for every step the critique rates."""
    return [
        (" ".join(m.group(1).split()), m.group(2).lower() == "wrong") for m in _STEP_RE.finditer(critique)
    ]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", strip_annotations(text)).strip().lower()


def match_step(step: str, rated: list[tuple[str, bool]], threshold: float = 0.6) -> tuple[str, bool] | None:
    """The critique step that best matches ``step`` (containment counts as a match), or None."""
    best, best_score = None, 0.0
    target = _norm(step)
    for sentence, wrong in rated:
        cand = _norm(sentence)
        score = (
            1.0
            if cand and (cand in target or target in cand)
            else SequenceMatcher(None, target, cand).ratio()
        )
        if score > best_score:
            best, best_score = (sentence, wrong), score
    return best if best_score >= threshold else None


def agreement(rows: list[dict]) -> dict:
    counts: Counter = Counter()
    per_reason: Counter = Counter()
    agree_reason: Counter = Counter()
    details = []
    for row in rows:
        if grade(row["model_answer"], row["gold_answer"]).correct:
            counts["final answer right (not judged)"] += 1
            continue
        verdict = judge_response(row["model_answer"], row["gold_answer"], question=row["question"])
        counts["judged"] += 1
        if verdict.judgment:
            counts["with a judgment"] += 1
        per_reason[verdict.reason] += 1
        rated = critique_steps(row["critique"])
        matched = match_step(verdict.blamed.text, rated) if verdict.blamed else None
        if verdict.blamed is None:
            counts["no step named (final answer only)"] += 1
        elif matched is None:
            counts["named step not found in the critique"] += 1
        else:
            counts["named step found in the critique"] += 1
            if matched[1]:
                counts["critique marks it Wrong"] += 1
                agree_reason[verdict.reason] += 1
        first_wrong = next((i for i, (_, wrong) in enumerate(rated) if wrong), None)
        if matched is not None and first_wrong is not None and rated[first_wrong][0] == matched[0]:
            counts["it is the first step the critique marks Wrong"] += 1
        details.append((row["id"], verdict, matched))
    return {"counts": counts, "per_reason": per_reason, "agree_reason": agree_reason, "details": details}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--show", type=int, default=0, help="print the first N judgments with the matched critique step"
    )
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(
            f"{args.data}: not found (MathCritique triples; see ../shared/data/mathcritique/SOURCE.md)",
            file=sys.stderr,
        )
        return 2
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    result = agreement(rows)
    c = result["counts"]
    judged = c["judged"]
    named = judged - c["no step named (final answer only)"]
    print(
        f"MathCritique: {len(rows)} answers, {judged} with a wrong final answer, {c['with a judgment']} judged"
    )
    for key in (
        "named step found in the critique",
        "named step not found in the critique",
        "no step named (final answer only)",
    ):
        print(f"  {key}: {c[key]}")
    print(
        f"  the critique marks the named step Wrong: {c['critique marks it Wrong']}/{named} named steps "
        f"({100 * c['critique marks it Wrong'] / max(named, 1):.0f}%), "
        f"{c['critique marks it Wrong']}/{judged} of all judged answers"
    )
    print(
        f"  ... and it is the first step the critique marks Wrong: {c['it is the first step the critique marks Wrong']}"
    )
    for reason, n in sorted(result["per_reason"].items()):
        print(f"  reason {reason:<13} {n:>3} answers, critique agrees on {result['agree_reason'][reason]}")
    for rid, verdict, matched in result["details"][: args.show]:
        print(f"\n{rid} [{verdict.reason}] {verdict.judgment}\n  critique: {matched}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
