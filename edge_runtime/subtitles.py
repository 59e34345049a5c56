"""Transcript writers: plain text, SubRip (.srt), WebVTT (.vtt) and JSON.

All writers take a list of Segment and return a string; write_transcript puts one on disk,
owner-only and atomically (see output_files).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from .segments import Segment, TranscriptionInfo

FORMATS = ("txt", "srt", "vtt", "json")


def _milliseconds(seconds: float) -> int:
    return max(0, int(round(float(seconds) * 1000.0)))


def format_timestamp(seconds: float, decimal_marker: str = ",") -> str:
    """HH:MM:SS<marker>mmm, rounded to the millisecond; hours grow past two digits if needed."""
    total = _milliseconds(seconds)
    hours, rest = divmod(total, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def _cue_lines(text: str) -> list[str]:
    """The text's non-blank lines: a blank line would end the cue in both SRT and WebVTT."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _escape_vtt(line: str) -> str:
    # '&' and '<' start entities and tags in a WebVTT cue; '-->' must not appear in it
    line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return line.replace("-->", "--&gt;")


def to_txt(segments: Sequence[Segment], timestamps: bool = False) -> str:
    """One segment per line; with timestamps, each line starts with '[start -> end]' in seconds."""
    lines = []
    for seg in segments:
        text = " ".join(_cue_lines(seg.text))
        if not text:
            continue
        lines.append(f"[{seg.start:.2f} -> {seg.end:.2f}] {text}" if timestamps else text)
    return "\n".join(lines) + ("\n" if lines else "")


def to_srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues, 'HH:MM:SS,mmm --> HH:MM:SS,mmm', text, blank line. Empty segments skipped."""
    blocks = []
    for seg in segments:
        lines = _cue_lines(seg.text)
        if not lines:
            continue
        start, end = format_timestamp(seg.start, ","), format_timestamp(max(seg.end, seg.start), ",")
        blocks.append(f"{len(blocks) + 1}\n{start} --> {end}\n" + "\n".join(lines) + "\n")
    return "\n".join(blocks)


def to_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: 'WEBVTT' header, cues 'HH:MM:SS.mmm --> HH:MM:SS.mmm', escaped text.

    WebVTT wants a cue to end after it starts, so a zero-length segment is given 1 ms.
    """
    out = ["WEBVTT\n"]
    for seg in segments:
        lines = _cue_lines(seg.text)
        if not lines:
            continue
        start_ms = _milliseconds(seg.start)
        end_ms = max(_milliseconds(seg.end), start_ms + 1)
        start, end = format_timestamp(start_ms / 1000.0, "."), format_timestamp(end_ms / 1000.0, ".")
        out.append(f"{start} --> {end}\n" + "\n".join(_escape_vtt(line) for line in lines) + "\n")
    return "\n".join(out)


def to_json(segments: Sequence[Segment], info: TranscriptionInfo | None = None) -> str:
    """{"text": full transcript, "segments": [{"start", "end", "text"}...], "info": {...} if given}."""
    doc: dict = {
        "text": " ".join(" ".join(_cue_lines(seg.text)) for seg in segments if seg.text.strip()),
        "segments": [seg.to_dict() for seg in segments],
    }
    if info is not None:
        doc["info"] = info.to_dict()
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def render(segments: Sequence[Segment], fmt: str, info: TranscriptionInfo | None = None) -> str:
    """The transcript as a string in format `fmt` (one of FORMATS)."""
    fmt = fmt.lower().lstrip(".")
    if fmt == "txt":
        return to_txt(segments)
    if fmt == "srt":
        return to_srt(segments)
    if fmt == "vtt":
        return to_vtt(segments)
    if fmt == "json":
        return to_json(segments, info)
    raise ValueError(f"unknown transcript format {fmt!r}; choose one of {', '.join(FORMATS)}")


def write_transcript(
    segments: Sequence[Segment],
    path_or_stem: str | os.PathLike[str],
    fmt: str,
    info: TranscriptionInfo | None = None,
) -> Path:
    """Write the transcript to disk (mode 0600, atomically: see output_files) and return the path.

    If `path_or_stem` already ends in '.<fmt>' it is used as is; otherwise '.<fmt>' is appended
    (so 'talk' and 'talk.srt' both give 'talk.srt', and 'talk.wav' gives 'talk.wav.srt').
    An unknown format is refused (OptionError) before anything is written.
    """
    from .options import output_formats
    from .output_files import write_atomic

    formats = output_formats(fmt, FORMATS)
    if len(formats) != 1:
        raise ValueError(f"write_transcript writes one format at a time, got {fmt!r}")
    fmt = formats[0]
    text = render(segments, fmt, info)
    path = Path(path_or_stem)
    if path.suffix.lower() != f".{fmt}":
        path = path.with_name(path.name + f".{fmt}")
    return write_atomic(path, text)
