"""A bounded first-in first-out store of audio frames on disk, for capture that falls behind.

When the model is slower than real time for longer than the in-memory capture queue holds, the
blocks that do not fit are appended here and read back in order, so nothing captured is lost
until this file's own bound is reached.  The file is private (mode 0600, created by `tempfile`
with no name left on disk where the OS allows it) and disappears on close().  Not thread-safe:
the caller holds its lock around every call.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


class SpillFile:
    """Frames of `channels` float32 samples, at most `max_frames` pending at once."""

    def __init__(self, channels: int, max_frames: int) -> None:
        self.channels = int(channels)
        self.max_frames = max(0, int(max_frames))
        self._frame_bytes = 4 * self.channels
        self._file = tempfile.TemporaryFile(prefix="edge-moss-capture-")  # 0600, unlinked
        self._read = 0  # byte offsets
        self._write = 0
        self.spilled_frames = 0  # everything ever written here (for reports)

    @property
    def pending_frames(self) -> int:
        return (self._write - self._read) // self._frame_bytes

    def append(self, block: np.ndarray) -> bool:
        """Store `block` (frames x channels); False (nothing kept) past the bound or on a full disk."""
        data = np.ascontiguousarray(block, dtype=np.float32).reshape(-1, self.channels)
        if self.pending_frames + len(data) > self.max_frames:
            return False
        try:
            written = os.pwrite(self._file.fileno(), data.tobytes(), self._write)
        except OSError:  # a full disk: the caller counts the block as lost
            return False
        if written != data.nbytes:
            return False
        self._write += data.nbytes
        self.spilled_frames += len(data)
        return True

    def take(self, max_frames: int | None = None) -> np.ndarray | None:
        """The oldest pending frames (up to `max_frames`), or None when nothing is pending."""
        pending = self.pending_frames
        if pending == 0:
            return None
        count = pending if max_frames is None else max(1, min(pending, int(max_frames)))
        raw = os.pread(self._file.fileno(), count * self._frame_bytes, self._read)
        self._read += len(raw)
        if self._read == self._write:  # drained: start the file again from zero
            self._read = self._write = 0
            self._file.truncate(0)
        return np.frombuffer(raw, dtype=np.float32).reshape(-1, self.channels).copy()

    def close(self) -> None:
        self._file.close()
