"""Plain data types for transcription results: timed text segments and run information."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Segment:
    """One piece of transcript with its time span in seconds (from the start of the audio)."""

    start: float
    end: float
    text: str

    @property
    def duration(self) -> float:
        """Length of the segment in seconds (never negative)."""
        return max(0.0, self.end - self.start)

    def shift(self, offset: float) -> "Segment":
        """A copy moved later by offset seconds (used to place a window's segments in the file)."""
        return Segment(self.start + offset, self.end + offset, self.text)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {"start": self.start, "end": self.end, "text": self.text}


@dataclass
class TranscriptionInfo:
    """What a transcription run did, alongside its segments.

    Fields:
        duration: length of the input audio in seconds.
        language: language code if known (the model does not report one; None by default).
        windows: the (start_s, end_s) spans the audio was cut into, in seconds.
        speech_regions: (start_s, end_s) speech found by the VAD, in seconds; None without VAD.
        timings: wall-clock seconds per stage, e.g. {"load": .., "encode": .., "decode": ..}.
        audio_tokens: audio tokens fed to the model, summed over all windows.
        generated_tokens: text tokens generated, summed over all windows.
        thinking: any <think> text a thinking model produced (kept apart from the transcript).
        extra: anything else a caller wants to record (model name, provider, quantization...).
    """

    duration: float
    language: str | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)
    speech_regions: list[tuple[float, float]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    audio_tokens: int = 0
    generated_tokens: int = 0
    thinking: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        out = asdict(self)
        for name in ("windows", "speech_regions"):
            if isinstance(out[name], (list, tuple)):
                out[name] = [list(span) for span in out[name]]
        return out
