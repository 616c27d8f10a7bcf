import os

import pytest

from nlft.jsonl import AppendLog, atomic_write_text


def test_append_log_resumes_and_never_duplicates(tmp_path):
    path = tmp_path / "r.jsonl"
    with AppendLog(path) as log:
        assert log.append({"id": "a", "v": 1})
        assert not log.append({"id": "a", "v": 2})
    with AppendLog(path) as log:
        assert log.done() == {"a"}
        log.append({"id": "b", "v": 3})
    assert [line for line in path.read_text().splitlines()] == ['{"id": "a", "v": 1}', '{"id": "b", "v": 3}']


def test_torn_last_line_from_a_kill_is_dropped(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "v": tr')
    with AppendLog(path) as log:
        assert log.done() == {"a"}
        log.append({"id": "b"})
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_damaged_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(ValueError, match=r"r.jsonl:2: not valid JSON"):
        AppendLog(path)


def test_atomic_write_leaves_no_temp_and_normal_mode(tmp_path):
    target = tmp_path / "x.txt"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_removed_rows_are_gone_from_the_file_and_can_be_written_again(tmp_path):
    path = tmp_path / "r.jsonl"
    with AppendLog(path) as log:
        for key in "abc":
            log.append({"id": key, "error": key == "b"})
        assert log.remove(["b", "zzz"]) == 1
        assert log.done() == {"a", "c"}
        assert log.append({"id": "b", "error": False})
    assert [row["id"] for row in AppendLog(path).rows()] == ["a", "c", "b"]
    assert path.read_text().count('"id": "b"') == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]
