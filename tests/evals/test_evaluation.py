import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlft.cli import main
from nlft.evals.evaluation import EvalSettings, SettingsMismatch, evaluate, pending
from nlft.evals.protocols import LM_EVAL_STOP, LmEvalProtocol, PaperProtocol, make_protocol
from nlft.evals.questions import EvalData, load_eval_data
from nlft.models.generation import Completion
from nlft.models.tiny import save_tiny_model
from nlft.records import Question, RecordError
from nlft.tasks.gsm8k import SAMPLE_GSM8K_TEST

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parents[1] / "fixtures"


class ScriptedBackend:
    """A back-end answering from a function of (question id, seed); counts what it was asked to generate."""

    def __init__(self, answer):
        self.answer = answer
        self.settings = None
        self.asked: list[str] = []

    def generate(self, requests):
        for r in requests:
            self.asked.append(r.key)
            text = self.answer(r.key, self.settings.seed)
            yield (
                r,
                (
                    Completion(None, error="HTTP 503: busy")
                    if text is None
                    else Completion(text, finish_reason="stop")
                ),
            )


def questions(golds):
    return EvalData(
        "mem", "mem", [Question(f"q{i}", f"What is {i}?", f"#### {g}") for i, g in enumerate(golds)]
    )


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-eval") / "model", seed=0)


# ---------------------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.shared
def test_lm_eval_prompts_are_byte_identical_to_lm_evals_own(gsm8k_dir):
    # The fixture holds contexts built by lm-evaluation-harness itself (scripts/lm_eval_parity.py).
    fixture = json.loads((FIXTURES / "lm_eval_gsm8k_prompts.json").read_text(encoding="utf-8"))
    data = load_eval_data("gsm8k:test", gsm8k_dir)
    protocol = make_protocol("lm-eval", data=data, num_fewshot=fixture["num_fewshot"], gsm8k_dir=gsm8k_dir)
    built = protocol.build(data.questions[: len(fixture["prompts"])])
    for item, expected in zip(built, fixture["prompts"]):
        assert item.request.text == expected["context"]
    assert list(protocol.stop) == fixture["until"]


def test_lm_eval_prompt_layout_matches_the_documented_example():
    shots = [Question("t0", "What is 1+1?", "1+1=2\n#### 2"), Question("t1", "What is 2+3?", "2+3=5\n#### 5")]
    protocol = LmEvalProtocol(shots, 2, sampler="first")
    (item,) = protocol.build([Question("x", "What is 4+4?", "#### 8")])
    # The example in the README, written out by hand.
    assert item.request.text == (
        "Question: What is 1+1?\nAnswer: 1+1=2\n#### 2\n\n"
        "Question: What is 2+3?\nAnswer: 2+3=5\n#### 5\n\n"
        "Question: What is 4+4?\nAnswer:"
    )
    assert item.info == {"fewshot_ids": ["t0", "t1"]} and protocol.stop == LM_EVAL_STOP


def test_lm_eval_exemplar_draws_follow_lm_evals_sampler():
    pool = [Question(f"t{i}", f"train question {i}", f"#### {i}") for i in range(40)]
    tests = [Question(f"x{i}", f"test question {i}", "#### 1") for i in range(6)]
    built = LmEvalProtocol(pool, 3).build(tests)
    # One generator for the whole run, drawn once per question in order (lm-eval's default ContextSampler).
    rnd = random.Random(1234)
    assert [b.info["fewshot_ids"] for b in built] == [[q.id for q in rnd.sample(pool, 3)] for _ in tests]
    # So a --limit run gets exactly the first prompts of the full run.
    assert [b.request.text for b in LmEvalProtocol(pool, 3).build(tests[:2])] == [
        b.request.text for b in built[:2]
    ]


def test_lm_eval_never_shows_a_question_as_its_own_exemplar():
    pool = [Question(f"t{i}", f"q{i}", f"#### {i}") for i in range(6)]
    for sampler in ("lm-eval", "first"):
        built = LmEvalProtocol(pool, 5, sampler=sampler, exclude_self=True).build(pool)
        for item in built:
            assert item.question.id not in item.info["fewshot_ids"] and len(item.info["fewshot_ids"]) == 5


