import os
import re
import signal
import subprocess
import sys
import time

import pytest

from nlft.data.builder import build_dataset
from nlft.data.judging import ArithmeticJudge, judge_records
from nlft.data.sampling import failed_path_for, load_question_set, sample_questions
from nlft.jsonl import read_jsonl
from nlft.models.generation import BackendOptions, HFBackend, SamplingSettings, make_backend
from nlft.models.loading import load_model
from nlft.prompts import RecordEncoder, TemplateSet
from nlft.records import Question, Record, RecordError, load_records
from nlft.tasks.gsm8k import SAMPLE_GSM8K_TEST, load_gsm8k

from ..conftest import REPO
from ..fake_openai import FakeOpenAI

KEY = "sk-sampling-test-key-7f3a9c1e5b"


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def sample_gsm8k_dir(tmp_path_factory):
    """A GSM8K folder (test.jsonl) holding the 50 test questions shipped in the package."""
    folder = tmp_path_factory.mktemp("gsm8k")
    (folder / "test.jsonl").write_text(SAMPLE_GSM8K_TEST.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def questions():
    """Six GSM8K test questions from the sample shipped in the package (ids gsm8k-test-00000 ...)."""
    return load_gsm8k("test", SAMPLE_GSM8K_TEST, limit=6)


def gold_replies(questions, right: set[int]):
    """A server reply per question: a worked answer, right for the indices in ``right`` and wrong by one otherwise."""
    by_text = {}
    for i, q in enumerate(questions):
        gold = int(q.extra["gold"])
        answer = gold if i in right else gold + 1
        by_text[q.question] = f"We add {answer - 1} + 1 = {answer}.\n#### {answer}"
    return lambda text: by_text.get(text, "I do not know.")


def fault_for(questions, plan: dict[int, tuple[str, int]]):
    """plan: question index -> (fault, how many attempts fail)."""
    texts = {q.question: plan[i] for i, q in enumerate(questions) if i in plan}

    def faults(text, attempt):
        fault, times = texts.get(text, ("ok", 0))
        return fault if attempt <= times else "ok"

    return faults


def openai_backend(server, monkeypatch, **settings):
    monkeypatch.setenv("NLFT_TEST_KEY", KEY)
    options = BackendOptions(
        backend="openai",
        model="served",
        base_url=server.url,
        api_key_env="NLFT_TEST_KEY",
        timeout=5,
        max_retries=1,
        concurrency=3,
    )
    return make_backend(
        options, SamplingSettings(**{"temperature": 0.3, "max_new_tokens": 64, **settings})
    ), options


# --------------------------------------------------------------------------------------------------------------
# hf back-end: the tiny model
# --------------------------------------------------------------------------------------------------------------


def test_hf_samples_are_graded_records_in_the_trainers_prompt(tmp_path, tiny_dir, questions):
    model, tok, _ = load_model(tiny_dir, device="cpu")
    backend = HFBackend(model, tok, SamplingSettings(max_new_tokens=8, temperature=1.0, seed=5), batch_size=4)
    out = tmp_path / "samples.jsonl"
    result = sample_questions(
        questions[:3], out, backend, samples=2, provenance={"backend": "hf", "model": "tiny"}, progress=False
    )
    assert (result.total, result.new, result.earlier, result.failed) == (6, 6, 0, [])
    records = load_records(out)  # valid records, as nlft judge and nlft data build read them
    # Written as each finishes (a local model refills a row as soon as its answer ends): every one, once.
    assert sorted(r.id for r in records) == [f"gsm8k-test-0000{i}-s{k}" for i in range(3) for k in range(2)]
    by_id = {q.id: q for q in questions}
    for record, row in zip(records, read_jsonl(out)):
        assert record.judgment is None and record.system is None  # the default system prompt is left implicit
        question = by_id[row["question_id"]]
        assert record.id.startswith(question.id) and record.reference == question.reference
        assert row["grade"]["gold"] == question.extra["gold"]
        assert record.correct == row["grade"]["matches"]["authors"]
        assert (
            row["backend"] == "hf"
            and row["sampling"]["temperature"] == 1.0
            and row["sample_index"] == int(record.id[-1])
        )
    assert result.correct + result.wrong == 6
    # The prompt the model saw is the trainer's X_base prompt of the record, token for token.
    encoder = RecordEncoder(tok, "math")
    record = records[0]
    system, user = TemplateSet.load("math").messages("base", record)
    from nlft.models.generation import Request

    seen = backend.prompt_ids(
        Request("x", messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])
    )
    as_correct = Record(record.id, record.question, record.response, record.reference, None, None, True)
    assert seen == encoder.encode(as_correct).prompt_ids["base"]


