"""Transcript writers: plain text, SubRip (.srt), WebVTT (.vtt) and JSON.

All writers take a list of Segment and return a string; write_transcript puts one on disk,
owner-only and atomically (see output_files).

Subtitle lines wrap as whisper's writers do with --max_line_width / --max_line_count: words are
packed greedily into lines of at most max_line_width characters, and when a cue would exceed
max_line_count lines a new cue begins. The model gives sentence times, not word times, so the
cues of one segment share its span in proportion to their characters: a cue never starts before
its segment or ends after it. Speakers show as `[S01] ` before the text in SRT/TXT and as a
WebVTT voice span `<v S01>`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

from .errors import OptionError
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


def check_line_options(max_line_width: int | None = None, max_line_count: int | None = None) -> None:
    """OptionError (a ValueError) unless both are None or whole numbers >= 1, the count with a width."""
    for name, value in (("max_line_width", max_line_width), ("max_line_count", max_line_count)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
            raise OptionError(f"--{name.replace('_', '-')} must be a whole number from 1 to "
                              f"10000, got {value!r}")
    if max_line_count is not None and max_line_width is None:
        raise OptionError("--max-line-count needs --max-line-width (the width decides where "
                          "lines break)")


def _speaker_prefix(seg: Segment) -> str:
    return f"[{seg.speaker}] " if seg.speaker else ""


def wrap_words(text: str, width: int | None) -> list[str]:
    """The text's lines, each at most `width` characters: words packed greedily, a word longer
    than the width (text without spaces, such as Chinese) cut into pieces of the width. Without
    a width, the text's own non-blank lines."""
    if width is None:
        return _cue_lines(text)
    lines: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > width:  # no space to break at: cut it
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:width])
            word = word[width:]
        if not word:
            continue
        if current and len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            if current:
                lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def cues(seg: Segment, max_line_width: int | None = None, max_line_count: int | None = None,
         prefix: str = "") -> list[tuple[float, float, list[str]]]:
    """(start, end, lines) of the cues one segment becomes; `prefix` goes before the first line.

    With max_line_count the lines are grouped into cues of that many lines, and the segment's
    time is shared among them by characters; the cues tile [seg.start, seg.end] exactly.
    """
    lines = wrap_words(prefix + seg.text, max_line_width) if max_line_width else (
        [prefix + line if i == 0 else line for i, line in enumerate(_cue_lines(seg.text))])
    if not lines:
        return []
    end = max(seg.end, seg.start)
    if max_line_count is None or len(lines) <= max_line_count:
        return [(seg.start, end, lines)]
    groups = [lines[i:i + max_line_count] for i in range(0, len(lines), max_line_count)]
    weights = [sum(len(line) for line in group) for group in groups]
    total = sum(weights)
    out, done = [], 0
    for group, weight in zip(groups, weights):
        lo = seg.start + (end - seg.start) * done / total
        done += weight
        hi = end if done == total else seg.start + (end - seg.start) * done / total
        out.append((lo, hi, group))
    return out


def to_txt(segments: Sequence[Segment], timestamps: bool = False) -> str:
    """One segment per line ('[S01] ' before a speaker's text); with timestamps, each line
    starts with '[start -> end]' in seconds."""
    lines = []
    for seg in segments:
        text = " ".join(_cue_lines(seg.text))
        if not text:
            continue
        text = _speaker_prefix(seg) + text
        lines.append(f"[{seg.start:.2f} -> {seg.end:.2f}] {text}" if timestamps else text)
    return "\n".join(lines) + ("\n" if lines else "")


def to_srt(segments: Sequence[Segment], max_line_width: int | None = None,
           max_line_count: int | None = None) -> str:
    """SubRip: numbered cues, 'HH:MM:SS,mmm --> HH:MM:SS,mmm', text, blank line. Empty segments skipped."""
    check_line_options(max_line_width, max_line_count)
    blocks = []
    for seg in segments:
        for lo, hi, lines in cues(seg, max_line_width, max_line_count, _speaker_prefix(seg)):
            start, end = format_timestamp(lo, ","), format_timestamp(hi, ",")
            blocks.append(f"{len(blocks) + 1}\n{start} --> {end}\n" + "\n".join(lines) + "\n")
    return "\n".join(blocks)


def to_vtt(segments: Sequence[Segment], max_line_width: int | None = None,
           max_line_count: int | None = None) -> str:
    """WebVTT: 'WEBVTT' header, cues 'HH:MM:SS.mmm --> HH:MM:SS.mmm', escaped text; a speaker's
    cue text is a voice span `<v S01>...`.

    WebVTT wants a cue to end after it starts, so a zero-length cue is given 1 ms.
    """
    check_line_options(max_line_width, max_line_count)
    out = ["WEBVTT\n"]
    for seg in segments:
        voice = f"<v {_escape_vtt(seg.speaker)}>" if seg.speaker else ""
        for lo, hi, lines in cues(seg, max_line_width, max_line_count):
            start_ms = _milliseconds(lo)
            end_ms = max(_milliseconds(hi), start_ms + 1)
            start, end = format_timestamp(start_ms / 1000.0, "."), format_timestamp(end_ms / 1000.0, ".")
            body = "\n".join(_escape_vtt(line) for line in lines)
            out.append(f"{start} --> {end}\n{voice}{body}\n")
    return "\n".join(out)


def _finite_or_none(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def to_json(segments: Sequence[Segment], info: TranscriptionInfo | None = None) -> str:
    """The shape OpenAI's verbose_json and faster-whisper users read:
    {"task", "language", "duration" (with info), "text", "segments": [{"id", "start", "end",
    "text", "tokens", "avg_logprob", "temperature", "compression_ratio", "speaker"?}...],
    "info": {...} (with info: the model, the prompt sent, windows, timings)}."""
    doc: dict = {}
    if info is not None:
        doc.update(task=(info.prompt or {}).get("task") or "transcribe", language=info.language,
                   duration=info.duration)
    doc["text"] = " ".join(" ".join(_cue_lines(seg.text)) for seg in segments if seg.text.strip())
    doc["segments"] = []
    for seg in segments:
        entry = seg.to_dict()
        entry["avg_logprob"] = _finite_or_none(entry["avg_logprob"])  # JSON has no -Infinity
        doc["segments"].append(entry)
    if info is not None:
        doc["info"] = info.to_dict()
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def render(segments: Sequence[Segment], fmt: str, info: TranscriptionInfo | None = None,
           max_line_width: int | None = None, max_line_count: int | None = None) -> str:
    """The transcript as a string in format `fmt` (one of FORMATS); the line options apply to
    srt and vtt (checked for every format, so a bad value is never silently ignored)."""
    check_line_options(max_line_width, max_line_count)
    fmt = fmt.lower().lstrip(".")
    if fmt == "txt":
        return to_txt(segments)
    if fmt == "srt":
        return to_srt(segments, max_line_width, max_line_count)
    if fmt == "vtt":
        return to_vtt(segments, max_line_width, max_line_count)
    if fmt == "json":
        return to_json(segments, info)
    raise ValueError(f"unknown transcript format {fmt!r}; choose one of {', '.join(FORMATS)}")


def write_transcript(
    segments: Sequence[Segment],
    path_or_stem: str | os.PathLike[str],
    fmt: str,
    info: TranscriptionInfo | None = None,
    **render_options,
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
    text = render(segments, fmt, info, **render_options)
    path = Path(path_or_stem)
    if path.suffix.lower() != f".{fmt}":
        path = path.with_name(path.name + f".{fmt}")
    return write_atomic(path, text)
