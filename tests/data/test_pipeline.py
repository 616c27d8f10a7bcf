import json

import pytest

from nlft.cli import main
from nlft.jsonl import read_jsonl
from nlft.records import load_records
from nlft.tasks.gsm8k import SAMPLE_GSM8K_TEST, load_gsm8k

from ..fake_openai import FakeOpenAI

KEY = "sk-pipeline-test-key-0a1b2c3d4e5f"


@pytest.fixture
def gsm8k_dir(tmp_path):
    """A GSM8K folder whose train.jsonl holds the 50 test questions shipped in the package."""
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    (folder / "train.jsonl").write_text(SAMPLE_GSM8K_TEST.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def replies_right_on_even(folder):
    """Server replies: a right worked answer to even-numbered questions, a wrong one (off by one) to odd ones."""
    by_text = {}
    for i, q in enumerate(load_gsm8k("train", folder)):
        gold = int(q.extra["gold"])
        answer = gold if i % 2 == 0 else gold + 1
        by_text[q.question] = f"First, {answer - 1} + 1 = {answer}.\n#### {answer}"
    return lambda text: by_text[text]


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_data_make_from_a_gsm8k_split_to_a_dataset_resumes_when_the_pool_is_too_small(
    tmp_path, gsm8k_dir, monkeypatch, capsys
):
    monkeypatch.setenv("NLFT_TEST_KEY", KEY)
    out = tmp_path / "made"
    with FakeOpenAI(replies_right_on_even(gsm8k_dir), api_key=KEY) as server:
        base = [
            "data", "make", str(gsm8k_dir), "--split", "train", "--backend", "openai", "--model", "served",
            "--base-url", server.url, "--api-key-env", "NLFT_TEST_KEY", "--judge", "arithmetic", "--ratio", "1:1",
            "--out", str(out), "--no-progress",
        ]  # fmt: skip
        code, stdout, _ = run([*base, "--limit", "6", "--size", "4"], capsys)
        assert code == 0
        assert (
            "3 correct, 3 wrong, 0 failed" in stdout
            and "selected 4 of 6 pool records: 2 correct, 2 wrong" in stdout
        )
        assert len(server.log) == 6

        # 8 records at 1:1 need 4 correct ones; 6 questions gave 3. The error says what to do, the work is kept.
        code, _, err = run([*base, "--limit", "6", "--size", "8"], capsys)
        assert code == 2 and "needs 4 correct (the pool has 3)" in err and "larger --limit" in err
        assert len(server.log) == 6  # nothing was asked again

        code, stdout, _ = run([*base, "--limit", "10", "--size", "8"], capsys)
        assert code == 0 and "4 new in this run, 6 from an earlier run" in stdout
        assert len(server.log) == 10  # only the four new questions were asked
    records = load_records(out / "data" / "nlft.jsonl")
    assert len(records) == 8 and sum(r.is_correct for r in records) == 4
    assert all(r.judgment for r in records if not r.is_correct)
    assert len(read_jsonl(out / "data" / "sft.jsonl")) == 8
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["pool"].endswith("judged.jsonl") and manifest["ratio"] == "1:1"
    ids = [row["id"] for row in read_jsonl(out / "judged.jsonl")]
    assert len(ids) == len(set(ids)) == 10
    for path in out.rglob("*"):
        assert not path.is_file() or KEY not in path.read_text()


def test_data_make_with_the_tiny_model_and_the_arithmetic_judge(tmp_path, gsm8k_dir, tiny_model_dir, capsys):
    out = tmp_path / "made"
    argv = [
        "data", "make", str(gsm8k_dir), "--split", "train", "--limit", "3", "--samples", "2", "--temperature", "1.0",
        "--max-new-tokens", "6", "--model", str(tiny_model_dir), "--device", "cpu", "--size", "4", "--ratio", "wrong",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "6 of 6 samples (3 questions x 2)" in stdout
    records = load_records(out / "data" / "nlft.jsonl")
    assert len(records) == 4 and all(not r.is_correct and r.judgment for r in records)
    assert {r.id.rsplit("-s", 1)[0] for r in records} <= {f"gsm8k-train-0000{i}" for i in range(3)}


def test_data_make_with_an_openai_sampler_and_an_openai_judge(tmp_path, gsm8k_dir, monkeypatch, capsys):
    monkeypatch.setenv("NLFT_TEST_KEY", KEY)
    answers = replies_right_on_even(gsm8k_dir)

    def reply(text):  # one server plays both the sampled model and the judge
        return (
            "The step 'First, ...' adds one too many." if "### Student's response:" in text else answers(text)
        )

    out = tmp_path / "made"
    with FakeOpenAI(reply, api_key=KEY) as server:
        argv = [
            "data", "make", str(gsm8k_dir), "--limit", "4", "--backend", "openai", "--model", "policy",
            "--base-url", server.url, "--api-key-env", "NLFT_TEST_KEY", "--judge", "openai", "--judge-model", "critic",
            "--judge-base-url", server.url, "--judge-api-key-env", "NLFT_TEST_KEY", "--size", "4", "--ratio", "1:1",
            "--out", str(out), "--no-progress",
        ]  # fmt: skip
        code, stdout, err = run(argv, capsys)
        assert code == 0, err
        assert [body["model"] for body in server.bodies] == ["policy"] * 4 + ["critic"] * 2
    judged = {row["id"]: row for row in read_jsonl(out / "judged.jsonl")}
    wrong = [row for row in judged.values() if not row["correct"]]
    assert len(wrong) == 2 and all(
        row["judgment"] == "The step 'First, ...' adds one too many." for row in wrong
    )
    assert all(row["judge"]["model"] == "critic" for row in wrong)


def test_data_make_without_a_model_is_a_clear_error(tmp_path, gsm8k_dir, capsys):
    code, _, err = run(["data", "make", str(gsm8k_dir), "--size", "4", "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "no model given (--model)" in err
