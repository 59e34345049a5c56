"""Progress of a batch: files and audio hours done, throughput in audio-hours per hour, ETA.

The ETA is counted in audio, not files (an archive mixes 10 s clips and 2 h meetings): the audio
still to do divided by the audio-hours per hour measured so far. Durations come from the files'
headers, read before the run. On a terminal a tqdm bar shows it; elsewhere a line every minute.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class BatchProgress:
    """Counts finished files; `update(audio_s)` after each one."""

    def __init__(self, files: int, audio_s: float, enabled: bool = True, stream: TextIO | None = None,
                 line_every_s: float = 60.0):
        self.files_total = files
        self.audio_total_s = audio_s
        self.files_done = self.failed = 0
        self.audio_done_s = 0.0
        self.start = time.monotonic()
        self.stream = stream or sys.stderr
        self._line_every = line_every_s
        self._last_line = self.start
        self._bar = None
        self.enabled = enabled
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=files, unit="file", file=self.stream, dynamic_ncols=True)

    def rate(self) -> float:
        """Audio-hours per hour of wall time so far (0 before the first file)."""
        elapsed = time.monotonic() - self.start
        return self.audio_done_s / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        if rate <= 0:
            return None
        return max(0.0, self.audio_total_s - self.audio_done_s) / rate

    def describe(self) -> str:
        eta = self.eta_s()
        return (f"{self.audio_done_s / 3600:.2f}/{self.audio_total_s / 3600:.2f} audio h, "
                f"{self.rate():.1f} audio-h/h, ETA {_clock(eta) if eta is not None else '?'}"
                + (f", {self.failed} failed" if self.failed else ""))

    def update(self, audio_s: float, failed: bool = False) -> None:
        self.files_done += 1
        self.failed += int(failed)
        self.audio_done_s += max(0.0, audio_s)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self.describe(), refresh=False)
            self._bar.update(1)
            return
        now = time.monotonic()
        if now - self._last_line >= self._line_every:
            self._last_line = now
            print(f"edge-moss batch: {self.files_done}/{self.files_total} files, {self.describe()}",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
