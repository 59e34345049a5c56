"""Open output files so that only their owner can read them.

Transcripts may hold health or other personal data, so everything the runtime writes for the user
is created with mode 0600 (and an existing file is narrowed to 0600 before it is overwritten).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

PRIVATE_MODE = 0o600


def open_private(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> IO[Any]:
    """Open `path` for writing ('w', 'a', 'x', with or without 'b'), owner read/write only.

    Text modes use `encoding` and write newlines as given (no platform translation).
    """
    if not mode or mode[0] not in "wax" or "+" in mode or "r" in mode:
        raise ValueError(f"open_private opens files for writing only ('w', 'a' or 'x'), got {mode!r}")
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    flags |= {"w": os.O_TRUNC, "a": os.O_APPEND, "x": os.O_EXCL}[mode[0]]
    fd = os.open(Path(path), flags, PRIVATE_MODE)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, PRIVATE_MODE)  # the create mode does not apply to a file that existed
        if "b" in mode:
            return os.fdopen(fd, mode)
        return os.fdopen(fd, mode, encoding=encoding, newline="")
    except BaseException:
        os.close(fd)
        raise
