"""Files that survive a crash: atomic writes, and append-only JSONL result logs that resume.

``atomic_write_*`` write a temporary file beside the target and rename it, so a reader never sees half a file.
``AppendLog`` is the results file of every long job (sampling, judging, evaluation): one JSON object per line,
flushed and fsynced per record. Reopening it drops a torn last line (a run killed with SIGKILL mid-write) and
reports which keys are done, so that rerunning the same command skips them and every record ends up once.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
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


class ResultsLocked(RuntimeError):
    """Another process is writing the same results file."""


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


class _Lock:
    """An exclusive ``flock`` on ``.<name>.lock`` beside a results file, holding the owner's pid and command.

    A second job on the same file refuses at once, naming the first. The lock file is removed on release;
    ``acquire`` re-checks that the file it locked is still the one at the path, so a release racing with a new
    acquirer never leaves two holders.
    """

    def __init__(self, target: Path):
        self.path = _lock_path(target)
        self.target = target
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl
        import sys

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
                finally:
                    os.close(fd)
                raise ResultsLocked(
                    f"{self.target} is being written by {holder}; wait for it to finish (or stop it) first"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # released and removed while we waited for it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({' '.join(sys.argv)[:300]})".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)  # closing the descriptor releases the flock
        self.fd = None


class AppendLog:
    """An append-only JSONL file of results keyed by ``key`` (default ``"id"``); safe to kill at any moment.

    Opening it only reads: every complete line must be a JSON object with ``key`` (anything else is not a
    results file of this job, and is refused untouched), a symbolic link is refused (nothing is written through
    one), and the file is locked against a second job writing it at the same time. What a kill can leave — a
    torn last line (the beginning of one of our rows), a last row without its newline, or rows written twice by
    an older version run twice at once (exact duplicates) — is mended only when the first new row is appended,
    that is after the caller has checked the file's settings.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id", *, lock: bool = True):
        self.path = Path(path)
        self.key = key
        if self.path.is_symlink():
            raise ValueError(
                f"{self.path}: is a symbolic link; nlft never writes through one (name the file itself)"
            )
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path}: is a folder, not a results file")
        from .files import check_regular

        check_regular(self.path, "results file")
        self._lock: _Lock | None = None
        self._fh = None
        lock_ = _Lock(self.path) if lock else None
        self._rows: dict[str, dict] = {}
        self._tail: int | None = None  # offset of a torn last line
        self._needs_newline = False
        self._duplicates = 0
        if lock_ is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_.acquire()
            self._lock = lock_
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    @classmethod
    def peek(cls, path: str | os.PathLike, key: str = "id") -> dict[str, dict]:
        """The rows of a results file by key, read without locking or changing anything (absent file: empty)."""
        path = Path(path)
        if not path.exists():
            return {}
        log = cls(path, key, lock=False)
        return dict(log._rows)

    def _scan(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        last = lines.pop()  # what follows the last newline: b"" for a file that ends with one
        offset = 0
        for lineno, raw in enumerate(lines, start=1):
            self._take(raw, lineno)
            offset += len(raw) + 1
        if last.strip():
            try:
                self._take(last, len(lines) + 1)
                self._needs_newline = True
            except ValueError:
                if not last.lstrip().startswith(b'{"' + self.key.encode() + b'":'):
                    raise  # not a row we began writing: not ours to cut
                self._tail = offset  # a row a kill cut short

    def _take(self, raw: bytes, lineno: int) -> None:
        if not raw.strip():
            return
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{self.path}:{lineno}: not valid UTF-8 (byte at column {exc.start + 1}); not a results file of this job"
            ) from None
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{self.path}:{lineno}: not valid JSON ({exc.msg}); not a results file of this job (or a damaged one)"
            ) from None
        if not isinstance(row, dict) or self.key not in row:
            raise ValueError(
                f"{self.path}:{lineno}: field '{self.key}': missing; not a results file of this job"
            )
        k = str(row[self.key])
        if k in self._rows:
            if self._rows[k] != row:
                raise ValueError(
                    f"{self.path}:{lineno}: {self.key} '{k}' appears twice with different content; "
                    "the file was written by two runs at once: keep one of them by hand, or start a new file"
                )
            self._duplicates += 1
            return
        self._rows[k] = row

    def _open_for_append(self):
        """Mend what a kill (or an older double run) left, then open for appending."""
        if self._fh is not None:
            return self._fh
        if self._duplicates:
            atomic_write_jsonl(self.path, self._rows.values())
        elif self._tail is not None:
            with open(self.path, "rb+") as fh:
                fh.truncate(self._tail)
        elif self._needs_newline:
            with open(self.path, "ab") as fh:
                fh.write(b"\n")
        self._duplicates, self._tail, self._needs_newline = 0, None, False
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held open for appends, closed by close())
        return self._fh

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
        try:
            fh = self._open_for_append()
            fh.write(dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as exc:  # a full disk, a quota: name the file (a rerun mends a torn last line)
            raise OSError(
                exc.errno, f"{self.path}: {exc.strerror or exc}; free space and rerun to resume"
            ) from None
        self._rows[k] = row
        return True

    def remove(self, keys: Iterable[str]) -> int:
        """Drop the rows of ``keys`` so that they are done again (a rerun retrying recorded failures).

        The file is rewritten atomically: a kill during the rewrite leaves either the old or the new file.
        """
        drop = {str(k) for k in keys} & set(self._rows)
        if not drop:
            return 0
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for k in drop:
            del self._rows[k]
        atomic_write_jsonl(self.path, self._rows.values())
        self._duplicates, self._tail, self._needs_newline = 0, None, False
        return len(drop)

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        if self._lock is not None:
            self._lock.release()

    def __del__(self) -> None:  # a log dropped without close() must not keep its lock
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