def test_hf_run_cut_short_resumes_to_the_same_file_as_an_uninterrupted_run(tmp_path, tiny_dir, questions):
    model, tok, _ = load_model(tiny_dir, device="cpu")
    backend = HFBackend(model, tok, SamplingSettings(max_new_tokens=6, temperature=1.0, seed=1), batch_size=4)
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    sample_questions(questions, full, backend, samples=2, progress=False)
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    # A kill in the middle of the second batch, in the middle of writing a line.
    cut.write_text("".join(lines[:5]) + lines[5][:40], encoding="utf-8")
    result = sample_questions(questions, cut, backend, samples=2, progress=False)
    assert result.earlier == 5 and result.new == 7
    by_id = lambda path: {row["id"]: row for row in read_jsonl(path)}  # noqa: E731
    assert by_id(cut) == by_id(full)  # same samples, each once: batches are fixed slices with fixed seeds


def test_several_samples_need_a_temperature(tmp_path, tiny_dir, questions):
    model, tok, _ = load_model(tiny_dir, device="cpu")
    backend = HFBackend(model, tok, SamplingSettings(max_new_tokens=4, temperature=0.0))
    with pytest.raises(ValueError, match="temperature above 0"):
        sample_questions(questions, tmp_path / "s.jsonl", backend, samples=2, progress=False)


# --------------------------------------------------------------------------------------------------------------
# openai back-end: the local test server
# --------------------------------------------------------------------------------------------------------------


def test_openai_samples_are_graded_as_they_arrive_and_failures_are_retried_by_a_rerun(
    tmp_path, monkeypatch, questions
):
    replies = gold_replies(questions, right={0, 2, 4})
    plan = {1: ("429", 1), 3: ("500", 99), 5: ("bad-json", 1)}
    out = tmp_path / "samples.jsonl"
    with FakeOpenAI(replies, fault_for(questions, plan), api_key=KEY) as server:
        backend, options = openai_backend(server, monkeypatch)
        result = sample_questions(questions, out, backend, provenance=options.describe(), progress=False)
        assert [f["id"] for f in result.failed] == ["gsm8k-test-00003-s0"]
        assert result.failed[0]["error"].startswith("HTTP 500")
        assert (result.correct, result.wrong, result.new) == (3, 2, 5)
        assert [row["id"] for row in read_jsonl(failed_path_for(out))] == ["gsm8k-test-00003-s0"]
        records = {r.id: r for r in load_records(out)}
        assert {rid for rid, r in records.items() if r.correct} == {
            f"gsm8k-test-0000{i}-s0" for i in (0, 2, 4)
        }
        assert "gsm8k-test-00003-s0" not in records
        # The system prompt reached the server as the math template set's.
        assert server.bodies[0]["messages"][0] == {
            "role": "system",
            "content": TemplateSet.load("math").system,
        }

        server.faults = lambda text, attempt: "ok"
        served_before = len(server.log)
        again = sample_questions(questions, out, backend, provenance=options.describe(), progress=False)
        assert len(server.log) - served_before == 1  # only the failed sample was asked again
    assert (again.earlier, again.new, again.failed) == (5, 1, [])
    assert not failed_path_for(out).exists()
    ids = [row["id"] for row in read_jsonl(out)]
    assert sorted(ids) == sorted(f"gsm8k-test-0000{i}-s0" for i in range(6)) and len(ids) == len(set(ids))


def test_a_rerun_with_other_settings_is_refused(tmp_path, monkeypatch, questions):
    out = tmp_path / "samples.jsonl"
    with FakeOpenAI(gold_replies(questions, set()), api_key=KEY) as server:
        backend, options = openai_backend(server, monkeypatch)
        sample_questions(questions[:2], out, backend, provenance=options.describe(), progress=False)
        hotter, _ = openai_backend(server, monkeypatch, temperature=0.9)
        with pytest.raises(ValueError, match=r"other settings \(sampling: .*0\.3.* there, .*0\.9.* now\)"):
            sample_questions(questions[:2], out, hotter, provenance=options.describe(), progress=False)


def test_sampled_records_are_accepted_by_the_judge_and_the_builder(tmp_path, monkeypatch, questions):
    samples, judged = tmp_path / "samples.jsonl", tmp_path / "judged.jsonl"
    with FakeOpenAI(gold_replies(questions, right={0, 1, 2}), api_key=KEY) as server:
        backend, options = openai_backend(server, monkeypatch)
        sample_questions(questions, samples, backend, provenance=options.describe(), progress=False)
    summary = judge_records(samples, judged, ArithmeticJudge(), progress=False)
    assert (summary.to_judge, summary.judged_wrong, summary.failed) == (3, 3, [])
    built = build_dataset(judged, tmp_path / "data", size=4, ratio="1:1", seed=0)
    assert (built.selection.n_correct, built.selection.n_wrong) == (2, 2)
    for record in load_records(built.nlft_path):
        assert (record.judgment is None) == record.is_correct