def test_paper_prompt_is_the_training_base_prompt(tokenizer):
    from nlft.models.generation import HFBackend
    from nlft.prompts import RecordEncoder
    from nlft.records import Record

    q = Question("q", "Tom has 3 apples and buys 4 more. How many now?", "3+4=7\n#### 7")
    (item,) = PaperProtocol("math").build([q])
    backend = HFBackend(model=_NoModel(), tokenizer=tokenizer)
    record = Record("q", q.question, "7", reference=q.reference)
    assert (
        backend.prompt_ids(item.request) == RecordEncoder(tokenizer, "math").encode(record).prompt_ids["base"]
    )


class _NoModel:
    generation_config = None


# ---------------------------------------------------------------------------------------------------------------
# Scoring, summaries, resuming (a scripted back-end: no model needed)
# ---------------------------------------------------------------------------------------------------------------


def test_summary_counts_each_rule(tmp_path):
    answers = {
        "q0": "So 3.\n#### 3",  # right by all three
        "q1": "It is 7 dollars",  # no marker: strict wrong, flexible and authors right
        "q2": "#### 5.00",  # every rule compares values (right); lm-eval's exact match compares strings (wrong)
        "q3": "No idea.",  # wrong by all
    }
    backend = ScriptedBackend(lambda key, seed: answers[key])
    s = evaluate(backend, PaperProtocol(), questions([3, 7, 5, 9]), tmp_path, EvalSettings(), progress=False)
    assert s["correct"] == {"strict": 2, "flexible": 3, "authors": 3}
    assert s["accuracy"] == {"strict": 0.5, "flexible": 0.75, "authors": 0.75}
    assert s["lm_eval_exact_match"] == {"strict": 0.25, "flexible": 0.5}
    assert s["complete"] and s["this_run"] == {
        "generated": 4,
        "resumed": 0,
        "failed": 0,
        "seconds": s["this_run"]["seconds"],
    }
    rows = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert rows[1]["extracted"] == {"strict": None, "flexible": "7", "authors": "7"}
    assert rows[1]["correct"] == {"strict": False, "flexible": True, "authors": True}
    assert rows[2]["correct"] == {"strict": True, "flexible": True, "authors": True}
    assert rows[2]["lm_eval_correct"] == {"strict": False, "flexible": False}
    assert {"question", "gold", "response", "extracted", "correct"} <= set(rows[0])
    assert json.loads((tmp_path / "summary.json").read_text())["accuracy"] == s["accuracy"]


def test_rerun_resumes_and_a_longer_limit_adds_only_the_new_questions(tmp_path):
    data = questions([1, 2, 3, 4, 5])
    first = ScriptedBackend(lambda key, seed: f"#### {int(key[1:]) + 1}")
    evaluate(first, PaperProtocol(), data, tmp_path, EvalSettings(limit=3), progress=False)
    again = ScriptedBackend(lambda key, seed: pytest.fail("regenerated a finished item"))
    s = evaluate(again, PaperProtocol(), data, tmp_path, EvalSettings(limit=3), progress=False)
    assert again.asked == [] and s["this_run"]["resumed"] == 3 and s["accuracy"]["strict"] == 1.0
    more = ScriptedBackend(lambda key, seed: "#### 0")
    s = evaluate(more, PaperProtocol(), data, tmp_path, EvalSettings(limit=5), progress=False)
    assert sorted(more.asked) == ["q3", "q4"] and s["correct"]["strict"] == 3 and s["items"] == 5


def test_failed_requests_are_not_recorded_and_are_retried(tmp_path):
    data = questions([1, 2, 3])
    flaky = ScriptedBackend(lambda key, seed: None if key == "q1" else "#### 1")
    s = evaluate(flaky, PaperProtocol(), data, tmp_path, EvalSettings(), progress=False)
    assert not s["complete"] and s["done"] == 2 and s["this_run"]["failed"] == 1
    assert "HTTP 503" in s["this_run"]["errors"][0]
    fixed = ScriptedBackend(lambda key, seed: "#### 2")
    s = evaluate(fixed, PaperProtocol(), data, tmp_path, EvalSettings(), progress=False)
    assert fixed.asked == ["q1"] and s["complete"] and s["correct"]["strict"] == 2


