"""Files that survive a crash: atomic writes, and append-only JSONL result logs that resume.

``atomic_write_*`` write a temporary file beside the target and rename it, so a reader never sees half a file.
``AppendLog`` is the results file of every long job (sampling, judging, evaluation): one JSON object per line,
flushed and fsynced per record. Reopening it drops a torn last line (a run killed with SIGKILL mid-write) and
reports which keys are done, so that rerunning the same command skips them and every record ends up once.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not safe to do from threads later.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600 files; give the result the mode a plain open() would have (or the old file's).
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps(row: Any) -> str:
    """One JSON line: UTF-8 as is, keys in the order given (byte-identical for identical input)."""
    return json.dumps(row, ensure_ascii=False)


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    lines = [dumps(row) for row in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


class AppendLog:
    """An append-only JSONL file of results keyed by ``key`` (default ``"id"``); safe to kill at any moment."""

    def __init__(self, path: str | os.PathLike, key: str = "id"):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._rows: dict[str, dict] = {}
        for row in self._read():
            self._rows.setdefault(
                str(row[key]), row
            )  # a duplicate can't arise through this class; keep the first
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held open for appends, closed by close())

    def _repair(self) -> None:
        """Cut a torn last line left by a kill during a write."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)

    def _read(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(
                        f"{self.path}:{lineno}: not valid JSON ({exc.msg}); the results file is damaged"
                    ) from None
                if not isinstance(row, dict) or self.key not in row:
                    raise ValueError(
                        f"{self.path}:{lineno}: field '{self.key}': missing; not a results file of this job"
                    )
                yield row

    def __contains__(self, key: object) -> bool:
        return str(key) in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def done(self) -> set[str]:
        return set(self._rows)

    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def get(self, key: str) -> dict | None:
        return self._rows.get(str(key))

    def append(self, row: dict) -> bool:
        """Write one result durably. A key already present is not written again (returns False)."""
        k = str(row[self.key])
        if k in self._rows:
            return False
        self._fh.write(dumps(row) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._rows[k] = row
        return True

    def remove(self, keys: Iterable[str]) -> int:
        """Drop the rows of ``keys`` so that they are done again (a rerun retrying recorded failures).

        The file is rewritten atomically: a kill during the rewrite leaves either the old or the new file.
        """
        drop = {str(k) for k in keys} & set(self._rows)
        if not drop:
            return 0
        self._fh.close()
        for k in drop:
            del self._rows[k]
        atomic_write_jsonl(self.path, self._rows.values())
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held open for appends, closed by close())
        return len(drop)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
