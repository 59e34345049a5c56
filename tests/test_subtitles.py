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
