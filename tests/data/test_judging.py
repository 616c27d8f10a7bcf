import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from nlft.cli import main
from nlft.data.builder import build_dataset
from nlft.data.judging import ArithmeticJudge, JudgePrompt, ModelJudge, judge_records
from nlft.jsonl import atomic_write_jsonl, read_jsonl
from nlft.models.generation import BackendOptions, HFBackend, SamplingSettings, make_backend
from nlft.models.loading import load_model
from nlft.records import load_records, records_from_dicts

from ..conftest import REPO, need_shared
from ..fake_openai import FakeOpenAI

KEY = "sk-judge-test-key-d41d8cd98f00b204"
GOLD = "Half is 10 / 2 = <<10/2=5>>5 miles.\nThe gym is 2 + 5 = <<2+5=7>>7 miles away.\n#### 7"


def record(i: int, response: str, correct: bool | None = False, judgment: str | None = None) -> dict:
    return {
        "id": f"r{i:02d}",
        "question": f"Question {i}: how far is the gym?",
        "response": response,
        "reference": GOLD,
        "judgment": judgment,
        "correct": correct,
    }


def wrong(i: int, tag: str = "") -> dict:
    return record(i, f"The gym is 10 + 2 = 12 miles away. {tag}\n#### 12")


def judge_reply(text: str) -> str:
    """The server's judge: 'praise' in the response gets a correct verdict, anything else a critique."""
    if "praise" in text:
        return "**### The response is correct. ###**"
    return (
        "The step 'The gym is 10 + 2 = 12 miles away' adds 2 to the whole distance instead of to half of it."
    )


def scripted(text: str, attempt: int) -> str:
    import re

    m = re.search(r"fault:([\w-]+):(\d+)", text)
    return m.group(1) if m and attempt <= int(m.group(2)) else "ok"


def openai_judge(server, monkeypatch, **kwargs) -> ModelJudge:
    monkeypatch.setenv("NLFT_TEST_KEY", KEY)
    options = BackendOptions(
        backend="openai",
        model="judge-model",
        base_url=server.url,
        api_key_env="NLFT_TEST_KEY",
        timeout=0.5,
        max_retries=2,
        concurrency=4,
    )
    for k, v in kwargs.items():
        setattr(options, k, v)
    backend = make_backend(options, SamplingSettings(max_new_tokens=256, temperature=0.0))
    return ModelJudge(backend, JudgePrompt.load(), describe=options.describe())


# --------------------------------------------------------------------------------------------------------------
# The prompt and the verdict
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "correct"),
    [
        ("### The response is correct. ###", True),
        ("  the response is correct  ", True),
        ("**The response is correct**", True),
        ("Checking every step...\n\n### The Response Is Correct ###", True),
        ("The response is correct up to the second step, but then it adds 2 to 10.", False),
        ("### The response is not correct. ###\nIt adds 2 to the wrong distance.", False),
        ("The response is incorrect.", False),
        ("The student's response is wrong. The response is correct only if ...", False),
    ],
)
def test_a_correct_verdict_is_a_line_of_its_own(reply, correct):
    assert JudgePrompt.load().says_correct(reply) is correct


def test_the_default_prompt_shows_question_response_and_reference():
    prompt = JudgePrompt.load()
    (system, user) = prompt.messages(load_records_from([wrong(1)])[0])
    assert "### The response is correct. ###" in system["content"]
    assert (
        "Question 1: how far" in user["content"]
        and "10 + 2 = 12" in user["content"]
        and "#### 7" in user["content"]
    )


def test_a_judge_prompt_from_a_file(write):
    path = write(
        "judge.yaml", "system: Grade {question}.\nuser: '{response} vs {reference}'\ncorrect_marker: LGTM\n"
    )
    prompt = JudgePrompt.load(path)
    messages = prompt.messages(load_records_from([wrong(2)])[0])
    assert messages[0]["content"] == "Grade Question 2: how far is the gym?."
    assert prompt.says_correct("lgtm!") and not prompt.says_correct("The response is correct.")
    with pytest.raises(ValueError, match="missing 'user'"):
        JudgePrompt.load(write("bad.yaml", "system: x\n"))
    with pytest.raises(ValueError, match="unknown keys"):
        JudgePrompt.load(write("bad2.yaml", "system: x\nuser: y\ntemperature: 3\n"))
    with pytest.raises(FileNotFoundError):
        JudgePrompt.load("no-such-prompt.yaml")


