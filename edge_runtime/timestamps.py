"""A forgiving parser for the model's timestamped (and speaker-tagged) answers.

Asked for timestamps, MOSS-Audio writes sentence-level spans in seconds, in brackets:
``[0.00]hello there[2.01][2.01]the weather is nice today[4.32]``; asked for speakers, a speaker
tag follows each start time: ``[0.00][S01]hello there[2.01]``.  Real output strays from this
(missing or repeated times, times out of order or past the end, missing tags, full-width
brackets, thinking blocks), so parse_timestamped repairs what it can and never raises.
The instructions themselves live in prompts.py.
"""

from __future__ import annotations

import math
import re

from .prompts import PLAIN_ASR as PLAIN_INSTRUCTION
from .prompts import SENTENCE_TIMESTAMPS as TIMESTAMP_INSTRUCTION
from .segments import Segment


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


# a speaker label: [S01], 【S2】, [SPEAKER_01], [spk 3]...
_SPEAKER = re.compile(r"^\s*[\[【［]\s*(?:S|SPK|SPEAKER)[ _]?(\d{1,3})\s*[\]】］]", re.IGNORECASE)


def _speaker(text: str) -> tuple[str | None, str]:
    """(label like 'S01', rest) when text starts with a speaker tag, else (None, text)."""
    match = _SPEAKER.match(text)
    if match is None:
        return None, text
    return f"S{int(match.group(1)):02d}", text[match.end():]


class _Piece:
    """A text piece of the answer: its text, where it lies in the answer, its speaker."""

    __slots__ = ("text", "lo", "hi", "speaker")

    def __init__(self, text: str, lo: int, hi: int, speaker: str | None = None) -> None:
        self.text, self.lo, self.hi, self.speaker = text, lo, hi, speaker


def _tokens(text: str, speakers: bool) -> list:
    """The answer as times (float, lo, hi) and non-empty text pieces (_Piece), in order.

    With speakers, a leading speaker tag is taken off a piece; a piece that is only a tag
    (``[S01][0.00]hi``) gives its speaker to the next piece and vanishes.
    """
    raw: list = []
    pos = 0
    for match in _TIMESTAMP.finditer(text):
        value = _seconds(match.group(1))
        if value is None:  # not a usable number: leave it in the text
            continue
        raw.append(_Piece(text[pos:match.start()], pos, match.start()))
        raw.append((value, match.start(), match.end()))
        pos = match.end()
    raw.append(_Piece(text[pos:], pos, len(text)))
    out: list = []
    pending: str | None = None
    for item in raw:
        if isinstance(item, _Piece):
            if speakers:
                label, rest = _speaker(item.text)
                if label is not None and not rest.strip():
                    pending = label  # a bare tag: it names the next piece
                    continue
                if label is not None:
                    item.text, item.speaker = rest, label
            if not item.text.strip():
                continue  # whitespace-only pieces vanish: the times around them form one run
            if item.speaker is None and pending is not None:
                item.speaker = pending
            pending = None
            item.text = _normalise(item.text)
        out.append(item)
    return out


def _spans(tokens: list) -> list[list]:
    """[start|None, end|None, piece, lo, hi] for each text piece, from the runs of times around it.

    lo/hi is the stretch of the answer the segment came from: from the last time of the run
    before it (its start time) to the first time after it (its end time)."""
    spans: list[list] = []
    run: list[tuple] = []
    for token in tokens:
        if isinstance(token, _Piece):
            if spans and run:
                spans[-1][1], spans[-1][4] = run[0][0], run[0][2]  # first time after a text ends it
            lo = run[-1][1] if run else token.lo
            spans.append([run[-1][0] if run else None, None, token, lo, token.hi])  # last one starts it
            run = []
        else:
            run.append(token)
    if spans and run:
        spans[-1][1], spans[-1][4] = run[0][0], run[0][2]
    return spans


def _clean_duration(duration: float | None) -> float | None:
    try:
        value = None if duration is None else float(duration)
    except (TypeError, ValueError):
        return None
    if value is None or not math.isfinite(value):
        return None
    return max(0.0, value)


