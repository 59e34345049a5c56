"""Plain data types for transcription results: timed text segments and run information."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass
class Segment:
    """One piece of transcript with its time span in seconds (from the start of the audio).

    The fields after `text` follow faster-whisper's Segment and OpenAI's verbose_json:
        id: position in the transcript (0, 1, ...), set when the transcript is assembled.
        speaker: the model's speaker label ("S01"...) with speakers on; None otherwise.
        tokens: the generated token ids this segment's text (and its time brackets) came from.
        avg_logprob: mean log-probability of those tokens under the model (None if unknown).
        temperature: the sampling temperature used (0 = greedy).
        compression_ratio: len(text) / len(zlib(text)), as whisper reports (repetition shows).
    """

    start: float
    end: float
    text: str
    id: int = 0
    speaker: str | None = None
    tokens: list[int] = field(default_factory=list)
    avg_logprob: float | None = None
    temperature: float = 0.0
    compression_ratio: float | None = None

    @property
    def duration(self) -> float:
        """Length of the segment in seconds (never negative)."""
        return max(0.0, self.end - self.start)

    def shift(self, offset: float) -> "Segment":
        """A copy moved later by offset seconds (used to place a window's segments in the file)."""
        return replace(self, start=self.start + offset, end=self.end + offset,
                       tokens=list(self.tokens))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output (speaker only when known)."""
        out = {"id": self.id, "start": self.start, "end": self.end, "text": self.text,
               "tokens": list(self.tokens), "avg_logprob": self.avg_logprob,
               "temperature": self.temperature, "compression_ratio": self.compression_ratio}
        if self.speaker is not None:
            out["speaker"] = self.speaker
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Segment":
        """The inverse of to_dict (a record read back from JSON or Parquet)."""
        return cls(start=float(data["start"]), end=float(data["end"]), text=str(data["text"]),
                   id=int(data.get("id", 0)), speaker=data.get("speaker"),
                   tokens=[int(t) for t in data.get("tokens") or []],
                   avg_logprob=data.get("avg_logprob"),
                   temperature=float(data.get("temperature", 0.0)),
                   compression_ratio=data.get("compression_ratio"))


def compression_ratio(text: str) -> float | None:
    """whisper's repetition signal: UTF-8 length over zlib-compressed length (None for '')."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else None


@dataclass
class TranscriptionInfo:
    """What a transcription run did, alongside its segments.

    Fields:
        duration: length of the input audio in seconds.
        language: the language hinted with language= (the model reports none; None by default).
        windows: the (start_s, end_s) spans the audio was cut into, in seconds.
        speech_regions: (start_s, end_s) speech found by the VAD, in seconds; None without VAD.
        timings: wall-clock seconds per stage, e.g. {"load": .., "encode": .., "decode": ..}.
        audio_tokens: audio tokens fed to the model, summed over all windows.
        generated_tokens: text tokens generated, summed over all windows.
        thinking: any <think> text a thinking model produced (kept apart from the transcript).
        model: the bundle's name and the manifest's model id, quantization and encoder mode.
        prompt: the instruction sent with the audio, its task and language hint (see prompts.py).
        extra: anything else a caller wants to record (provider...).
    """

    duration: float
    language: str | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)
    speech_regions: list[tuple[float, float]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    audio_tokens: int = 0
    generated_tokens: int = 0
    thinking: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        out = asdict(self)
        for name in ("windows", "speech_regions"):
            if isinstance(out[name], (list, tuple)):
                out[name] = [list(span) for span in out[name]]
        return out