def test_questions_without_a_gold_number_are_all_reported(tmp_path):
    bad = [Question("a", "q1", "no number here"), Question("b", "q2", None), Question("c", "q3", "#### 4")]
    backend = HFBackend.__new__(HFBackend)  # never asked: the check comes first
    backend.settings = SamplingSettings()
    with pytest.raises(RecordError) as info:
        sample_questions(bad, tmp_path / "s.jsonl", backend, progress=False)
    assert [p.record_id for p in info.value.problems] == ["a", "b"]
    assert not (tmp_path / "s.jsonl").exists()


def test_question_sets_load_from_a_gsm8k_folder_or_a_file(tmp_path, write):
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    (folder / "train.jsonl").write_text(SAMPLE_GSM8K_TEST.read_text(encoding="utf-8"), encoding="utf-8")
    from_folder = load_question_set(folder, split="train", limit=3)
    assert [q.id for q in from_folder] == ["gsm8k-train-00000", "gsm8k-train-00001", "gsm8k-train-00002"]
    path = write(
        "qs.jsonl",
        '{"id": "x1", "question": "1+1?", "answer": "#### 2"}\n{"id": "x2", "question": "2+2?", "reference": "4"}\n',
    )
    from_file = load_question_set(path)
    assert [(q.id, q.reference) for q in from_file] == [("x1", "#### 2"), ("x2", "4")]


# --------------------------------------------------------------------------------------------------------------
# The command, and a run killed with SIGKILL
# --------------------------------------------------------------------------------------------------------------


def _nlft(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "nlft", *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_nlft_sample_command_with_the_tiny_model(tmp_path, tiny_dir):
    out = tmp_path / "s.jsonl"
    proc = _nlft(
        "sample", str(SAMPLE_GSM8K_TEST), "--limit", "3", "--samples", "2", "--temperature", "1.0", "--max-new-tokens", "6",
        "--model", str(tiny_dir), "--device", "cpu", "--batch-size", "4", "--out", str(out), "--no-progress",
    )  # fmt: skip
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "6 of 6 samples (3 questions x 2)" in stdout
    assert len(load_records(out)) == 6


@pytest.mark.slow
def test_sampling_killed_with_sigkill_and_rerun_yields_every_sample_once(tmp_path, sample_gsm8k_dir):
    many = load_gsm8k("test", SAMPLE_GSM8K_TEST, limit=30)
    out = tmp_path / "samples.jsonl"
    args = [
        "sample", str(sample_gsm8k_dir), "--split", "test", "--limit", "30", "--backend", "openai", "--model", "served",
        "--api-key-env", "NLFT_TEST_KEY", "--concurrency", "2", "--timeout", "10", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    env = {"NLFT_TEST_KEY": KEY}
    with FakeOpenAI(gold_replies(many, right=set(range(0, 30, 3))), api_key=KEY, delay_s=0.05) as server:
        args += ["--base-url", server.url]
        proc = _nlft(*args, env=env)
        deadline = time.time() + 120
        while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 8):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        _, stderr1 = proc.communicate(timeout=30)
        written = out.read_text().count("\n")
        assert 8 <= written < 30, "the run must be killed mid-way"
        proc = _nlft(*args, env=env)
        stdout2, stderr2 = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr2
    rows = read_jsonl(out)
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)) == 30
    assert sorted(ids) == sorted(f"{q.id}-s0" for q in many)
    assert sum(row["correct"] for row in rows) == 10
    # Finished samples were not asked again: at most the requests in flight at the kill were repeated.
    asked = [text for text, _ in server.log]
    assert len(asked) <= 30 + 2 + 1
    assert f"{30 - written} new in this run, {written} from an earlier run" in stdout2
    for text in (stdout2, stderr1, stderr2, out.read_text()):
        assert KEY not in text
    assert re.search(r"30 of 30 samples", stdout2)
    assert len(load_records(out)) == 30


# -- hostile inputs: refused before anything is touched -------------------------------------------------------


def _cli(*argv: str) -> tuple[int, str]:
    """(exit status, stderr) of ``nlft ...`` run in this process."""
    import contextlib
    import io

    from nlft.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code, err.getvalue()