def parse_timestamped(text: str, duration: float | None = None, speakers: bool = False,
                      with_spans: bool = False):
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
    - bracketed text that is not a time (``[laughs]``) stays text;
    - with speakers, a tag ([S01]) after a start time (or before it) becomes the segment's
      `speaker`; a sentence without a tag has speaker None.

    with_spans=True returns (segments, spans): spans[i] is the (lo, hi) character range of the
    answer that segment i came from (used to give each segment its tokens).
    """
    result: list[tuple[Segment, tuple[int, int]]] = []
    if isinstance(text, str):
        result = _parse(text, _clean_duration(duration), speakers)
    segments = [seg for seg, _ in result]
    return (segments, [span for _, span in result]) if with_spans else segments


def _parse(text: str, limit: float | None, speakers: bool) -> list[tuple[Segment, tuple[int, int]]]:
    _, answer = split_thinking(text)
    skipped = len(text) - len(answer)  # the answer is a suffix of the text
    answer = _SPECIAL_TOKEN.sub(lambda m: " " * len(m.group()), answer)  # keeps offsets

    spans = _spans(_tokens(answer, speakers))
    if not spans:
        return []

    def whole(end: float) -> list[tuple[Segment, tuple[int, int]]]:
        first = next((p.speaker for _, _, p, _, _ in spans if p.speaker), None)
        words = " ".join(piece.text for _, _, piece, _, _ in spans)
        return [(Segment(0.0, end, words, speaker=first), (skipped, len(text)))]

    if all(start is None and end is None for start, end, *_ in spans):
        return whole(limit if limit is not None else 0.0)

    # Between two text pieces there is always at least one time, so only the first piece can
    # lack a start and only the last can lack an end.
    if spans[0][0] is None:
        spans[0][0] = 0.0
    if spans[-1][1] is None:
        spans[-1][1] = max(limit, spans[-1][0]) if limit is not None else spans[-1][0]

    out: list[tuple[Segment, tuple[int, int]]] = []
    for start, end, piece, lo, hi in spans:
        if out and start < out[-1][0].end:
            previous = out[-1][0]
            if start >= previous.start:
                previous.end = start  # overlap: the earlier segment gives way
            else:
                start = previous.end  # out of order: keep text order, push the time forward
        end = max(end, start)
        if limit is not None:
            if start >= limit:
                continue  # wholly past the end of the audio: nothing left after clamping
            end = min(end, limit)
        out.append((Segment(float(start), float(end), piece.text, speaker=piece.speaker),
                    (lo + skipped, hi + skipped)))
    if not out and limit is not None:
        # every time was past the end (e.g. times relative to something else): keep the words
        return whole(limit)
    return out


# --- sound-event timelines ----------------------------------------------------------------------

_EVENT_LINE = re.compile(rf"^\s*({_TIME_BODY})\s*(?:s|秒)?\s*[-–~到]\s*({_TIME_BODY})\s*(?:s|秒)?\s*[:：]\s*(.+?)\s*$")


def parse_events(text: str, duration: float | None = None, with_spans: bool = False):
    """Segments from `start_sec - end_sec: event description` lines; never raises.

    Lines that are not in this form, and events wholly past `duration`, are dropped; times are
    clamped to [0, duration] and an end before its start is raised to it; events are sorted by
    time. Text with no event line at all becomes one segment [0, duration], like an untimed
    transcript. with_spans=True also returns each segment's (lo, hi) character range in `text`.
    """
    found: list[tuple[Segment, tuple[int, int]]] = []
    if isinstance(text, str):
        found = _parse_events(text, _clean_duration(duration))
    segments = [seg for seg, _ in found]
    return (segments, [span for _, span in found]) if with_spans else segments


def _parse_events(text: str, limit: float | None) -> list[tuple[Segment, tuple[int, int]]]:
    _, answer = split_thinking(text)
    skipped = len(text) - len(answer)
    answer = _SPECIAL_TOKEN.sub(lambda m: " " * len(m.group()), answer)
    events: list[tuple[Segment, tuple[int, int]]] = []
    offset = skipped
    for line in answer.splitlines(keepends=True):
        lo, offset = offset, offset + len(line)
        match = _EVENT_LINE.match(line.rstrip("\r\n"))
        if match is None:
            continue
        start, end = _seconds(match.group(1)), _seconds(match.group(2))
        if start is None or end is None:
            continue
        start, end = max(0.0, start), max(start, end)
        if limit is not None:
            if start >= limit:
                continue
            end = min(end, limit)
        events.append((Segment(start, end, _normalise(match.group(3))), (lo, offset)))
    if not events and answer.strip():
        return [(Segment(0.0, limit if limit is not None else 0.0, _normalise(answer)),
                 (skipped, len(text)))]
    return sorted(events, key=lambda item: (item[0].start, item[0].end))
