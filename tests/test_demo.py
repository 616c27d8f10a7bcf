"""nlft demo's folder: only what an earlier demo made is ever replaced."""

import json

import pytest

from nlft.demo import MARKER, prepare_out


def test_a_folder_no_demo_made_is_refused_untouched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "other-run").mkdir()
    with pytest.raises(FileExistsError, match="no earlier demo made it"):
        prepare_out(out, ("data", "nlft"))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "other-run"]


def test_an_earlier_demo_is_replaced_and_nothing_else(tmp_path):
    out = tmp_path / "demo"
    prepare_out(out, ("data", "nlft"))
    assert json.loads((out / MARKER).read_text())["entries"] == ["data", "nlft"]
    (out / "data").mkdir()
    (out / "data" / "nlft.jsonl").write_text("{}")
    (out / "nlft").mkdir()
    (out / "notes.txt").write_text("added by the user later")
    prepare_out(out, ("data", "nlft"))
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "notes.txt"]


def test_new_and_empty_folders_are_used(tmp_path):
    prepare_out(tmp_path / "new", ("data",))
    (tmp_path / "empty").mkdir()
    prepare_out(tmp_path / "empty", ("data",))
    assert (tmp_path / "new" / MARKER).is_file() and (tmp_path / "empty" / MARKER).is_file()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "new")
    with pytest.raises(ValueError, match="not a folder"):
        prepare_out(link, ("data",))
