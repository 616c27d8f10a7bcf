"""The baselines as table entries: rft sees only the correct responses, sft-gold only the gold solutions, and
every method trains on the same records with the same schedule."""

import json
from types import SimpleNamespace

from nlft.methods import METHODS, get_method
from nlft.train import load_training_tokenizer, prepare_records, train

from .conftest import ROWS, config


def job_for(tmp_path, rows=ROWS):
    data, model_cfg, args = config(tmp_path, rows=rows)
    tok = load_training_tokenizer(model_cfg)
    encoded, texts, _ = prepare_records(data, tok)
    by_id = {t.id: t for t in texts}
    return SimpleNamespace(data=data, tokenizer=tok, records=encoded.records, texts=[by_id[r.id] for r in encoded.records])


def targets(job, rows):
    """The text each training row is trained to produce (its labelled tokens)."""
    return [job.tokenizer.decode([t for t in r["labels"] if t != -100]) for r in rows]


def test_rft_trains_on_the_correct_responses_only(tmp_path):
    job = job_for(tmp_path)
    got = targets(job, get_method("rft").rows(job))
    correct = [r["response"] for r in ROWS if "judgment" not in r]
    assert len(got) == len(correct) == 2
    assert all(g.startswith(c) for g, c in zip(got, correct))  # then the EOS token
    assert not any("48*2 = 96" in g or "3+4 = 8" in g for g in got)


def test_sft_gold_trains_on_one_gold_solution_per_question(tmp_path):
    job = job_for(tmp_path)
    got = targets(job, get_method("sft-gold").rows(job))
    gold = list(dict.fromkeys(r["reference"] for r in ROWS))  # two questions, each asked twice
    assert len(got) == 2 and all(g.startswith(ref) for g, ref in zip(got, gold))


def test_sft_trains_on_every_response(tmp_path):
    job = job_for(tmp_path)
    got = targets(job, get_method("sft").rows(job))
    assert [g[: len(r["response"])] for g, r in zip(got, ROWS)] == [r["response"] for r in ROWS]


def test_every_method_trains_on_the_same_records_with_the_same_schedule(tmp_path):
    configs = {}
    for method in sorted(METHODS):
        result = train(*config(tmp_path, "--method", method, "--max_steps", "2", "--seed", "3", name=method))
        info = json.loads((result.run_dir / "run.json").read_text())
        assert info["method"] == method and info["records"] == len(ROWS) and result.global_step == 2
        lines = (result.run_dir / "config.yaml").read_text().splitlines()
        configs[method] = sorted(x for x in lines if not x.startswith(("method:", "data:", "output_dir:")))
    first = configs.pop("nlft")
    assert "max_steps: 2" in first and "seed: 3" in first
    assert all(c == first for c in configs.values())
