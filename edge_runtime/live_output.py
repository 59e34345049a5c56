"""Where live results go: a transcript file that is complete up to the last final segment
whatever happens (each segment is flushed and fsync'd), and the optional saved audio."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .private_files import open_private
from .subtitles import format_timestamp

TRANSCRIPT_FORMATS = {".txt": "txt", ".srt": "srt", ".jsonl": "jsonl", ".json": "jsonl"}


class TranscriptFile:
    """Appends final segments to a txt, srt or jsonl file (by extension), owner-only."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fmt = TRANSCRIPT_FORMATS.get(self.path.suffix.lower(), "txt")
        self._cue = self._existing_cues() if self.fmt == "srt" else 0
        self._fh = open_private(self.path, "a")

    def _existing_cues(self) -> int:
        # Appending to an srt file continues its numbering.
        if not self.path.is_file():
            return 0
        text = self.path.read_text(encoding="utf-8", errors="replace")
        return sum(1 for block in text.split("\n\n") if "-->" in block)

    def write(self, start: float, end: float, text: str) -> None:
        if self.fmt == "jsonl":
            line = json.dumps({"start": round(start, 3), "end": round(end, 3), "text": text},
                              ensure_ascii=False) + "\n"
        elif self.fmt == "srt":
            self._cue += 1
            line = (f"{self._cue}\n{format_timestamp(start)} --> {format_timestamp(end)}\n"
                    f"{text}\n\n")
        else:
            line = f"[{clock(start)} -> {clock(end)}] {text}\n"
        self._fh.write(line)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


class AudioFile:
    """The captured 16 kHz stream as a float WAV (exact samples, so `--input` replays it bit for bit)."""

    def __init__(self, path: str | os.PathLike, sample_rate: int = 16000):
        import soundfile as sf

        self.path = Path(path)
        self._raw = open_private(self.path, "wb", encoding=None)
        self._sf = sf.SoundFile(self._raw, mode="w", samplerate=sample_rate, channels=1,
                                format="WAV", subtype="FLOAT")

    def write(self, samples: np.ndarray) -> None:
        if samples.size:
            self._sf.write(np.asarray(samples, dtype=np.float32))

    def sync(self) -> None:
        """Update the header so the file is readable up to here even if the process dies."""
        self._sf.flush()
        self._raw.flush()
        os.fsync(self._raw.fileno())

    def close(self) -> None:
        self._sf.close()
        self._raw.close()


def clock(seconds: float) -> str:
    """hh:mm:ss.ss for the terminal view."""
    seconds = max(0.0, seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}:{int(m):02d}:{s:05.2f}"
