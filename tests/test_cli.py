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
