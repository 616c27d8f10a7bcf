"""What ``nlft:mini`` can do: the properties NLFT needs of a model, measured.

    python bench/mini_properties.py [--model nlft:mini] [--test 500] [--out bench/results/mini-properties.json]

1. **Accuracy**: greedy accuracy on the first ``--test`` problems of the ``mini-math`` test split, under the paper
   protocol's prompt (X_base); and of its wrong answers, the share the arithmetic judge judges by naming a step
   (``The step "..." is wrong``) rather than only the final answer.
2. **Comprehension of X_std**: the mean probability of the gold solution's tokens under X_std (question +
   standard answer) against under X_base (the question alone), on the same problems.
3. **Comprehension of X_judge**: on the model's own wrong answers judged by the arithmetic judge, the mean
   log(p_judge / p_base) over the tokens of the step the judgment names, against over the other tokens.
4. **Saliency precision and recall** (``nlft locate``, ``nlft.see.localization``): with the default weighting, the
   share of blamed tokens that lie in the judged step (beside the share of tokens there: chance), and the
   share of wrong records with a blamed token there.

Everything goes through the project's own code: the task, the paper protocol, the arithmetic judge, the
trainer's scoring (``saliency.score_records``) and weighting. Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from nlft.data.arithmetic import judge_response
from nlft.evals.protocols import PaperProtocol
from nlft.models.generation import HFBackend, SamplingSettings
from nlft.models.loading import load_model
from nlft.prompts import RecordEncoder
from nlft.records import Record
from nlft.see.localization import judged_quote, localize
from nlft.see.saliency import score_records
from nlft.tasks import get_task


def answers(model, tokenizer, questions, max_new_tokens: int, batch_size: int):
    """Greedy responses to ``questions`` under the paper protocol's prompt, in order."""
    prompted = PaperProtocol("math").build(questions)
    backend = HFBackend(
        model, tokenizer, SamplingSettings(max_new_tokens=max_new_tokens), batch_size=batch_size
    )
    by_key = {r.key: c.text or "" for r, c in backend.generate([p.request for p in prompted])}
    return [by_key[p.request.key] for p in prompted]


def measure(model_name: str, n_test: int, batch_size: int = 50, max_new_tokens: int = 200) -> dict:
    task = get_task("mini-math")
    model, tokenizer, _ = load_model(model_name, dtype="float32", device="cpu")
    questions = task.load("test", limit=n_test)
    t0 = time.perf_counter()
    responses = answers(model, tokenizer, questions, max_new_tokens, batch_size)
    seconds = time.perf_counter() - t0
    grades = [task.grade(r, q) for r, q in zip(responses, questions)]
    right = sum(g.correct for g in grades)
    wrong = [(q, r) for q, r, g in zip(questions, responses, grades) if not g.correct]
    judged = []
    for i, (q, r) in enumerate(wrong):
        gold = task.gold(q)
        verdict = judge_response(r, q.reference or f"#### {gold}", question=q.question)
        if not verdict.correct and verdict.judgment:
            judged.append(
                Record(
                    id=f"wrong-{i}",
                    question=q.question,
                    response=r,
                    reference=q.reference,
                    judgment=verdict.judgment,
                )
            )
    naming = [rec for rec in judged if judged_quote(rec.judgment) is not None]

    encoder = RecordEncoder(tokenizer, "math", max_length=1024)
    # 2. X_std: gold solutions as correct records, p_std against p_base on the same tokens.
    gold_records = [
        Record(id=f"gold-{i}", question=q.question, response=q.reference, reference=q.reference, correct=True)
        for i, q in enumerate(questions)
    ]
    enc = encoder.encode_all(gold_records).records
    scored = score_records(
        model, tokenizer, enc, {r.id: r for r in gold_records}, progress=False, batch_size=16
    )
    p_std = torch.cat([s.p_std for s in scored])
    p_base = torch.cat([s.p_base for s in scored])
    # 3 and 4: the model's own judged wrong answers.
    enc = encoder.encode_all(judged).records
    scored_wrong = score_records(
        model, tokenizer, enc, {r.id: r for r in judged}, progress=False, batch_size=16
    )
    loc = localize(scored_wrong, {r.id: r.response for r in judged}, tokenizer)
    return {
        "model": model_name,
        "test_problems": n_test,
        "accuracy": right / n_test,
        "generation_seconds": round(seconds, 1),
        "wrong": len(wrong),
        "judged": len(judged),
        "judged_naming_a_step": len(naming),
        "share_judged_naming_a_step": len(naming) / len(wrong) if wrong else None,
        "gold_tokens": int(p_std.numel()),
        "mean_p_gold_x_base": float(p_base.mean()),
        "mean_p_gold_x_std": float(p_std.mean()),
        "localization": loc.summary(),
    }


def render(m: dict) -> str:
    loc = m["localization"]

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    ratio = lambda x: "-" if x is None else f"{math.exp(x):.2f}x"  # noqa: E731
    return "\n".join(
        [
            f"## {m['model']}: measured properties ({m['test_problems']} mini-math test problems, greedy)",
            "",
            "| property | measured |",
            "|---|---:|",
            f"| greedy accuracy (X_base) | {pct(m['accuracy'])} |",
            f"| wrong answers the arithmetic judge judges by naming a step | {pct(m['share_judged_naming_a_step'])} ({m['judged_naming_a_step']} of {m['wrong']}) |",
            f"| mean p(gold token), X_base | {m['mean_p_gold_x_base']:.3f} |",
            f"| mean p(gold token), X_std | {m['mean_p_gold_x_std']:.3f} |",
            f"| p_judge / p_base in the judged step (geometric mean) | {ratio(loc['log_ratio_step'])} |",
            f"| p_judge / p_base elsewhere (geometric mean) | {ratio(loc['log_ratio_rest'])} |",
            f"| saliency precision: blamed tokens in the judged step | {pct(loc['precision'])} of {loc['blamed_tokens']} |",
            f"| chance: tokens in the judged step | {pct(loc['chance'])} |",
            f"| saliency recall: wrong records with a blamed token in the judged step | {pct(loc['recall'])} of {loc['located']} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="nlft:mini")
    parser.add_argument("--test", type=int, default=500, help="test problems")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "mini-properties.json"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    m = measure(args.model, args.test)
    text = render(m)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(m, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
