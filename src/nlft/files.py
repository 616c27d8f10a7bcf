"""Reading the user's files with errors that name them, and checking where output may go.

Every input file nlft reads (YAML settings, templates, judge prompts, results files) goes through
``read_text``/``read_yaml``, so that a missing file, a folder, bad UTF-8 or malformed YAML is one clear
``ValueError``/``FileNotFoundError`` naming the file, never a traceback. ``check_output_file`` is asked before
anything is written: an output that is a folder, a symlink, or one of the command's own inputs is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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


_LOADER = None


def _strict_loader():
    """yaml's safe loader, refusing aliases (``&a`` ... ``*a``: a few hundred bytes of them expand to gigabytes
    once the value is turned into text) and a key given twice in one mapping (the last would win silently)."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not accepted: write the value out", event.start_mark
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:
                    continue  # an unhashable key: yaml's own constructor says so
                if first != key_node.start_mark.line + 1:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {first})", key_node.start_mark
                    )
            return super().construct_mapping(node, deep)

    _LOADER = StrictLoader
    return _LOADER


def parse_yaml(text: str, where: str) -> Any:
    """YAML ``text`` parsed strictly (no aliases, no key twice); errors are a ``ValueError`` naming ``where``,
    the line and the column."""
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(where)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{at}: not valid YAML ({problem})") from None


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """The parsed YAML of ``path`` (``parse_yaml``); errors name the file, line and column."""
    return parse_yaml(read_text(path, what), str(path))


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


def check_regular(path: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse an existing ``path`` that is not a regular file (a named pipe, a device such as /dev/tty, a socket):
    reading one to resume from it would block forever, and nlft writes only regular files."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = (
            "a named pipe"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise ValueError(f"{flag} {path}: is {kind}, not a regular file; nlft writes only regular files")


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
    check_regular(out, flag)
    for source in inputs:
        if source is not None and Path(source).exists() and same_file(out, source):
            raise ValueError(f"{flag} {out}: is the input file itself; write the results to another file")
    if out.parent.exists() and not out.parent.is_dir():
        raise NotADirectoryError(f"{flag} {out}: {out.parent} is not a folder")
    return out


def check_replaceable(
    path: str | os.PathLike, ours: bool, *, overwrite: bool, what: str, flag: str = "--out"
) -> None:
    """The one rule for an output that already exists: it is replaced only with ``--overwrite``, and only when it
    is nlft's own (``ours``: its manifest or rows say which nlft command made it). Anything else is refused
    untouched, ``--overwrite`` or not. Checked before anything is written."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(
            f"{flag} {path}: is a symbolic link; nlft never writes through one (name the file itself)"
        )
    if not path.exists():
        return
    check_regular(path, flag)
    if not ours:
        raise FileExistsError(
            f"{flag} {path}: exists and is not {what}; nlft replaces only what it made itself (--overwrite "
            f"included): choose another {flag}"
        )
    if not overwrite:
        raise FileExistsError(
            f"{flag} {path}: holds {what} already; pass --overwrite to replace it, or another {flag}"
        )


def check_same_inputs(rows: Mapping[str, Mapping[str, Any]], expected: Mapping[str, Mapping[str, Any]], out: Path,
                      what: str) -> None:  # fmt: skip
    """Refuse to resume a results file whose rows were made from other inputs under the same ids: for every id in
    both, the fields of ``expected`` (the question's text, the record's response) must be the file's."""
    for key, fields in expected.items():
        row = rows.get(key)
        if row is None:
            continue
        for name, value in fields.items():
            if row.get(name) != value:
                there, now = ascii(str(row.get(name)))[:60], ascii(str(value))[:60]  # escaped for a terminal
                raise ValueError(
                    f"{out} holds {what} of other inputs under the same ids ({key}: {name} {there} there, {now} "
                    "now); choose another --out"
                )