def test_seeds_report_mean_and_sample_sd(tmp_path):
    # Right on 2/4 questions with seed 1, 3/4 with seed 2, 1/4 with seed 3.
    right = {1: {"q0", "q1"}, 2: {"q0", "q1", "q2"}, 3: {"q3"}}
    backend = ScriptedBackend(lambda key, seed: "#### 1" if key in right[seed] else "#### 0")
    s = evaluate(
        backend,
        PaperProtocol(),
        questions([1, 1, 1, 1]),
        tmp_path,
        EvalSettings(temperature=0.6, seeds=(1, 2, 3)),
        progress=False,
    )
    assert [p["accuracy"]["strict"] for p in s["per_seed"]] == [0.5, 0.75, 0.25]
    assert s["accuracy"]["strict"] == pytest.approx(0.5)
    assert s["accuracy_std"]["strict"] == pytest.approx(0.25)  # sqrt(((0)^2 + .25^2 + .25^2) / 2)
    assert s["items"] == 12 and s["seeds"] == [1, 2, 3]
    keys = [json.loads(line)["key"] for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(set(keys)) == 12 and "q0@seed2" in keys


def test_seeds_need_sampling():
    with pytest.raises(ValueError, match="greedy"):
        EvalSettings(seeds=(1, 2)).seed_list()
    with pytest.raises(ValueError, match="duplicates"):
        EvalSettings(temperature=0.6, seeds=(1, 1)).seed_list()


def test_other_settings_do_not_resume_into_old_results(tmp_path):
    data = questions([1, 2])
    evaluate(
        ScriptedBackend(lambda k, s: "#### 1"),
        PaperProtocol(),
        data,
        tmp_path,
        EvalSettings(),
        progress=False,
    )
    with pytest.raises(SettingsMismatch, match="decoding"):
        evaluate(
            ScriptedBackend(lambda k, s: "#### 1"),
            PaperProtocol(),
            data,
            tmp_path,
            EvalSettings(max_new_tokens=7),
            progress=False,
        )
    redo = ScriptedBackend(lambda k, s: "#### 2")
    s = evaluate(
        redo, PaperProtocol(), data, tmp_path, EvalSettings(max_new_tokens=7), overwrite=True, progress=False
    )
    assert len(redo.asked) == 2 and s["correct"]["strict"] == 1


def test_question_file_without_gold_names_file_line_and_field(write):
    path = write(
        "qs.jsonl",
        '{"id": "a", "question": "q1", "answer": "#### 4"}\n'
        '{"id": "b", "question": "q2"}\n'
        '{"id": "c", "question": "q3", "answer": "four"}\n'
        '{"id": "d", "question": "q4", "answer": "12"}\n',
    )
    with pytest.raises(RecordError) as info:
        load_eval_data(str(path))
    text = str(info.value)
    assert f"{path}:line 2" in text and f"{path}:line 3" in text and "field 'answer'" in text
    assert "line 1" not in text and "line 4" not in text


def test_question_file_with_plain_number_answers_evaluates(write, tmp_path):
    path = write(
        "qs.jsonl",
        '{"id": "a", "question": "q1", "answer": "4"}\n{"id": "b", "question": "q2", "answer": "1,000"}\n',
    )
    data = load_eval_data(str(path))
    assert data.name == "qs"
    s = evaluate(
        ScriptedBackend(lambda k, s: "#### 4" if k == "a" else "so 1000"),
        PaperProtocol(),
        data,
        tmp_path / "o",
        EvalSettings(),
        progress=False,
    )
    assert s["correct"] == {"strict": 1, "flexible": 2, "authors": 2}


# ---------------------------------------------------------------------------------------------------------------
# End to end on the tiny model
# ---------------------------------------------------------------------------------------------------------------


def eval_cli(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(["eval", *args, "--quiet", "--device", "cpu"])
    return info.value.code


def test_eval_cli_writes_items_and_summary(tiny_dir, tmp_path, capsys):
    out = tmp_path / "res"
    code = eval_cli(
        str(tiny_dir),
        "--data",
        str(SAMPLE_GSM8K_TEST),
        "--limit",
        "3",
        "--max-new-tokens",
        "8",
        "--out",
        str(out),
    )
    assert code == 0
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    gold = [json.loads(line) for line in SAMPLE_GSM8K_TEST.read_text().splitlines()[:3]]
    assert [r["question"] for r in sorted(rows, key=lambda r: r["question"])] == sorted(
        g["question"] for g in gold
    )
    assert all(r["response"] and set(r["correct"]) == {"strict", "flexible", "authors"} for r in rows)
    assert summary["items"] == summary["done"] == 3 and summary["protocol"] == "paper"
    assert (
        summary["decoding"]["max_new_tokens"] == 8
        and summary["accuracy"]["authors"] == summary["correct"]["authors"] / 3
    )
    assert "3/3 items" in capsys.readouterr().out


def test_lm_eval_protocol_on_the_tiny_model_uses_stop_strings(tiny_dir, tmp_path, write):
    train = write(
        "train.jsonl",
        "".join(
            json.dumps({"question": f"What is {i}+1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"}) + "\n"
            for i in range(8)
        ),
    )
    out = tmp_path / "lm"
    args = [
        "--protocol",
        "lm-eval",
        "--data",
        str(SAMPLE_GSM8K_TEST),
        "--fewshot-data",
        str(train),
        "--num-fewshot",
        "2",
    ]
    assert eval_cli(str(tiny_dir), *args, "--limit", "3", "--max-new-tokens", "24", "--out", str(out)) == 0
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert all(len(r["fewshot_ids"]) == 2 for r in rows)
    assert not any(stop in r["response"] for r in rows for stop in LM_EVAL_STOP)
    assert json.loads((out / "summary.json").read_text())["decoding"]["stop"] == list(LM_EVAL_STOP)


def test_lm_eval_on_a_question_file_needs_exemplars(tiny_dir, tmp_path, capsys):
    assert (
        eval_cli(
            str(tiny_dir), "--protocol", "lm-eval", "--data", str(SAMPLE_GSM8K_TEST), "--out", str(tmp_path)
        )
        == 2
    )
    assert "--fewshot-data" in capsys.readouterr().err


def test_sampling_with_seeds_on_the_tiny_model(tiny_dir, tmp_path):
    out = tmp_path / "s"
    args = [
        "--data",
        str(SAMPLE_GSM8K_TEST),
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0.8",
        "--seeds",
        "1",
        "2",
    ]
    assert eval_cli(str(tiny_dir), *args, "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [1, 2] and [p["seed"] for p in summary["per_seed"]] == [1, 2]
    assert set(summary["accuracy_std"]) == {"strict", "flexible", "authors"}
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    by_seed = {
        s: [r["response"] for r in sorted(rows, key=lambda r: r["id"]) if r["seed"] == s] for s in (1, 2)
    }
    assert len(rows) == 4 and by_seed[1] != by_seed[2]


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the demo-layout run, so that evaluations written into its eval/ don't meet."""
    return Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name))


def test_all_checkpoints_gives_one_row_per_epoch(run_copy, capsys, monkeypatch):
    tiny_run = run_copy
    args = ["--data", str(SAMPLE_GSM8K_TEST), "--limit", "2", "--max-new-tokens", "8", "--batch-size", "2"]
    assert eval_cli(str(tiny_run), "--all-checkpoints", "--include-base", *args) == 0
    folders = sorted(p.name for p in (tiny_run / "eval").iterdir() if p.is_dir())
    assert folders == [
        "paper-gsm8k_test_sample-base",
        *(f"paper-gsm8k_test_sample-epoch-{e}" for e in (1, 2, 3)),
    ]
    summaries = [json.loads((tiny_run / "eval" / f / "summary.json").read_text()) for f in folders]
    assert [s["epoch"] for s in summaries] == [0.0, 1.0, 2.0, 3.0]
    assert summaries[1]["adapter"].endswith("epoch-1") and summaries[0]["adapter"] is None
    # Each checkpoint really is different weights: the answers differ.
    responses = [
        tuple(
            json.loads(line)["response"]
            for line in (tiny_run / "eval" / f / "items.jsonl").read_text().splitlines()
        )
        for f in folders
    ]
    assert len(set(responses)) == 4
    curve = (tiny_run / "eval" / "paper-gsm8k_test_sample-curve.md").read_text()
    body = [line for line in curve.splitlines() if line.startswith("| ") and not line.startswith("| epoch")]
    assert [line.split("|")[1].strip() for line in body] == ["0", "1", "2", "3"]
    assert curve.strip() in capsys.readouterr().out
    # A rerun finds every checkpoint done and loads no model at all.
    monkeypatch.setattr(
        "nlft.models.loading.load_model", lambda *a, **k: pytest.fail("loaded a finished checkpoint")
    )
    assert eval_cli(str(tiny_run), "--all-checkpoints", "--include-base", *args) == 0
    assert capsys.readouterr().out.count("2/2 items (2 resumed, 0 generated)") == 4


def test_eval_of_a_run_folder_goes_to_its_eval_folder(run_copy):
    tiny_run = run_copy
    args = ["--data", str(SAMPLE_GSM8K_TEST), "--limit", "1", "--max-new-tokens", "4", "--tag", "short"]
    assert eval_cli(str(tiny_run), *args) == 0
    summary = json.loads((tiny_run / "eval" / "paper-gsm8k_test_sample-short" / "summary.json").read_text())
    assert (
        summary["checkpoint"] == "final"
        and summary["adapter"].endswith("adapter")
        and summary["method"] == "nlft"
    )


def test_checkpoint_options_need_a_run_folder(tiny_dir, capsys):
    assert eval_cli(str(tiny_dir), "--all-checkpoints") == 2
    assert "need a run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_eval_resumes_without_regenerating_and_totals_match(tiny_dir, tmp_path):
    # Golds made from the model's own answers, so that the totals compared below are not all zero.
    base = [json.loads(line) for line in SAMPLE_GSM8K_TEST.read_text().splitlines()[:10]]
    probe = tmp_path / "probe"
    probe_file = tmp_path / "probe.jsonl"
    probe_file.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "question": r["question"], "answer": "0"}) + "\n"
            for i, r in enumerate(base)
        )
    )
    # One prompt per batch: a resumed run batches the remaining questions differently, and padding must not
    # be able to change a greedy answer here (batching itself is tested in test_generation.py).
    common = ["--max-new-tokens", "32", "--batch-size", "1"]
    assert eval_cli(str(tiny_dir), "--data", str(probe_file), *common, "--out", str(probe)) == 0
    found = {
        r["id"]: r["extracted"]["authors"]
        for r in map(json.loads, (probe / "items.jsonl").read_text().splitlines())
    }
    golds = [found[f"p{i}"] if found[f"p{i}"] is not None and i % 3 else "1" for i in range(len(base))]
    data = tmp_path / "questions.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "question": r["question"], "answer": g}) + "\n"
            for i, (r, g) in enumerate(zip(base, golds))
        )
    )

    reference = tmp_path / "uninterrupted"
    assert eval_cli(str(tiny_dir), "--data", str(data), *common, "--out", str(reference)) == 0
    expected = json.loads((reference / "summary.json").read_text())
    assert 0 < expected["correct"]["authors"] < len(base)

    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "nlft",
        "eval",
        str(tiny_dir),
        "--data",
        str(data),
        *common,
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    items = out / "items.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if items.exists() and items.read_bytes().count(b"\n") >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the evaluation finished before it could be killed"
    before = items.read_bytes()
    kept = before[: before.rfind(b"\n") + 1].decode().splitlines()  # a torn last line is dropped on resume
    assert 3 <= len(kept) < len(base)

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["resumed"] == len(kept)
    assert summary["this_run"]["generated"] == len(base) - len(kept)
    after = items.read_text().splitlines()
    assert after[: len(kept)] == kept  # finished items untouched
    assert len(after) == len(base) and len({json.loads(line)["key"] for line in after}) == len(base)
    strip = lambda s: {k: v for k, v in s.items() if k != "this_run"}  # noqa: E731
    assert strip(summary) == strip(expected)
    by_key = lambda lines: {r["key"]: r for r in map(json.loads, lines)}  # noqa: E731
    assert by_key(after) == by_key((reference / "items.jsonl").read_text().splitlines())


