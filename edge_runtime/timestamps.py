"""Prompts for transcription and a forgiving parser for the model's timestamped answers.

Asked for timestamps, MOSS-Audio writes sentence-level spans in seconds, in brackets:
``[0.00]hello there[2.01][2.01]the weather is nice today[4.32]``.  Real output strays from this
(missing or repeated times, times out of order or past the end, full-width brackets, thinking
blocks), so parse_timestamped repairs what it can and never raises.
"""

from __future__ import annotations

import math
import re

from .segments import Segment

PLAIN_INSTRUCTION = "Transcribe the audio."

TIMESTAMP_INSTRUCTION = (
    "Transcribe the audio. Add sentence-level timestamps in seconds, in the form "
    "[start]text[end], for example [0.00]hello there[2.01][2.01]the weather is nice today[4.32]."
)


def transcription_instruction(timestamps: bool = False, custom: str | None = None) -> str:
    """The question to put in the prompt: `custom` if given, else the plain or timestamp one."""
    if custom is not None and custom.strip():
        return custom.strip()
    return TIMESTAMP_INSTRUCTION if timestamps else PLAIN_INSTRUCTION


# --- thinking blocks ------------------------------------------------------------------------------

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"


def split_thinking(text: str) -> tuple[str, str]:
    """Split a thinking model's reply into (thinking, answer).

    Handles a leading ``<think>...</think>`` block, a reply whose ``<think>`` was part of the prompt
    (only ``</think>`` appears), and a block cut off before ``</think>`` (all thinking, no answer).
    Text with no thinking block is returned as ("", text).
    """
    stripped = text.lstrip()
    if stripped.startswith(_THINK_OPEN):
        body = stripped[len(_THINK_OPEN):]
        close = body.find(_THINK_CLOSE)
        if close < 0:
            return body.strip(), ""
        return body[:close].strip(), body[close + len(_THINK_CLOSE):].lstrip()
    close = text.find(_THINK_CLOSE)
    if close >= 0 and _THINK_OPEN not in text[:close]:
        return text[:close].strip(), text[close + len(_THINK_CLOSE):].lstrip()
    return "", text


# --- timestamp tokens -----------------------------------------------------------------------------

_DIGIT = "[0-9\uff10-\uff19]"  # ASCII and full-width digits only (float() is given ASCII)
_TIME_BODY = rf"(?:{_DIGIT}+[:：]){{0,2}}{_DIGIT}+(?:[.．]{_DIGIT}+)?"
_TIMESTAMP = re.compile(
    rf"[\[【［]\s*({_TIME_BODY})\s*(?:s|秒)?\s*[\]】］]",
    re.IGNORECASE,
)
# chat special tokens (<|im_end|>, <|endoftext|>...) never belong in a transcript
_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_FULLWIDTH = str.maketrans("０１２３４５６７８９：．", "0123456789:.")


def _seconds(body: str) -> float | None:
    """Seconds of '12.5', '01:02.5' or '1:02:03'; None if not a usable finite time."""
    parts = body.translate(_FULLWIDTH).split(":")
    try:
        value = 0.0
        for part in parts:
            value = value * 60.0 + float(part)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _tokens(text: str) -> list[float | str]:
    """The answer as an alternating-ish list of times (float) and non-empty text pieces (str)."""
    out: list[float | str] = []
    pos = 0
    for match in _TIMESTAMP.finditer(text):
        value = _seconds(match.group(1))
        if value is None:  # not a usable number: leave it in the text
            continue
        out.append(text[pos:match.start()])
        out.append(value)
        pos = match.end()
    out.append(text[pos:])
    # whitespace-only pieces vanish, so times on either side of them form one run
    return [t for t in out if not isinstance(t, str) or t.strip()]


def _spans(tokens: list[float | str]) -> list[list]:
    """[start|None, end|None, text] for each text piece, from the runs of times around it."""
    spans: list[list] = []
    run: list[float] = []
    for token in tokens:
        if isinstance(token, str):
            if spans and run:
                spans[-1][1] = run[0]  # first time after a text ends it
            spans.append([run[-1] if run else None, None, _normalise(token)])  # last one starts the next
            run = []
        else:
            run.append(token)
    if spans and run:
        spans[-1][1] = run[0]
    return spans


def _clean_duration(duration: float | None) -> float | None:
    try:
        value = None if duration is None else float(duration)
    except (TypeError, ValueError):
        return None
    if value is None or not math.isfinite(value):
        return None
    return max(0.0, value)


def parse_timestamped(text: str, duration: float | None = None) -> list[Segment]:
    """Segments from a timestamped transcription; never raises.

    Repairs made:
    - a leading thinking block and chat special tokens (<|im_end|>...) are removed;
    - a text piece with no start starts at the previous end (0 for the first); one with no end
      ends at the next start (or at `duration`, or at its own start when neither is known);
    - segments stay in text order and never overlap: a segment starting inside the previous one
      cuts the previous one short; one starting before the previous one is pushed to its end;
      an end before its start is raised to the start;
    - with `duration`, times are clamped to [0, duration] and a segment wholly past the end is
      dropped (unless every segment is: then all the text becomes one segment [0, duration]);
    - pieces empty after whitespace normalisation are dropped; text with no timestamps at all
      becomes one segment [0, duration] ([0, 0] without a duration);
    - bracketed text that is not a time (``[laughs]``) stays text.
    """
    if not isinstance(text, str):
        return []
    limit = _clean_duration(duration)
    _, answer = split_thinking(text)
    answer = _SPECIAL_TOKEN.sub(" ", answer)

    spans = _spans(_tokens(answer))
    if not spans:
        return []
    if all(start is None and end is None for start, end, _ in spans):
        whole = " ".join(piece for _, _, piece in spans)
        return [Segment(0.0, limit if limit is not None else 0.0, whole)]

    # Between two text pieces there is always at least one time, so only the first piece can
    # lack a start and only the last can lack an end.
    if spans[0][0] is None:
        spans[0][0] = 0.0
    if spans[-1][1] is None:
        spans[-1][1] = max(limit, spans[-1][0]) if limit is not None else spans[-1][0]

    segments: list[Segment] = []
    for start, end, piece in spans:
        if segments and start < segments[-1].end:
            previous = segments[-1]
            if start >= previous.start:
                previous.end = start  # overlap: the earlier segment gives way
            else:
                start = previous.end  # out of order: keep text order, push the time forward
        end = max(end, start)
        if limit is not None:
            if start >= limit:
                continue  # wholly past the end of the audio: nothing left after clamping
            end = min(end, limit)
        segments.append(Segment(float(start), float(end), piece))
    if not segments and limit is not None:
        # every time was past the end (e.g. times relative to something else): keep the words
        whole = " ".join(piece for _, _, piece in spans)
        return [Segment(0.0, limit, whole)]
    return segments
