"""Transcript writers, checked with independent parsers (srt, webvtt-py, json)."""

from __future__ import annotations

import html
import json
import os
import stat
from datetime import timedelta

import pytest
import srt
import webvtt

from edge_runtime.private_files import open_private
from edge_runtime.segments import Segment, TranscriptionInfo
from edge_runtime.subtitles import (
    format_timestamp,
    render,
    to_json,
    to_srt,
    to_txt,
    to_vtt,
    write_transcript,
)

SEGMENTS = [
    Segment(0.0, 2.01, "hello there"),
    Segment(2.01, 4.3219, "the weather is nice today"),
    Segment(65.5, 3671.0006, "今天天气很好，我们去公园吧"),
    Segment(3671.0006, 3675.25, "first line\nsecond line"),
]


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def vtt_ms(stamp: str) -> int:
    """Parse HH:MM:SS.mmm independently of the writer."""
    hours, minutes, rest = stamp.split(":")
    secs, millis = rest.split(".")
    return ((int(hours) * 60 + int(minutes)) * 60 + int(secs)) * 1000 + int(millis)


def test_srt_round_trip_with_srt_library():
    cues = list(srt.parse(to_srt(SEGMENTS)))
    assert [c.index for c in cues] == [1, 2, 3, 4]
    for cue, seg in zip(cues, SEGMENTS):
        assert cue.start == timedelta(milliseconds=ms(seg.start))
        assert cue.end == timedelta(milliseconds=ms(seg.end))
        assert cue.content == seg.text


def test_vtt_round_trip_with_webvtt():
    text = to_vtt(SEGMENTS)
    assert text.startswith("WEBVTT\n\n")
    captions = list(webvtt.from_string(text))
    assert len(captions) == len(SEGMENTS)
    for caption, seg in zip(captions, SEGMENTS):
        assert vtt_ms(caption.start) == ms(seg.start)
        assert vtt_ms(caption.end) == ms(seg.end)
        assert caption.text == seg.text


def test_hours_beyond_two_digits():
    assert format_timestamp(100 * 3600 + 1.5) == "100:00:01,500"
    assert format_timestamp(59.9996, ".") == "00:01:00.000"
    cues = list(srt.parse(to_srt([Segment(360000.0, 360001.25, "late")])))
    assert cues[0].start == timedelta(hours=100) and cues[0].end == timedelta(hours=100, seconds=1.25)


def test_vtt_escapes_markup_and_arrows():
    seg = Segment(0.0, 1.0, "a < b & c --> d")
    captions = list(webvtt.from_string(to_vtt([seg])))
    assert len(captions) == 1
    assert html.unescape(captions[0].text) == "a < b & c --> d"
    assert "-->" not in to_vtt([seg]).split("\n", 3)[3]


def test_blank_lines_and_empty_segments_cannot_break_cues():
    segments = [Segment(0, 1, "one\n\n\ntwo"), Segment(1, 2, "   "), Segment(2, 3, "three")]
    cues = list(srt.parse(to_srt(segments)))
    assert [c.content for c in cues] == ["one\ntwo", "three"]
    assert [c.text for c in webvtt.from_string(to_vtt(segments))] == ["one\ntwo", "three"]


def test_zero_length_vtt_cue_gets_one_millisecond():
    captions = list(webvtt.from_string(to_vtt([Segment(1.0, 1.0, "x")])))
    assert vtt_ms(captions[0].end) - vtt_ms(captions[0].start) == 1


def test_txt_and_json():
    assert to_txt(SEGMENTS[:2]) == "hello there\nthe weather is nice today\n"
    assert to_txt(SEGMENTS[:1], timestamps=True) == "[0.00 -> 2.01] hello there\n"
    assert to_txt([]) == ""
    info = TranscriptionInfo(duration=3675.25, windows=[(0.0, 30.0)], timings={"decode": 1.5},
                             speech_regions=[(0.5, 2.0)])
    doc = json.loads(to_json(SEGMENTS, info))
    assert [(d["start"], d["end"], d["text"]) for d in doc["segments"]] == [
        (s.start, s.end, s.text) for s in SEGMENTS
    ]
    assert doc["text"].startswith("hello there the weather") and "今天天气很好" in doc["text"]
    assert doc["info"]["duration"] == 3675.25 and doc["info"]["windows"] == [[0.0, 30.0]]
    assert doc["info"]["speech_regions"] == [[0.5, 2.0]] and doc["info"]["timings"] == {"decode": 1.5}
    assert "info" not in json.loads(to_json(SEGMENTS))


def test_unknown_format():
    with pytest.raises(ValueError, match="srt"):
        render(SEGMENTS, "docx")


@pytest.mark.parametrize("fmt", ["txt", "srt", "vtt", "json"])
def test_write_transcript_is_owner_only(tmp_path, fmt):
    path = write_transcript(SEGMENTS, tmp_path / "talk", fmt)
    assert path == tmp_path / f"talk.{fmt}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text(encoding="utf-8") == render(SEGMENTS, fmt)
    # a path that already carries the extension is used as is
    assert write_transcript(SEGMENTS, tmp_path / f"x.{fmt}", fmt) == tmp_path / f"x.{fmt}"


