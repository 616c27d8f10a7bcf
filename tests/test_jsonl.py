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


# -- what is not ours is never touched ------------------------------------------------------------------------


def test_a_file_that_is_not_a_results_file_is_refused_untouched(tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"question": "q1", "answer": "#### 1"}\n{"question": "q2", "answer": "#### 2"}')
    array = tmp_path / "pool.json"
    array.write_text('[\n  {"id": "a", "question": "q"},\n  {"id": "b", "question": "q"}\n]')
    for path in (questions, array):
        before = path.read_bytes()
        with pytest.raises(ValueError, match="not a results file of this job"):
            AppendLog(path)
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.json", "questions.jsonl"]  # no lock left


def test_a_symlink_is_never_written_through(tmp_path):
    target = tmp_path / "unrelated.txt"
    target.write_text("mine\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        AppendLog(link)
    assert target.read_text() == "mine\n"


def test_a_torn_line_is_cut_only_when_a_row_is_appended(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "v": tr')
    before = path.read_bytes()
    with AppendLog(path) as log:
        assert log.done() == {"a"}
    assert path.read_bytes() == before  # opened and closed: nothing changed
    with AppendLog(path) as log:
        log.append({"id": "b"})
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    complete = tmp_path / "c.jsonl"
    complete.write_text('{"id": "a"}')  # a last row without its newline is kept, and the newline added
    with AppendLog(complete) as log:
        log.append({"id": "b"})
    assert complete.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_a_second_writer_is_refused_naming_the_first_and_exact_duplicates_are_dropped(tmp_path):
    from nlft.jsonl import ResultsLocked

    path = tmp_path / "r.jsonl"
    with AppendLog(path) as log:
        log.append({"id": "a"})
        with pytest.raises(ResultsLocked, match=f"pid {os.getpid()}"):
            AppendLog(path)
    assert AppendLog.peek(path) == {"a": {"id": "a"}}  # reading needs no lock
    path.write_text(
        '{"id": "a", "v": 1}\n{"id": "b"}\n{"id": "a", "v": 1}\n'
    )  # two runs at once, before locks
    with AppendLog(path) as log:
        assert len(log) == 2
        log.append({"id": "c"})
    assert path.read_text() == '{"id": "a", "v": 1}\n{"id": "b"}\n{"id": "c"}\n'
    path.write_text('{"id": "a", "v": 1}\n{"id": "a", "v": 2}\n')
    with pytest.raises(ValueError, match="twice with different content"):
        AppendLog(path)


def test_a_full_disk_while_appending_names_the_file(tmp_path, monkeypatch):
    """Audit N-27: ENOSPC while sample/judge/eval appended said `[Errno 28] No space left on device`, no file."""
    import errno
    import os

    import pytest

    from nlft.jsonl import AppendLog

    path = tmp_path / "items.jsonl"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with AppendLog(path) as log:
        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(OSError, match=rf"{path}: No space left on device; free space and rerun") as info:
            log.append({"id": "a"})
    assert info.value.errno == errno.ENOSPC
