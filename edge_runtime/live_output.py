"""Where live results go: a transcript file that is complete up to the last final segment
whatever happens (each segment is flushed and fsync'd), and the optional saved audio.

These files grow while the session runs, so they are appended to in place (fsync'd), not
replaced atomically; the saved audio is always a new file (an existing one is never truncated).
The format follows the extension, and an extension that names no format we write is refused
rather than filled with another format. OS failures are one-line OutputErrors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import OptionError, OutputError
from .output_files import reason
from .private_files import open_private
from .subtitles import format_timestamp

TRANSCRIPT_FORMATS = {".txt": "txt", ".srt": "srt", ".jsonl": "jsonl"}


def transcript_format(path: str | os.PathLike) -> str:
    """txt, srt or jsonl from the extension; anything else is refused (OptionError)."""
    suffix = Path(path).suffix.lower()
    if suffix not in TRANSCRIPT_FORMATS:
        hint = " (appended segments are JSON Lines: use .jsonl)" if suffix == ".json" else ""
        raise OptionError(f"--transcript {path}: unsupported extension {suffix or '(none)'!r}; "
                          f"use .txt, .srt or .jsonl{hint}")
    return TRANSCRIPT_FORMATS[suffix]


def check_transcript_path(path: str | os.PathLike) -> str:
    """Before a session starts: the transcript's format, and that the name is not a folder."""
    fmt = transcript_format(path)
    if os.path.isdir(path):
        raise OutputError(f"cannot write --transcript {path}: it is a folder")
    return fmt


def check_audio_path(path: str | os.PathLike) -> None:
    """--save-audio writes a new float WAV: the name must end in .wav and not exist yet."""
    path = Path(path)
    if path.suffix.lower() != ".wav":
        raise OptionError(f"--save-audio {path}: the saved audio is a WAV file; "
                          "give a name ending in .wav")
    if os.path.lexists(path):
        raise OutputError(f"--save-audio {path} already exists: refusing to overwrite it "
                          "(choose a new name)")


class TranscriptFile:
    """Appends final segments to a txt, srt or jsonl file (by extension), owner-only."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fmt = check_transcript_path(self.path)
        try:
            self._cue = self._existing_cues() if self.fmt == "srt" else 0
            self._fh = open_private(self.path, "a")
        except OSError as exc:
            raise OutputError(f"cannot write --transcript {self.path}: {reason(exc)}") from None

    def _existing_cues(self) -> int:
        # Appending to an srt file continues its numbering.
        if not os.path.isfile(self.path):
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
        try:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write --transcript {self.path}: {reason(exc)}") from None

    def close(self) -> None:
        self._fh.close()


class AudioFile:
    """The captured 16 kHz stream as a float WAV (exact samples, so `--input` replays it bit for bit)."""

    def __init__(self, path: str | os.PathLike, sample_rate: int = 16000):
        import soundfile as sf

        self.path = Path(path)
        check_audio_path(self.path)
        try:
            self._raw = open_private(self.path, "xb", encoding=None)  # never truncate a file
        except OSError as exc:
            raise OutputError(f"cannot write --save-audio {self.path}: {reason(exc)}") from None
        self._sf = sf.SoundFile(self._raw, mode="w", samplerate=sample_rate, channels=1,
                                format="WAV", subtype="FLOAT")

    def write(self, samples: np.ndarray) -> None:
        if samples.size:
            try:
                self._sf.write(np.asarray(samples, dtype=np.float32))
            except (OSError, RuntimeError) as exc:
                raise OutputError(f"cannot write --save-audio {self.path}: {exc}") from None

    def sync(self) -> None:
        """Update the header so the file is readable up to here even if the process dies."""
        try:
            self._sf.flush()
            self._raw.flush()
            os.fsync(self._raw.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write --save-audio {self.path}: {reason(exc)}") from None

    def close(self) -> None:
        try:
            self._sf.close()  # writes the final header
            self._raw.close()
        except (OSError, RuntimeError) as exc:
            raise OutputError(f"cannot finish --save-audio {self.path}: {exc}") from None


def clock(seconds: float) -> str:
    """hh:mm:ss.ss for the terminal view."""
    seconds = max(0.0, seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}:{int(m):02d}:{s:05.2f}"