def load_records_from(rows):
    from nlft.records import records_from_dicts

    return records_from_dicts(rows)


# --------------------------------------------------------------------------------------------------------------
# The openai judge against the local test server
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # seconds of real timeouts and retries
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_openai_judge_every_record_ends_judged_or_failed_once_and_a_rerun_retries_only_failures(
    tmp_path, monkeypatch, stream
):
    # Faults that heal after some attempts (r03-r08), and two that never do (r10, r11).
    faults = ["429:2", "500:1", "slow:1", "bad-json:2", "no-choices:1", "html:1", "500:99", "null-content:99"]
    if stream:
        faults = [
            "429:2",
            "500:1",
            "slow:1",
            "stream-cut:2",
            "stream-garbage:1",
            "stream-stall:1",
            "500:99",
            "stream-error:99",
        ]
    rows = [
        record(0, "Half is 5, so the gym is 7 miles.\n#### 7", correct=True),  # correct: passes through
        record(
            1, "Says 12.\n#### 12", judgment="Adds 2 to the whole distance."
        ),  # judged already: passes through
        wrong(2),
        *(wrong(i, f"fault:{fault}") for i, fault in zip(range(3, 9), faults[:6])),
        wrong(9, "praise"),  # the judge says it is correct after all
        wrong(10, f"fault:{faults[6]}"),
        wrong(11, f"fault:{faults[7]}"),
    ]
    source, out = tmp_path / "samples.jsonl", tmp_path / "judged.jsonl"
    atomic_write_jsonl(source, rows)
    with FakeOpenAI(judge_reply, scripted, api_key=KEY, slow_s=1.0) as server:
        judge = openai_judge(server, monkeypatch, stream=stream)
        summary = judge_records(source, out, judge, progress=False)
        for fault in faults:
            assert server.served(fault.split(":")[0]) >= 1
        assert (summary.records, summary.passed_through, summary.to_judge) == (12, 2, 10)
        assert (summary.judged_wrong, summary.judged_correct) == (7, 1)
        assert sorted(f["id"] for f in summary.failed) == ["r10", "r11"]
        assert "failed (judge_error on the record" in summary.summary()

        result = {row["id"]: row for row in read_jsonl(out)}
        assert len(read_jsonl(out)) == 12 and sorted(result) == [f"r{i:02d}" for i in range(12)]
        for i in range(2, 9):
            assert result[f"r{i:02d}"]["judgment"].startswith("The step 'The gym is 10 + 2 = 12")
            assert result[f"r{i:02d}"]["correct"] is False
            assert result[f"r{i:02d}"]["judge"] == {
                "backend": "openai",
                "model": "judge-model",
                "prompt": "math",
                "prompt_wording": JudgePrompt.load("math").fingerprint(),
                "max_new_tokens": 256,
                "verdict": "wrong",
            }
        assert result["r09"]["correct"] is True and result["r09"]["judgment"] is None
        assert result["r00"] == {**rows[0]} and result["r01"]["judgment"] == "Adds 2 to the whole distance."
        for rid in ("r10", "r11"):
            assert (
                result[rid]["judgment"] is None
                and result[rid]["correct"] is False
                and result[rid]["judge_error"]
            )
        assert result["r10"]["judge_error"].startswith("HTTP 500")
        assert result["r11"]["judge_error"].startswith("broken stream" if stream else "malformed reply")
        # The output is a valid records file and a pool the builder accepts (failed records are left out).
        assert len(load_records(out)) == 12
        built = build_dataset(out, tmp_path / "data", size=9, ratio="natural", seed=0)
        assert built.selection.unjudged == 2

        server.faults = lambda text, attempt: "ok"
        asked_before = len(server.log)
        again = judge_records(source, out, judge, progress=False)
        asked = [text for text, _ in server.log[asked_before:]]
    assert len(asked) == 2 and all("fault:" in t and ":99" in t for t in asked)  # only the failed two
    assert again.retried == 2 and again.failed == [] and again.judged_wrong == 9
    final = read_jsonl(out)
    assert sorted(row["id"] for row in final) == [f"r{i:02d}" for i in range(12)]  # each once
    assert all("judge_error" not in row for row in final)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_openai_judge_key_never_reaches_logs_or_files(tmp_path, monkeypatch, capsys, caplog, stream):
    rows = [
        wrong(1),
        wrong(2, "fault:echo-key:99"),
        wrong(3, "fault:429:1"),
        wrong(4, "fault:stream-cut:1" if stream else "fault:bad-json:1"),
    ]
    source, out = tmp_path / "samples.jsonl", tmp_path / "judged.jsonl"
    atomic_write_jsonl(source, rows)
    monkeypatch.setenv("NLFT_TEST_KEY", KEY)
    monkeypatch.setenv("OPENAI_LOG", "debug")
    caplog.set_level(logging.DEBUG)
    with FakeOpenAI(judge_reply, scripted, api_key=KEY) as server:
        argv = [
            "judge", str(source), "--out", str(out), "--backend", "openai", "--model", "judge-model", "--base-url", server.url,
            "--api-key-env", "NLFT_TEST_KEY", "--max-retries", "2", "--timeout", "5", "--no-progress",
        ] + (["--stream"] if stream else [])  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert server.served("echo-key") >= 1  # the server did echo the key back
    assert info.value.code == 1  # a record failed for good: not done, a rerun retries it
    captured = capsys.readouterr()
    assert "1 failed" in captured.out
    everything = [captured.out, captured.err, caplog.text] + [
        p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()
    ]
    assert caplog.records and all(KEY not in text for text in everything)
    assert "<redacted>" in read_jsonl(out)[[r["id"] for r in read_jsonl(out)].index("r02")]["judge_error"]


