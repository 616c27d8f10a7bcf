import json

import pytest

from nlft.records import RecordError, load_questions, load_records, records_from_dicts

GOOD = {
    "id": "r1",
    "question": "What is 2+3?",
    "response": "2+3=5\n#### 5",
    "reference": "#### 5",
    "judgment": None,
}
WRONG = {
    "id": "r2",
    "question": "What is 2+3?",
    "response": "2+3=6\n#### 6",
    "reference": "#### 5",
    "judgment": "2+3 is 5.",
}


def jsonl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_jsonl_with_our_field_names_loads(write):
    records = load_records(write("a.jsonl", jsonl(GOOD, WRONG)))
    assert [r.id for r in records] == ["r1", "r2"]
    assert records[0].is_correct and not records[1].is_correct
    assert records[1].judgment == "2+3 is 5."


def test_authors_format_loads_unchanged(write):
    # The NLFT authors' files: a JSON array with instruction/input/output/judgment/answer and integer ids.
    authors = [
        {
            "id": 7,
            "instruction": "Solve it.",
            "input": "What is 2+3?",
            "output": "5\n#### 5",
            "judgment": None,
            "answer": "#### 5",
        },
        {
            "id": 8,
            "instruction": "Solve it.",
            "input": "What is 2+4?",
            "output": "7\n#### 7",
            "judgment": "Wrong sum.",
            "answer": "#### 6",
        },
    ]
    path = write("NLFT800.json", json.dumps(authors, indent=2))
    records = load_records(path)
    assert [r.id for r in records] == ["7", "8"]
    assert records[0].system == "Solve it."
    assert records[0].question == "What is 2+3?"
    assert records[0].response == "5\n#### 5"
    assert records[0].reference == "#### 5"
    assert records[0].is_correct and records[1].judgment == "Wrong sum."


def test_json_array_errors_name_the_element_line(write):
    rows = [GOOD, {**WRONG, "response": ""}]
    path = write("a.json", json.dumps(rows, indent=2))
    with pytest.raises(RecordError) as info:
        load_records(path)
    msg = str(info.value)
    starts = [i + 1 for i, line in enumerate(json.dumps(rows, indent=2).splitlines()) if line == "  {"]
    line_of_second = starts[1]
    assert f"{path}:element 1 (line {line_of_second})" in msg
    assert "field 'response'" in msg and "empty" in msg


def test_json_lines_named_json_load(write):
    assert len(load_records(write("a.json", jsonl(GOOD, WRONG)))) == 2


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({k: v for k, v in GOOD.items() if k != "question"}, "question", "missing"),
        ({**GOOD, "response": ""}, "response", "is empty"),
        ({**GOOD, "response": "   \n"}, "response", "blank"),
        ({**GOOD, "judgment": ""}, "judgment", "empty string"),
        ({**GOOD, "judgment": 3}, "judgment", "must be a string or null, got int"),
        ({**GOOD, "question": ["a"]}, "question", "must be a string, got list"),
        ({**GOOD, "id": 1.5}, "id", "string or an integer"),
        ({**GOOD, "correct": "yes"}, "correct", "true, false or null"),
        ({**GOOD, "correct": True, "judgment": "bad"}, "judgment", "marked correct"),
        ({k: v for k, v in GOOD.items() if k != "reference"}, "reference", "missing"),
    ],
)
def test_each_bad_field_is_named_with_file_and_line(write, row, field, words):
    path = write("bad.jsonl", jsonl(WRONG, row))
    with pytest.raises(RecordError) as info:
        load_records(path)
    (problem,) = info.value.problems
    assert problem.source == str(path) and problem.location == "line 2"
    assert problem.field == field
    assert words in problem.message
    assert f"{path}:line 2" in str(info.value) and f"field '{field}'" in str(info.value)


def test_duplicate_id_points_at_both_lines(write):
    path = write("dup.jsonl", jsonl(GOOD, WRONG, {**WRONG, "id": "r1"}))
    with pytest.raises(RecordError) as info:
        load_records(path)
    (problem,) = info.value.problems
    assert problem.location == "line 3" and problem.field == "id"
    assert "duplicate id 'r1'" in problem.message and "line 1" in problem.message


def test_non_utf8_bytes_are_reported_with_line_and_column(write):
    good = json.dumps(GOOD).encode()
    bad = b'{"id": "r9", "question": "caf\xe9?", "response": "x", "reference": "y"}'
    path = write("latin1.jsonl", good + b"\n" + bad + b"\n")
    with pytest.raises(RecordError) as info:
        load_records(path)
    (problem,) = info.value.problems
    assert problem.location == "line 2"
    assert "not valid UTF-8" in problem.message and "0xe9" in problem.message


def test_invalid_json_line_is_reported(write):
    path = write("broken.jsonl", jsonl(GOOD) + '{"id": "x", "question": \n')
    with pytest.raises(RecordError) as info:
        load_records(path)
    assert info.value.problems[0].location == "line 2"
    assert "not valid JSON" in info.value.problems[0].message


