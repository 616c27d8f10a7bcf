"""Check `nlft eval --protocol lm-eval` against lm-evaluation-harness itself, and write the prompt fixture.

Not part of the package and not run by the tests (they use the fixture it writes). Needs lm-eval in some
environment (`pip install lm-eval`; the harness itself, no model back-end) and a local GSM8K folder:

    python scripts/lm_eval_parity.py --gsm8k-dir ../shared/data/gsm8k --write-fixture tests/fixtures/lm_eval_gsm8k_prompts.json

1. Prompts: lm-eval's own gsm8k task (its shipped gsm8k.yaml, with the dataset pointed at the local JSONL files)
   builds the 5-shot contexts of the first test questions with its default few-shot seed; they are compared
   with `LmEvalProtocol` and, with --write-fixture, stored for tests/evals/test_evaluation.py.
2. Grading: lm-eval's strict-match and flexible-extract filters and its exact_match metric, configured from the
   same YAML, score tests/fixtures/gsm8k_tricky.jsonl and every solution in GSM8K's example_model_solutions.jsonl
   (with '#### N' and stop-string variants); `nlft.tasks.answers.grade` must agree on every one.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nlft.evals.protocols import LmEvalProtocol  # noqa: E402
from nlft.evals.questions import load_eval_data  # noqa: E402
from nlft.tasks.answers import grade  # noqa: E402


def shipped_task_config() -> dict:
    import lm_eval

    return yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml").read_text())


def lm_eval_contexts(gsm8k_dir: Path, limit: int) -> tuple[list[str], dict]:
    from lm_eval.tasks import TaskManager

    config = shipped_task_config()
    config.update(
        task="gsm8k_local_parity",
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={
            "data_files": {"train": str(gsm8k_dir / "train.jsonl"), "test": str(gsm8k_dir / "test.jsonl")}
        },
    )
    config.pop("tag", None)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gsm8k_local_parity.yaml").write_text(yaml.safe_dump(config))
        manager = TaskManager(include_path=tmp)
        task = manager.load("gsm8k_local_parity")["tasks"]["gsm8k_local_parity"]
        task.set_fewshot_seed(seed=1234)  # lm_eval.evaluator.simple_evaluate's default fewshot_random_seed
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        instances = sorted(task.instances, key=lambda inst: inst.doc_id)
        return [inst.args[0] for inst in instances], instances[0].args[1]


def lm_eval_scores(responses: list[str], golds: list[str]) -> dict[str, list[bool]]:
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    config = shipped_task_config()
    metric = next(m for m in config["metric_list"] if m["metric"] == "exact_match")
    kwargs = {k: metric[k] for k in ("ignore_case", "ignore_punctuation", "regexes_to_ignore")}
    out = {}
    for flt in config["filter_list"]:
        regex = next(f for f in flt["filter"] if f["function"] == "regex")
        f = RegexFilter(regex_pattern=regex["regex_pattern"], group_select=regex.get("group_select", 0))
        filtered = [x[0] for x in f.apply([[r] for r in responses], [{}] * len(responses))]
        rule = {"strict-match": "strict", "flexible-extract": "flexible"}[flt["name"]]
        out[rule] = [
            exact_match_hf_evaluate([p], [g], **kwargs)["exact_match"] == 1.0 for p, g in zip(filtered, golds)
        ]
    return out


def check_grading(gsm8k_dir: Path) -> int:
    cases = [json.loads(line) for line in (REPO / "tests" / "fixtures" / "gsm8k_tricky.jsonl").open()]
    responses = [c["response"] for c in cases]
    golds = [c["gold"] for c in cases]
    tests = {
        json.loads(line)["question"]: json.loads(line)["answer"] for line in (gsm8k_dir / "test.jsonl").open()
    }
    for line in (gsm8k_dir / "example_model_solutions.jsonl").open():
        row = json.loads(line)
        gold = tests[row["question"]]
        for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            text = row[key]["solution"]
            final = text.rsplit("A:", 1)[-1].strip()
            for variant in (
                text,
                f"{text}\n#### {final}",
                f"{text}\n\nQuestion: what next? 12",
                f"#### {final}.",
            ):
                responses.append(variant)
                golds.append(gold)
    theirs = lm_eval_scores(responses, golds)
    bad = 0
    for i, (resp, gold) in enumerate(zip(responses, golds)):
        ours = grade(resp, gold).matches
        for rule in ("strict", "flexible"):
            if ours[rule] != theirs[rule][i]:
                bad += 1
                print(
                    f"DISAGREE {rule}: ours {ours[rule]} lm-eval {theirs[rule][i]} on {resp[-80:]!r} (gold {gold[-20:]!r})"
                )
        if i < len(cases) and {r: cases[i]["correct"][r] for r in ("strict", "flexible")} != {
            r: theirs[r][i] for r in ("strict", "flexible")
        }:
            bad += 1
            print(f"fixture expectation differs from lm-eval on case {i}: {cases[i]['response']!r}")
    print(f"grading: {len(responses)} responses, strict and flexible, {bad} disagreements with lm-eval")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gsm8k-dir", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=20, help="test questions whose prompts are compared")
    parser.add_argument("--write-fixture", type=Path, default=None, help="store the first 3 prompts here")
    args = parser.parse_args()

    contexts, gen_kwargs = lm_eval_contexts(args.gsm8k_dir, args.limit)
    data = load_eval_data("gsm8k:test", args.gsm8k_dir)
    train = load_eval_data("gsm8k:train", args.gsm8k_dir, need="solution").questions
    ours = [p.request.text for p in LmEvalProtocol(train, 5).build(data.questions[: args.limit])]
    same = sum(a == b for a, b in zip(ours, contexts))
    print(
        f"prompts: {same}/{len(contexts)} byte-identical to lm-eval's; its stop strings: {gen_kwargs.get('until')}"
    )
    if args.write_fixture:
        fixture = {
            "made_by": "scripts/lm_eval_parity.py",
            "lm_eval_version": importlib.metadata.version("lm_eval"),
            "task": "gsm8k (lm_eval/tasks/gsm8k/gsm8k.yaml), dataset read from the GSM8K JSONL files",
            "task_version": shipped_task_config()["metadata"]["version"],
            "num_fewshot": 5,
            "fewshot_random_seed": 1234,
            "until": gen_kwargs.get("until"),
            "prompts": [{"doc_id": i, "context": c} for i, c in enumerate(contexts[:3])],
        }
        args.write_fixture.write_text(
            json.dumps(fixture, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        print(f"wrote {args.write_fixture}")
    bad = check_grading(args.gsm8k_dir)
    return 0 if same == len(contexts) and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