def test_a_rerun_with_another_judge_is_refused(tmp_path, monkeypatch):
    source, out = tmp_path / "s.jsonl", tmp_path / "j.jsonl"
    atomic_write_jsonl(source, [wrong(1), wrong(2)])
    judge_records(source, out, ArithmeticJudge(), progress=False)
    with FakeOpenAI(judge_reply, api_key=KEY) as server, pytest.raises(ValueError, match="other settings"):
        judge_records(source, out, openai_judge(server, monkeypatch), progress=False)


# --------------------------------------------------------------------------------------------------------------
# The arithmetic and hf judges
# --------------------------------------------------------------------------------------------------------------


def test_arithmetic_judge_writes_step_judgments_and_marks_right_answers_correct(tmp_path):
    rows = [
        wrong(1),
        record(2, "Half is 10 / 2 = 5.\nThe gym is 2 + 5 = 8 miles away.\n#### 8"),
        record(3, "Half is 10/2 = 5 and 5 + 2 = 7.\n#### 7"),  # graded wrong elsewhere, but it is right
    ]
    source, out = tmp_path / "s.jsonl", tmp_path / "j.jsonl"
    atomic_write_jsonl(source, rows)
    summary = judge_records(source, out, ArithmeticJudge(), progress=False)
    assert (summary.judged_wrong, summary.judged_correct, summary.failed) == (2, 1, [])
    result = {row["id"]: row for row in read_jsonl(out)}
    assert '"The gym is 10 + 2 = 12 miles away."' in result["r01"]["judgment"]
    assert "2 + 5 = 8, but 2 + 5 = 7" in result["r02"]["judgment"]
    assert result["r02"]["arithmetic"]["reason"] == "arithmetic"
    assert result["r03"]["correct"] is True and result["r03"]["judgment"] is None


@pytest.mark.shared
def test_arithmetic_judge_on_mathcritique_writes_a_judgment_for_every_wrong_final_answer(tmp_path):
    from nlft.data.sources import from_mathcritique

    path = need_shared("data", "mathcritique", "mathcritique_gsm8k_triples.jsonl")
    rows = [{**r.to_dict(), "judgment": None, "correct": False} for r in from_mathcritique(path)]
    source, out = tmp_path / "mc.jsonl", tmp_path / "judged.jsonl"
    atomic_write_jsonl(source, rows)
    summary = judge_records(source, out, ArithmeticJudge(), progress=False)
    assert summary.to_judge == 100 and summary.judged_wrong == 100 and summary.failed == []
    assert all(row["judgment"] for row in read_jsonl(out))