def test_all_bad_lines_listed_at_once(write):
    rows = [GOOD, {**WRONG, "response": ""}, {**WRONG, "id": "r3"}, {**WRONG, "id": "r4", "judgment": ""}]
    path = write("many.jsonl", jsonl(*rows))
    with pytest.raises(RecordError) as info:
        load_records(path)
    assert [p.location for p in info.value.problems] == ["line 2", "line 4"]
    assert "--skip-invalid" in str(info.value)


def test_skip_invalid_skips_and_counts(write):
    rows = [GOOD, {**WRONG, "response": ""}, {**WRONG, "id": "r3"}, {**WRONG, "id": "r4", "judgment": ""}]
    records = load_records(write("many.jsonl", jsonl(*rows)), skip_invalid=True)
    assert [r.id for r in records] == ["r1", "r3"]
    assert len(records.skipped) == 2


def test_missing_id_gets_a_stable_content_id(write):
    row = {k: v for k, v in GOOD.items() if k != "id"}
    a = load_records(write("a.jsonl", jsonl(row)))[0].id
    b = load_records(write("b.jsonl", jsonl({"note": "x", **row})))[0].id
    assert a == b and a.startswith("rec-")


def test_graded_wrong_without_judgment_is_kept_as_unjudged(write):
    rec = load_records(write("g.jsonl", jsonl({**GOOD, "correct": False})))[0]
    assert not rec.is_correct and rec.judgment is None


def test_extra_fields_survive_a_round_trip(write):
    rec = load_records(write("x.jsonl", jsonl({**WRONG, "source": "mathcritique", "score": 3})))[0]
    assert rec.extra == {"source": "mathcritique", "score": 3}
    again = records_from_dicts([rec.to_dict()])[0]
    assert again.to_dict() == rec.to_dict()
    assert again.extra == rec.extra and again.is_correct == rec.is_correct


def test_saved_hf_dataset_folder_loads_with_row_numbers(tmp_path):
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_list([GOOD, {**WRONG, "response": ""}]).save_to_disk(str(folder))
    with pytest.raises(RecordError) as info:
        load_records(folder)
    assert info.value.problems[0].location == "row 1"
    assert len(load_records(folder, skip_invalid=True)) == 1


def test_local_load_dataset_path_loads(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "train.jsonl").write_text(jsonl(GOOD, WRONG))
    records = load_records(str(folder), split="train")
    assert {r.id for r in records} == {"r1", "r2"}


def test_unsupported_extension_and_missing_file_are_clear(write, tmp_path):
    with pytest.raises(ValueError, match="unsupported file type"):
        load_records(write("a.csv", "x"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_records(tmp_path / "nope.jsonl")


def test_questions_accept_gsm8k_fields(write):
    qs = load_questions(write("q.jsonl", jsonl({"question": "What is 1+1?", "answer": "1+1=2\n#### 2"})))
    assert qs[0].question == "What is 1+1?" and qs[0].reference.endswith("#### 2")


def test_ids_with_terminal_controls_are_printed_escaped(tmp_path, capsys):
    """Audit N-9: a dataset's id cleared the screen, set the window title and forged `nlft data validate`'s verdict."""
    import json

    import pytest

    from nlft.cli import main

    evil = "\x1b[2J\x1b[H\x1b]0;owned\x07FAKE: all 500 records valid\r"
    path = tmp_path / "esc.jsonl"
    path.write_text(json.dumps({"id": evil, "question": "q", "response": "", "reference": "#### 1"}) + "\n")
    with pytest.raises(SystemExit):
        main(["data", "validate", str(path)])
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        assert "\x1b" not in stream and "\x07" not in stream and "\r" not in stream
    assert "\\x1b[2J" in captured.out + captured.err


def test_messages_say_what_is_wrong_with_links_whitespace_judgments_and_empty_files(tmp_path):
    """Audit N-31 and old #27: a symlink loop was "no such file", a whitespace-only judgment "an empty string", and an
    empty file "0 invalid records:" before "no usable records"."""
    import pytest

    from nlft.records import RecordError, load_records

    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    with pytest.raises(FileNotFoundError, match="a symbolic link loop"):
        load_records(tmp_path / "loop1")
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "nothing.jsonl")
    with pytest.raises(FileNotFoundError, match="a symbolic link to nothing"):
        load_records(tmp_path / "dangling.jsonl")
    blank = tmp_path / "ws.jsonl"
    blank.write_text(
        '{"id": "r1", "question": "q", "response": "a", "reference": "#### 1", "judgment": "   "}\n'
    )
    with pytest.raises(RecordError, match="holds only whitespace"):
        load_records(blank)
    assert (
        str(RecordError([], hint="no usable records in x.jsonl (0 skipped)"))
        == "no usable records in x.jsonl (0 skipped)"
    )
