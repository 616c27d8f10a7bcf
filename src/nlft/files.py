"""Reading the user's files with errors that name them, and checking where output may go.

Every input file nlft reads (YAML settings, templates, judge prompts, results files) goes through
``read_text``/``read_yaml``, so that a missing file, a folder, bad UTF-8 or malformed YAML is one clear
``ValueError``/``FileNotFoundError`` naming the file, never a traceback. ``check_output_file`` is asked before
anything is written: an output that is a folder, a symlink, or one of the command's own inputs is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of ``path``; errors name the file and say what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not a {what}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such {what}") from None
    except PermissionError:
        raise PermissionError(f"{path}: not readable (permission denied)") from None
    try:
        return raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValueError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {col})"
        ) from None


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """The parsed YAML of ``path``; malformed YAML is a ``ValueError`` naming the file, line and column."""
    import yaml

    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}: not valid YAML ({problem})") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The parsed JSON of ``path``; a damaged file is a ``ValueError`` naming it and where it breaks."""
    import json

    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}:{exc.lineno}:{exc.colno}: damaged {what}: not valid JSON ({exc.msg})"
        ) from None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same existing file (through links, ``..`` and case-insensitive file systems)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_output_file(
    out: str | os.PathLike, *, inputs: tuple[str | os.PathLike | None, ...] = (), flag: str = "--out"
) -> Path:
    """``out`` as a file nlft may create or append to: not a folder, not a symlink (nothing is written through
    one), not one of the command's ``inputs``. Checked before anything is touched."""
    out = Path(out)
    if out.is_symlink():
        raise ValueError(
            f"{flag} {out}: is a symbolic link; nlft never writes through one (name the file itself)"
        )
    if out.is_dir():
        raise IsADirectoryError(f"{flag} {out}: is a folder; name a file in it, e.g. {out / 'results.jsonl'}")
    for source in inputs:
        if source is not None and Path(source).exists() and same_file(out, source):
            raise ValueError(f"{flag} {out}: is the input file itself; write the results to another file")
    if out.parent.exists() and not out.parent.is_dir():
        raise NotADirectoryError(f"{flag} {out}: {out.parent} is not a folder")
    return out