class _FakeOpenAI:
    """A minimal OpenAI-compatible server: records each request body, answers "#### 18"."""

    def __enter__(self):
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append((self.path, body))
                if self.path.endswith("/chat/completions"):
                    choice = {
                        "index": 0,
                        "message": {"role": "assistant", "content": "So 18.\n#### 18"},
                        "finish_reason": "stop",
                    }
                    kind = "chat.completion"
                else:
                    choice = {"index": 0, "text": " 9 + 9 = 18\n#### 18", "finish_reason": "stop"}
                    kind = "text_completion"
                reply = json.dumps(
                    {"id": "x", "object": kind, "created": 0, "model": body["model"], "choices": [choice]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def test_openai_backend_sends_the_protocol_prompts(tmp_path, write, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    train = write(
        "train.jsonl",
        "".join(json.dumps({"question": f"t{i}", "answer": f"#### {i}"}) + "\n" for i in range(4)),
    )
    gold = [json.loads(line)["answer"] for line in SAMPLE_GSM8K_TEST.read_text().splitlines()[:2]]
    with _FakeOpenAI() as server:
        base = [
            "served-model",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--data",
            str(SAMPLE_GSM8K_TEST),
            "--limit",
            "2",
        ]
        assert eval_cli(*base, "--out", str(tmp_path / "paper")) == 0
        lm = ["--protocol", "lm-eval", "--fewshot-data", str(train), "--num-fewshot", "2"]
        assert eval_cli(*base, *lm, "--out", str(tmp_path / "lm")) == 0
    chat = [b for path, b in server.seen if path.endswith("/chat/completions")]
    plain = [b for path, b in server.seen if path.endswith("/v1/completions")]
    assert len(chat) == 2 and len(plain) == 2
    assert chat[0]["messages"][0]["role"] == "system" and "####" in chat[0]["messages"][0]["content"]
    assert chat[0]["temperature"] == 0 and chat[0]["max_tokens"] == 512
    assert plain[0]["prompt"].startswith("Question: t") and plain[0]["prompt"].endswith("\nAnswer:")
    assert plain[0]["stop"] == list(LM_EVAL_STOP) and plain[0]["max_tokens"] == 256
    summary = json.loads((tmp_path / "paper" / "summary.json").read_text())
    expected = (
        sum(g.endswith("#### 18") for g in gold) / 2
    )  # every answer says 18: right where the gold is 18
    assert summary["accuracy"] == {"strict": expected, "flexible": expected, "authors": expected}
    assert summary["backend"] == "openai" and summary["model"] == "served-model"


def test_a_run_named_by_another_path_to_the_same_folder_resumes(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "r"
    (run / "adapter").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    data, out = questions([1, 2]), run / "eval"
    first = ScriptedBackend(lambda k, s: "#### 1")
    evaluate(first, PaperProtocol(), data, out, EvalSettings(limit=1), progress=False,
             describe={"model": "nlft:tiny", "adapter": "runs/r/adapter", "run": "runs/r"})  # fmt: skip
    again = ScriptedBackend(lambda k, s: "#### 1")
    s = evaluate(again, PaperProtocol(), data, out, EvalSettings(), progress=False,
                 describe={"model": "nlft:tiny", "adapter": str(run / "adapter"), "run": str(run)})  # fmt: skip
    assert len(again.asked) == 1 and s["this_run"]["resumed"] == 1  # only the second question is new
    (tmp_path / "other" / "adapter").mkdir(parents=True)
    with pytest.raises(SettingsMismatch, match=r"\(adapter, run differ\)"):
        evaluate(again, PaperProtocol(), data, out, EvalSettings(), progress=False,
                 describe={"model": "nlft:tiny", "adapter": "other/adapter", "run": "other"})  # fmt: skip


def test_pending_counts_what_is_left_without_a_model(tmp_path):
    data = questions([1, 2, 3])
    assert pending(PaperProtocol(), data, tmp_path, EvalSettings()) == 3
    evaluate(
        ScriptedBackend(lambda k, s: "#### 1"),
        PaperProtocol(),
        data,
        tmp_path,
        EvalSettings(limit=2),
        progress=False,
    )
    assert pending(PaperProtocol(), data, tmp_path, EvalSettings(limit=2)) == 0
    assert pending(PaperProtocol(), data, tmp_path, EvalSettings()) == 1
    with pytest.raises(SettingsMismatch):
        pending(PaperProtocol(), data, tmp_path, EvalSettings(max_new_tokens=3))
    s = evaluate(None, PaperProtocol(), data, tmp_path, EvalSettings(limit=2), progress=False)
    assert s["this_run"]["resumed"] == 2 and s["correct"]["strict"] == 1


def test_eval_takes_the_shared_back_end_options_and_its_timeout_bounds_a_dripping_server(
    tmp_path, monkeypatch, capsys
):
    import time

    from ..fake_openai import FakeOpenAI

    monkeypatch.setenv("NLFT_EVAL_KEY", "sk-eval-key-000000000")
    with FakeOpenAI(
        lambda text: "#### 1", lambda text, attempt: "drip", api_key="sk-eval-key-000000000"
    ) as server:
        started = time.monotonic()
        with pytest.raises(SystemExit) as info:
            main([
                "eval", "served", "--backend", "openai", "--base-url", server.url, "--api-key-env", "NLFT_EVAL_KEY",
                "--data", "nlft:sample", "--limit", "2", "--timeout", "1", "--max-retries", "0", "--concurrency", "2",
                "--out", str(tmp_path / "e"), "--quiet",
            ])  # fmt: skip
        took = time.monotonic() - started
    assert info.value.code == 1 and took < 15, took  # both requests cut off at 1 s, reported as failed
    assert "timed out" in capsys.readouterr().out


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_holding_someone_elses_settings_json_is_refused_untouched(tmp_path, overwrite):
    """Audit N-1: --overwrite must never delete a user's settings.json or summary.json (nor --out . a project's)."""
    (tmp_path / "settings.json").write_text('{"theme": "dark", "font": 12}\n')
    (tmp_path / "summary.json").write_text('{"mine": 1}\n')
    backend = ScriptedBackend(lambda k, s: "#### 1")
    with pytest.raises(SettingsMismatch, match="not the settings of an nlft evaluation"):
        evaluate(
            backend,
            PaperProtocol(),
            questions([1]),
            tmp_path,
            EvalSettings(),
            overwrite=overwrite,
            progress=False,
        )
    assert json.loads((tmp_path / "settings.json").read_text()) == {"theme": "dark", "font": 12}
    assert json.loads((tmp_path / "summary.json").read_text()) == {"mine": 1}
    assert backend.asked == [] and not (tmp_path / "items.jsonl").exists()


def test_results_without_settings_are_not_replaced_even_with_overwrite(tmp_path):
    (tmp_path / "summary.json").write_text('{"mine": 1}\n')
    with pytest.raises(SettingsMismatch, match="no settings.json"):
        evaluate(ScriptedBackend(lambda k, s: "#### 1"), PaperProtocol(), questions([1]), tmp_path, EvalSettings(),
                 overwrite=True, progress=False)  # fmt: skip
    assert (tmp_path / "summary.json").read_text() == '{"mine": 1}\n'


@pytest.mark.parametrize(
    "content, message", [("[1, 2]\n", "not the settings"), ("not json", "settings.json:1:1")]
)
def test_a_settings_json_that_is_not_an_object_is_an_error_naming_it(tmp_path, content, message):
    """Audit N-16 and old #22: a list, or text that is not JSON, is a clear error naming the file."""
    (tmp_path / "settings.json").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        evaluate(ScriptedBackend(lambda k, s: "#### 1"), PaperProtocol(), questions([1]), tmp_path, EvalSettings(),
                 progress=False)  # fmt: skip
    assert str(tmp_path / "settings.json") in str(info.value)


def test_results_of_other_questions_under_the_same_ids_are_not_resumed(tmp_path):
    """A question file changed under the same path and ids: its old answers are not taken for the new questions."""
    first = questions([1, 2])
    evaluate(
        ScriptedBackend(lambda k, s: "#### 1"),
        PaperProtocol(),
        first,
        tmp_path,
        EvalSettings(),
        progress=False,
    )
    changed = EvalData(
        "mem", "mem", [Question(q.id, q.question + " (changed)", q.reference) for q in first.questions]
    )
    before = (tmp_path / "items.jsonl").read_bytes()
    with pytest.raises(ValueError, match="evaluation items of other inputs under the same ids"):
        evaluate(ScriptedBackend(lambda k, s: "#### 1"), PaperProtocol(), changed, tmp_path, EvalSettings(),
                 progress=False)  # fmt: skip
    assert (tmp_path / "items.jsonl").read_bytes() == before