def test_open_private_narrows_an_existing_file(tmp_path):
    path = tmp_path / "old.txt"
    path.write_text("old")
    os.chmod(path, 0o644)
    with open_private(path) as handle:
        handle.write("new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open_private(path, "ab") as handle:
        handle.write(b"!")
    assert path.read_bytes() == b"new!"
    with pytest.raises(ValueError):
        open_private(path, "r")


# ---- line wrapping (as whisper's --max_line_width / --max_line_count) and speakers ------------

from edge_runtime.errors import OptionError  # noqa: E402
from edge_runtime.subtitles import check_line_options, cues, wrap_words  # noqa: E402

LONG = Segment(10.0, 16.0, "the quick brown fox jumps over the lazy dog and keeps on running far")


def test_wrap_words_packs_greedily_and_cuts_unbroken_text():
    assert wrap_words("the quick brown fox jumps", 10) == ["the quick", "brown fox", "jumps"]
    assert wrap_words("a bb ccc", 4) == ["a bb", "ccc"]
    assert wrap_words("今天天气很好我们去公园吧", 5) == ["今天天气很", "好我们去公", "园吧"]
    assert wrap_words("one\n\ntwo", None) == ["one", "two"]
    for width in (1, 3, 7, 20):
        lines = wrap_words(LONG.text, width)
        assert all(1 <= len(line) <= width for line in lines)
        assert "".join(lines).replace(" ", "") == LONG.text.replace(" ", "")


def test_srt_and_vtt_wrap_within_a_cue():
    cues_srt = list(srt.parse(to_srt([LONG], max_line_width=20)))
    assert len(cues_srt) == 1 and all(len(l) <= 20 for l in cues_srt[0].content.splitlines())
    assert len(cues_srt[0].content.splitlines()) == 4
    captions = list(webvtt.from_string(to_vtt([LONG], max_line_width=20)))
    assert captions[0].text.splitlines() == cues_srt[0].content.splitlines()


@pytest.mark.parametrize("width, count", [(20, 1), (20, 2), (7, 3), (5, 1)])
def test_line_count_splits_a_segment_into_cues_inside_its_time(width, count):
    got = list(srt.parse(to_srt([LONG, Segment(16.0, 16.5, "end")], max_line_width=width,
                                max_line_count=count)))
    long_cues = got[:-1]
    assert len(long_cues) == -(-len(wrap_words(LONG.text, width)) // count)
    assert long_cues[0].start == timedelta(seconds=10) and long_cues[-1].end == timedelta(seconds=16)
    for a, b in zip(long_cues, long_cues[1:]):
        assert a.end == b.start and a.start < a.end  # the cues tile the segment's span
    for cue in long_cues:
        lines = cue.content.splitlines()
        assert 1 <= len(lines) <= count and all(len(l) <= width for l in lines)
    assert got[-1].content == "end" and got[-1].start == timedelta(seconds=16)
    vtt = list(webvtt.from_string(to_vtt([LONG], max_line_width=width, max_line_count=count)))
    assert [c.text for c in vtt] == [c.content for c in long_cues]


def test_cues_never_leave_the_segment():
    seg = Segment(1.234, 1.240, "a few words that wrap")
    pieces = cues(seg, 5, 1)
    assert pieces[0][0] == seg.start and pieces[-1][1] == seg.end
    assert all(seg.start <= lo <= hi <= seg.end for lo, hi, _ in pieces)


def test_speaker_prefixes_and_voice_spans():
    segs = [Segment(0, 1, "hello there", speaker="S01"), Segment(1, 2, "bye", speaker="S02"),
            Segment(2, 3, "untagged")]
    assert to_txt(segs) == "[S01] hello there\n[S02] bye\nuntagged\n"
    assert to_txt(segs[:1], timestamps=True) == "[0.00 -> 1.00] [S01] hello there\n"
    assert [c.content for c in srt.parse(to_srt(segs))] == ["[S01] hello there", "[S02] bye", "untagged"]
    captions = list(webvtt.from_string(to_vtt(segs)))
    assert [(c.voice, c.text) for c in captions] == [("S01", "hello there"), ("S02", "bye"), (None, "untagged")]
    # wrapped: the SRT prefix counts toward the first line; every VTT cue keeps the voice
    wrapped = list(srt.parse(to_srt([Segment(0, 4, "one two three four", speaker="S03")], 9, 1)))
    assert [c.content for c in wrapped] == ["[S03] one", "two three", "four"]
    voiced = list(webvtt.from_string(to_vtt([Segment(0, 4, "one two three four", speaker="S03")], 9, 1)))
    assert [(c.voice, c.text) for c in voiced] == [("S03", "one two"), ("S03", "three"), ("S03", "four")]


def test_json_has_the_verbose_json_shape():
    seg = Segment(0.0, 1.0, "hi", id=0, tokens=[1, 2], avg_logprob=float("-inf"), speaker="S01")
    info = TranscriptionInfo(duration=1.0, language="English", prompt={"task": "transcribe"})
    doc = json.loads(to_json([seg], info))
    assert (doc["task"], doc["language"], doc["duration"], doc["text"]) == ("transcribe", "English", 1.0, "hi")
    assert doc["segments"] == [{"id": 0, "start": 0.0, "end": 1.0, "text": "hi", "tokens": [1, 2],
                                "avg_logprob": None, "temperature": 0.0, "compression_ratio": None,
                                "speaker": "S01"}]


@pytest.mark.parametrize("width, count", [(0, None), (-3, None), (True, None), (2.5, None),
                                          (None, 2), (10, 0), (10**6, None)])
def test_bad_line_options_are_refused(width, count):
    with pytest.raises(OptionError):
        check_line_options(width, count)
    with pytest.raises(ValueError):  # the same error is a ValueError for API users
        render(SEGMENTS, "txt", max_line_width=width, max_line_count=count)