def test_hf_judge_with_the_tiny_model(tmp_path, tiny_model_dir):
    model, tok, _ = load_model(tiny_model_dir, device="cpu")
    backend = HFBackend(model, tok, SamplingSettings(max_new_tokens=12, temperature=0.0), batch_size=2)
    source, out = tmp_path / "s.jsonl", tmp_path / "j.jsonl"
    atomic_write_jsonl(source, [wrong(1), wrong(2), record(3, "ok\n#### 7", correct=True)])
    summary = judge_records(
        source, out, ModelJudge(backend, describe={"backend": "hf", "model": "tiny"}), progress=False
    )
    assert summary.judged_wrong + summary.judged_correct + len(summary.failed) == 2
    rows = {row["id"]: row for row in read_jsonl(out)}
    assert rows["r01"]["judge"]["backend"] == "hf" and rows["r03"]["correct"] is True
    assert all(
        rows[r]["judgment"] or rows[r]["correct"] or rows[r].get("judge_error") for r in ("r01", "r02")
    )
    assert len(load_records(out)) == 3


# --------------------------------------------------------------------------------------------------------------
# A judge run killed with SIGKILL
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_judging_killed_with_sigkill_and_rerun_yields_every_record_once(tmp_path):
    rows = [wrong(i, "praise" if i % 5 == 0 else "") for i in range(40)]
    source, out = tmp_path / "s.jsonl", tmp_path / "j.jsonl"
    atomic_write_jsonl(source, rows)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "NLFT_TEST_KEY": KEY}
    with FakeOpenAI(judge_reply, api_key=KEY, delay_s=0.05) as server:
        args = [
            sys.executable, "-m", "nlft", "judge", str(source), "--out", str(out), "--backend", "openai", "--model", "judge-model",
            "--base-url", server.url, "--api-key-env", "NLFT_TEST_KEY", "--concurrency", "2", "--no-progress",
        ]  # fmt: skip
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        written = out.read_text().count("\n")
        assert 10 <= written < 40, "the run must be killed mid-way"
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        asked = len(server.log)
    final = read_jsonl(out)
    ids = [row["id"] for row in final]
    assert len(ids) == len(set(ids)) == 40
    assert sum(row["correct"] for row in final) == 8 and all(
        row["judgment"] for row in final if not row["correct"]
    )
    assert asked <= 40 + 2 + 1  # finished records were not judged again
    assert f"{written} judged by an earlier run" in done.stdout
    assert KEY not in done.stdout + done.stderr + out.read_text()


# -- hostile inputs ----------------------------------------------------------------------------------------


