import json
import subprocess
import sys

import pytest

from nlft.cli import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nlft", *args], capture_output=True, text=True, timeout=300)


def listed_commands(parser) -> list[str]:
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(sub.choices)


def test_help_lists_only_commands_that_work():
    parser = build_parser()
    for name in listed_commands(parser):
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
        # Every listed command has a handler or working subcommands: no placeholders.
        has_handler = sub.get_default("func") is not None
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        assert has_handler or nested, name
        for child in nested:
            for child_name, child_parser in child.choices.items():
                assert child_parser.get_default("func") is not None, f"{name} {child_name}"


def test_console_help_runs():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "data" in out.stdout and "demo" in out.stdout


def test_data_build_cli_and_bad_input_exit_code(tmp_path, capsys):
    rows = [{"id": f"c{i}", "question": f"q{i}", "response": f"r{i}", "reference": "a"} for i in range(6)]
    rows += [
        {"id": f"w{i}", "question": f"q{i}", "response": f"x{i}", "reference": "a", "judgment": "bad"}
        for i in range(6)
    ]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit) as info:
        main(["data", "build", str(pool), "--size", "6", "--ratio", "1:2", "--out", str(tmp_path / "out")])
    assert info.value.code == 0
    assert "2 correct, 4 wrong" in capsys.readouterr().out
    assert (tmp_path / "out" / "nlft.jsonl").exists() and (tmp_path / "out" / "sft.jsonl").exists()

    pool.write_text(pool.read_text() + '{"id": "z", "question": "q", "response": "", "reference": "a"}\n')
    with pytest.raises(SystemExit) as info:
        main(["data", "build", str(pool), "--size", "6", "--out", str(tmp_path / "out2")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{pool}:line 13" in err and "field 'response'" in err
    assert not (tmp_path / "out2").exists()


def test_data_validate_reports_skipped_lines(tmp_path, capsys):
    pool = tmp_path / "p.jsonl"
    pool.write_text(
        '{"id": "a", "question": "q", "response": "r", "reference": "x"}\n{"id": "b", "question": "q"}\n'
    )
    with pytest.raises(SystemExit) as info:
        main(["data", "validate", str(pool), "--skip-invalid"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "1 valid records" in out and "line 2" in out and "field 'response'" in out


def _run(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code, err.getvalue()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (
            ["data", "import", "gold", "mini-math", "--limit", "-3", "--out", "x.jsonl"],
            "--limit: must be at least 1",
        ),
        (
            ["data", "import", "gold", "mini-math", "--limit", "0", "--out", "x.jsonl"],
            "--limit: must be at least 1",
        ),
        (["sample", "nlft:sample", "--limit", "0", "--out", "x.jsonl"], "--limit"),
        (["eval", "m", "--batch-size", "-1"], "--batch-size: must be at least 1"),
        (["eval", "m", "--batch-size", "0"], "--batch-size"),
        (["eval", "m", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["sample", "nlft:sample", "--top-p", "5", "--out", "x.jsonl"], "--top-p: must be in (0, 1]"),
        (["sample", "nlft:sample", "--timeout", "-1", "--out", "x.jsonl"], "--timeout"),
        (["sample", "nlft:sample", "--concurrency", "-5", "--out", "x.jsonl"], "--concurrency"),
        (["sample", "nlft:sample", "--temperature", "nan", "--out", "x.jsonl"], "--temperature"),
        (["saliency", "--snapshot", "r", "--threshold", "nan"], "threshold must be a finite number"),
        (["saliency", "--snapshot", "r", "--prob-floor", "-1"], "unrecognized"),  # never a weight: no flag
        (
            ["saliency", "--snapshot", "r", "--other-exponent", "-1000"],
            "other_exponent must be a number in [0, 100]",
        ),
        (["studio", "r", "--port", "70000"], "--port"),
        (["sample", "nlft:sample", "--extra-body", "[1]", "--out", "x.jsonl"], "must be a JSON object"),
    ],
)
def test_bad_values_are_refused_by_the_parser_naming_the_flag(tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    code, err = _run(*argv)
    assert code == 2 and words in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_data_make_checks_size_and_ratio_before_sampling(tmp_path):
    for extra, words in ((["--ratio", "2-1"], "ratio '2-1'"), (["--size", "0"], "--size")):
        code, err = _run(
            "data", "make", "mini-math", "--limit", "5", "--model", "nlft:tiny", "--size", "4", "--out",
            str(tmp_path / "made"), *extra,
        )  # fmt: skip
        assert code == 2 and words in err
    assert not (tmp_path / "made").exists()


def test_an_empty_records_file_is_refused_by_validate_and_saliency(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = _run("data", "validate", str(empty))
    assert code == 2 and "holds no records" in err
    code, err = _run(
        "saliency", "--model", "nlft:tiny", "--data", str(empty), "--out", str(tmp_path / "s.html")
    )
    assert code == 2 and "holds no records" in err
    assert not (tmp_path / "s.html").exists()


def test_a_port_in_use_and_a_bad_host_are_clear_errors(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = _run("studio", str(tmp_path), "--port", str(port))
    assert code == 2 and "already in use" in err and "Traceback" not in err
    code, err = _run("studio", str(tmp_path), "--host", "no-such-host.invalid", "--port", "0")
    assert code == 2 and "--host no-such-host.invalid" in err


def test_saliency_says_what_is_missing_or_too_much_before_loading_anything(tmp_path):
    out = str(tmp_path / "s.html")
    code, err = _run("saliency", "--out", out)
    assert code == 2 and "name what to show: a model (--model) or a training snapshot (--snapshot)" in err
    code, err = _run("saliency", "--model", "m", "--snapshot", "s", "--out", out)
    assert code == 2 and "not both" in err
    assert not (tmp_path / "s.html").exists()


def test_a_full_disk_in_a_library_is_one_message_not_a_traceback(monkeypatch, capsys):
    """Audit N-15: safetensors and tokenizers raise their own types on a full disk; cli.main caught only OSError."""
    import nlft.cli as cli

    def full(argv):
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(cli, "run_train", full)
    with pytest.raises(SystemExit) as info:
        main(["train", "--output_dir", "x"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("nlft: error: the disk is full") and "Traceback" not in err

    def bug(argv):
        raise Exception("an honest bug")

    monkeypatch.setattr(cli, "run_train", bug)
    with pytest.raises(Exception, match="an honest bug"):  # anything else is not hidden
        main(["train", "--output_dir", "x"])


def test_an_absurd_number_of_epochs_is_refused_before_anything_is_written(tmp_path, capsys):
    """Audit N-17: --num_train_epochs 1e308 overflowed after base-model/ and run.json were written."""
    from pathlib import Path

    config = Path(__file__).parents[1] / "configs" / "tiny-nlft.yaml"
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(config), "--output_dir", str(tmp_path / "r"), "--num_train_epochs", "1e308",
              "--report_to", "none"])  # fmt: skip
    assert info.value.code == 2 and "num_train_epochs" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_unknown_dtype_in_a_config_is_refused_before_the_run_folder_is_made(tmp_path, capsys):
    """Audit N-35: `dtype: float8` (the YAML skips argparse's choices) left base-model/ behind."""
    from pathlib import Path

    config = tmp_path / "c.yaml"
    tiny = (Path(__file__).parents[1] / "configs" / "tiny-nlft.yaml").read_text()
    config.write_text(tiny.replace("dtype: float32", "dtype: float8"))
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(config), "--output_dir", str(tmp_path / "r"), "--report_to", "none"])
    assert info.value.code == 2 and "--dtype must be one of" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_terminal_that_cannot_encode_a_character_gets_an_escape_not_a_crash(tmp_path):
    """Audit N-30: under PYTHONIOENCODING=ascii a record id with 'é' ended the command with exit 2 after its work."""
    import os

    path = tmp_path / "odd.jsonl"
    path.write_text(
        json.dumps({"id": "café-1", "question": "q", "response": "", "reference": "#### 1"}) + "\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "nlft", "data", "validate", str(path)], capture_output=True, timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
    )  # fmt: skip
    out = (proc.stdout + proc.stderr).decode("ascii")
    assert "codec can't encode" not in out and "caf\\xe9-1" in out


def test_ctrl_c_while_the_command_loads_ends_without_a_traceback(monkeypatch, capsys):
    """Audit N-28: a Ctrl-C reaching a child `nlft train` while it imported showed a KeyboardInterrupt traceback."""
    import types

    from nlft.__main__ import run

    class Loading(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "nlft.cli", Loading("nlft.cli"))
    with pytest.raises(SystemExit) as info:
        run()
    assert info.value.code == 130 and capsys.readouterr().err == "nlft: interrupted\n"
