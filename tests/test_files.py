"""Reading the user's files: every malformed, misplaced or mis-encoded input is one message naming the file."""

import contextlib
import io

import pytest

from nlft.cli import main
from nlft.files import check_output_file, read_yaml


def cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code, err.getvalue()


def test_yaml_errors_name_the_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: [\n")
    with pytest.raises(ValueError, match=r"bad\.yaml:3:1: not valid YAML"):
        read_yaml(bad)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.yaml:1: not valid UTF-8 \(byte 0xe9"):
        read_yaml(latin)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_yaml(tmp_path)


@pytest.mark.parametrize(
    ("flag", "command"),
    [
        ("--templates", ["data", "build", "{pool}", "--size", "2", "--out", "{tmp}/d"]),
        (
            "--judge-prompt",
            [
                "judge",
                "{pool}",
                "--backend",
                "openai",
                "--model",
                "m",
                "--base-url",
                "http://127.0.0.1:9",
                "--out",
                "{tmp}/j.jsonl",
            ],
        ),
    ],
)
def test_malformed_template_and_judge_prompt_files_are_named(tmp_path, flag, command):
    from nlft.jsonl import atomic_write_jsonl

    from .conftest import ROWS

    pool = tmp_path / "pool.jsonl"
    atomic_write_jsonl(pool, [{**r, "judgment": r.get("judgment")} for r in ROWS])
    argv = [a.replace("{pool}", str(pool)).replace("{tmp}", str(tmp_path)) for a in command]
    bad = tmp_path / "broken.yaml"
    bad.write_text("system: [unclosed\n")
    for value, words in ((str(bad), "broken.yaml:2:1: not valid YAML"), (str(tmp_path), "is a folder")):
        code, err = cli(*argv, flag, value)
        assert code == 2 and words in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "import", "gold", "mini-math", "--limit", "2", "--out", "{dir}"],
        ["saliency", "--snapshot", "{dir}", "--out", "{dir}"],
    ],
)
def test_an_output_that_is_a_folder_is_refused(tmp_path, argv):
    code, err = cli(*(a.replace("{dir}", str(tmp_path)) for a in argv))
    assert code == 2 and "is a folder" in err and "Traceback" not in err


def test_check_output_file_refuses_links_folders_and_inputs(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("x")
    (tmp_path / "l.jsonl").symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        check_output_file(tmp_path / "l.jsonl")
    with pytest.raises(IsADirectoryError):
        check_output_file(tmp_path)
    with pytest.raises(ValueError, match="input file itself"):
        check_output_file(tmp_path / "." / "t.txt", inputs=(target,))
    assert check_output_file(tmp_path / "new.jsonl", inputs=(target,)) == tmp_path / "new.jsonl"


# An alias bomb: nine levels of nine-fold aliases, 600 bytes that expand to 9**9 strings once turned into text.
BOMB = (
    "["
    + ", ".join(
        ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    )
    + "]"
)


def test_yaml_aliases_are_refused_before_anything_expands(tmp_path):
    """Audit N-6: a config, template set or weighting file from elsewhere cannot take the machine's memory."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"learning_rate: 1.0e-4\nlora_target_modules: {BOMB}\n")
    with pytest.raises(ValueError, match=r"bomb\.yaml:2:\d+: not valid YAML \(aliases"):
        read_yaml(bomb)
    code, err = cli("train", "--config", str(bomb), "--output_dir", str(tmp_path / "run"))
    assert code == 2 and "aliases" in err and "Traceback" not in err and not (tmp_path / "run").exists()
    templates = tmp_path / "t.yaml"
    templates.write_text(f'system: "x"\nbase: {{system: "{{system}}", user: {BOMB}}}\nstd: {{system: s, user: u}}\n'
                         "judge: {system: s, user: u}\n")  # fmt: skip
    from nlft.prompts import TemplateSet

    with pytest.raises(ValueError, match="aliases"):
        TemplateSet.load(templates)


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    """Audit N-34: the last of two `threshold:` lines no longer wins silently."""
    twice = tmp_path / "w.yaml"
    twice.write_text("threshold: 1.1\nalpha: 0.5\nthreshold: 9.9\n")
    with pytest.raises(
        ValueError, match=r"w\.yaml:3:1: not valid YAML \(key 'threshold' given twice \(first on line 1\)"
    ):
        read_yaml(twice)


def test_a_named_pipe_or_device_as_output_is_refused_at_once(tmp_path):
    """Audit N-5: reading a FIFO to resume from it blocked forever; now every writer refuses it before reading."""
    import os
    import signal

    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("blocked on the pipe")))
    signal.alarm(20)
    try:
        with pytest.raises(ValueError, match="named pipe"):
            check_output_file(fifo)
        from nlft.jsonl import AppendLog

        with pytest.raises(ValueError, match="named pipe"):
            AppendLog(fifo)
        records = tmp_path / "s.jsonl"
        records.write_text(
            '{"id": "r", "question": "q", "response": "#### 1", "reference": "#### 1", "correct": true}\n'
        )
        code, err = cli("judge", str(records), "--out", str(fifo), "--no-progress")
        assert code == 2 and "named pipe" in err and "Traceback" not in err
        with pytest.raises(ValueError, match="a device"):
            check_output_file("/dev/null")
    finally:
        signal.alarm(0)