def test_out_equal_to_the_questions_file_is_refused_and_the_file_kept(tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(SAMPLE_GSM8K_TEST.read_text(encoding="utf-8").rstrip("\n"))  # no final newline
    before = questions.read_bytes()
    code, err = _cli(
        "sample", str(questions), "--model", "nlft:tiny", "--out", str(questions), "--no-progress"
    )
    assert code == 2 and "is the input file itself" in err and "Traceback" not in err
    assert questions.read_bytes() == before


def test_a_rerun_with_another_system_prompt_or_rule_is_refused(tmp_path, monkeypatch, questions):
    out = tmp_path / "s.jsonl"
    with FakeOpenAI(gold_replies(questions, right={0}), api_key=KEY) as server:
        monkeypatch.setenv("NLFT_TEST_KEY", KEY)
        base = [
            "sample", str(SAMPLE_GSM8K_TEST), "--limit", "2", "--backend", "openai", "--model", "served", "--base-url",
            server.url, "--api-key-env", "NLFT_TEST_KEY", "--out", str(out), "--no-progress", "--split", "test",
        ]  # fmt: skip
        assert _cli(*base, "--system", "Prompt A")[0] == 0
        rows = out.read_text()
        code, err = _cli(*base, "--system", "Prompt B", "--limit", "3")
        assert code == 2 and "other settings" in err and "system_override" in err
        code, err = _cli(*base, "--system", "Prompt A", "--rule", "strict", "--limit", "3")
        assert code == 2 and "rule" in err
        assert out.read_text() == rows  # nothing mixed in
        assert all(
            r["rule"] == "authors" and r["prompt"]["system_override"] == "Prompt A" for r in read_jsonl(out)
        )


def test_all_requests_failing_is_a_non_zero_exit_and_an_empty_question_file_is_refused(
    tmp_path, monkeypatch, questions
):
    out = tmp_path / "s.jsonl"
    with FakeOpenAI(
        gold_replies(questions, right=set()), lambda text, attempt: "pinned", api_key=KEY
    ) as server:
        monkeypatch.setenv("NLFT_TEST_KEY", KEY)
        code, _ = _cli(
            "sample", str(SAMPLE_GSM8K_TEST), "--limit", "3", "--backend", "openai", "--model", "served", "--base-url",
            server.url, "--api-key-env", "NLFT_TEST_KEY", "--out", str(out), "--no-progress", "--split", "test",
        )  # fmt: skip
    assert code == 1
    failed = read_jsonl(tmp_path / "s.failed.jsonl")
    assert len(failed) == 3 and all("Server is pinned" in f["error"] and f["attempts"] == 1 for f in failed)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = _cli("sample", str(empty), "--model", "nlft:tiny", "--out", str(tmp_path / "e.jsonl"))
    assert code == 2 and "no questions" in err
    assert not (tmp_path / "e.jsonl").exists()


def test_the_tiny_model_works_in_sample(tmp_path):
    out = tmp_path / "s.jsonl"
    code, err = _cli(
        "sample", str(SAMPLE_GSM8K_TEST), "--split", "test", "--limit", "2", "--model", "nlft:tiny",
        "--max-new-tokens", "4", "--temperature", "0", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert [r["model"] for r in read_jsonl(out)] == ["nlft:tiny", "nlft:tiny"]


def test_extra_body_reaches_the_server_and_identical_samples_at_temperature_are_warned_about(
    tmp_path, monkeypatch, questions, caplog
):
    out = tmp_path / "s.jsonl"
    with FakeOpenAI(
        gold_replies(questions, right={0}), api_key=KEY
    ) as server:  # replies ignore the temperature
        monkeypatch.setenv("NLFT_TEST_KEY", KEY)
        with caplog.at_level("WARNING", logger="nlft"):
            code, err = _cli(
                "sample", str(SAMPLE_GSM8K_TEST), "--split", "test", "--limit", "2", "--samples", "2",
                "--temperature", "0.8", "--backend", "openai", "--model", "served", "--base-url", server.url,
                "--api-key-env", "NLFT_TEST_KEY", "--extra-body", '{"do_sample": true}', "--out", str(out),
                "--no-progress",
            )  # fmt: skip
        bodies = list(server.bodies)
    assert code == 0, err
    assert all(body.get("do_sample") is True for body in bodies) and len(bodies) == 4
    assert "identical" in caplog.text and "do_sample" in caplog.text


def test_a_file_sampled_from_other_questions_under_the_same_ids_is_not_resumed(
    tmp_path, monkeypatch, questions
):
    """Audit N-21: qB.jsonl's questions (the same ids as qA's) got "0 new, 4 from an earlier run"."""
    from dataclasses import replace

    out = tmp_path / "samples.jsonl"
    other = [replace(q, question=q.question + " (another question)") for q in questions[:2]]
    with FakeOpenAI(gold_replies(questions, set()), api_key=KEY) as server:
        backend, options = openai_backend(server, monkeypatch)
        sample_questions(questions[:2], out, backend, provenance=options.describe(), progress=False)
        before = out.read_bytes()
        with pytest.raises(ValueError, match="samples of other inputs under the same ids"):
            sample_questions(other, out, backend, provenance=options.describe(), progress=False)
        assert out.read_bytes() == before
        again = sample_questions(questions[:2], out, backend, provenance=options.describe(), progress=False)
        assert again.new == 0 and again.earlier == 2
