"""The ledger: one JSON line per finished file, so that a rerun skips what is done.

Each record is appended with a single write() on an O_APPEND descriptor and fsync'ed before the
next file is counted, so a killed run loses at most the files that were still in flight. Reading
back takes the last record per path and ignores a torn last line (a crash mid-write). A file
counts as done when its path has a record without error and the same content: same size and
mtime as recorded (rsync's quick check; `rehash=True` skips it), else the same sha256. Failed
files and changed files are run again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..private_files import PRIVATE_MODE
from .stage import file_identity, one_line


def ledger_key(path: str | os.PathLike) -> str:
    """The path a record is filed under: absolute and normalised (symlinks kept as named)."""
    return os.path.abspath(os.fspath(path))


class Ledger:
    """Append-only JSON lines at `path` (mode 0600)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record, in the order written."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # a line torn by a crash: that file simply runs again
                continue
            if isinstance(record, dict) and isinstance(record.get("path"), str):
                yield record

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last record of each path."""
        return {ledger_key(rec["path"]): rec for rec in self.records()}

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        fd = self._open()
        os.write(fd, line)
        os.fsync(fd)

    def _open(self) -> int:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self.path, flags, PRIVATE_MODE)
            size = os.fstat(self._fd).st_size
            if size:  # a torn last line must not swallow the next record
                with open(self.path, "rb") as handle:
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":
                        os.write(self._fd, b"\n")
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Plan:
    """Which inputs run, which are already done (with their records), which failed to stat."""

    todo: list[str] = field(default_factory=list)
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


def plan(inputs: list[str], latest: dict[str, dict[str, Any]], rehash: bool = False) -> Plan:
    """Split `inputs` (paths) into files to run and files the ledger already has done."""
    out = Plan()
    for path in inputs:
        key = ledger_key(path)
        record = latest.get(key)
        if record is None or record.get("error"):
            out.todo.append(path)
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            out.unreadable[path] = f"cannot read {path}: {exc.strerror or one_line(exc)}"
            continue
        quick = (not rehash and record.get("size") == st.st_size
                 and record.get("mtime_ns") == st.st_mtime_ns)
        if quick:
            out.done[path] = record
            continue
        try:
            digest = file_identity(path)[0]
        except OSError as exc:
            out.unreadable[path] = f"cannot read {path}: {exc.strerror or one_line(exc)}"
            continue
        if digest == record.get("sha256"):
            out.done[path] = record
        else:
            out.todo.append(path)
    return out