def _cli(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code, err.getvalue()


WRONG_ROW = {
    "id": "w",
    "question": "What is 3+4?",
    "response": "3+4 = <<3+4=8>>8\n#### 8",
    "reference": "3+4=<<3+4=7>>7\n#### 7",
    "correct": False,
}


def test_judging_a_file_into_itself_or_into_a_folder_is_refused(tmp_path):
    source = tmp_path / "x.jsonl"
    atomic_write_jsonl(source, [WRONG_ROW])
    before = source.read_bytes()
    code, err = _cli("judge", str(source), "--out", str(source), "--no-progress")
    assert code == 2 and "is the input file itself" in err
    code, err = _cli("judge", str(source), "--out", str(tmp_path), "--no-progress")
    assert code == 2 and "is a folder" in err and "Traceback" not in err
    assert source.read_bytes() == before
    pool = tmp_path / "pool.json"
    pool.write_text('[\n  {"id": "a"}\n]')
    code, err = _cli("judge", str(source), "--out", str(pool), "--no-progress")
    assert code == 2 and pool.read_text() == '[\n  {"id": "a"}\n]'


def test_the_judges_rule_is_recorded_and_a_rerun_with_another_is_refused(tmp_path):
    source, out = tmp_path / "x.jsonl", tmp_path / "j.jsonl"
    atomic_write_jsonl(source, [WRONG_ROW])
    assert _cli("judge", str(source), "--out", str(out), "--no-progress")[0] == 0
    assert read_jsonl(out)[0]["judge"] == {"backend": "arithmetic", "rule": "authors", "verdict": "wrong"}
    atomic_write_jsonl(source, [WRONG_ROW, {**WRONG_ROW, "id": "w2"}])
    code, err = _cli("judge", str(source), "--out", str(out), "--rule", "strict", "--no-progress")
    assert code == 2 and "rule" in err and len(read_jsonl(out)) == 1


def test_a_huge_response_is_a_judge_error_not_a_hang(tmp_path):
    import time

    huge = {**WRONG_ROW, "id": "huge", "response": "1+1=<<1+1=3>>3 " * 500_000 + "\n#### 3"}  # 7.5 MB
    judge = ArithmeticJudge()
    started = time.monotonic()
    [(_, verdict)] = list(judge.judge(records_from_dicts([huge])))
    assert time.monotonic() - started < 1.0
    assert verdict.error and "characters long" in verdict.error


def test_empty_records_are_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = _cli("judge", str(empty), "--out", str(tmp_path / "j.jsonl"), "--no-progress")
    assert code == 2 and "no records" in err and not (tmp_path / "j.jsonl").exists()


def test_a_users_jsonl_is_never_adopted_as_judge_results(tmp_path):
    """Audit N-14: any JSONL with an id per row was resumed into: its torn line cut, judged records appended."""
    source = tmp_path / "s.jsonl"
    atomic_write_jsonl(source, [wrong(1), wrong(2)])
    user = tmp_path / "user.jsonl"
    user.write_text('{"id": "x", "note": "user data"}\n{"id": "y", "note": "user da')
    before = user.read_bytes()
    code, err = _cli("judge", str(source), "--out", str(user), "--no-progress")
    assert code == 2 and "not judgments of these records" in err
    assert user.read_bytes() == before


def test_judgments_of_other_records_under_the_same_ids_are_not_resumed(tmp_path):
    """Audit N-22: another model's answers under the same ids were reported as "judged by an earlier run"."""
    first, second, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "j.jsonl"
    atomic_write_jsonl(first, [wrong(1), wrong(2)])
    atomic_write_jsonl(second, [record(1, "Step 1: 3*3=10.\n#### 10"), record(2, "#### 11")])
    judge_records(first, out, ArithmeticJudge(), progress=False)
    before = out.read_bytes()
    with pytest.raises(ValueError, match="judgments of other inputs under the same ids"):
        judge_records(second, out, ArithmeticJudge(), progress=False)
    assert out.read_bytes() == before
    judge_records(first, out, ArithmeticJudge(), progress=False)  # the same records resume as before


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 3])
def test_ctrl_c_ends_an_api_judge_within_seconds_without_a_traceback(tmp_path, presses):
    """Audit N-7: Ctrl-C waited for the requests in flight (up to --timeout, 58 s against a dripping server), and a
    second Ctrl-C showed the executor's traceback."""
    import os
    import signal
    import subprocess
    import sys
    import time

    source = tmp_path / "s.jsonl"
    atomic_write_jsonl(source, [wrong(i) for i in range(6)])
    with FakeOpenAI(judge_reply, faults=lambda text, attempt: "slow", slow_s=60, api_key=KEY) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nlft", "judge", str(source), "--out", str(tmp_path / "j.jsonl"), "--backend",
             "openai", "--model", "jm", "--base-url", server.url, "--timeout", "90", "--max-retries", "0",
             "--no-progress"],
            env={**os.environ, "OPENAI_API_KEY": KEY}, stderr=subprocess.PIPE, text=True,
            # As a shell starts it: SIGINT at its default (a pytest-xdist worker ignores it, and children inherit that).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not server.log and time.monotonic() < deadline:  # until a request is in flight
            time.sleep(0.1)
        assert server.log, "no request reached the server"
        time.sleep(0.5)
        pressed = time.monotonic()
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        try:
            _, err = proc.communicate(timeout=15)
        finally:
            proc.kill()
        took = time.monotonic() - pressed
    assert proc.returncode == 130 and "nlft: interrupted" in err and "Traceback" not in err, err[-2000:]
    assert took < 10
