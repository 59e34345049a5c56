"""Timestamped transcription parsing, thinking blocks and the prompt texts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.segments import Segment
from edge_runtime.timestamps import (
    PLAIN_INSTRUCTION,
    TIMESTAMP_INSTRUCTION,
    parse_events,
    parse_timestamped,
    split_thinking,
    transcription_instruction,
)


def spans(segments):
    return [(s.start, s.end, s.text) for s in segments]


def test_canonical_format():
    text = "[0.00]hello there[2.01][2.01]the weather is nice today[4.32]"
    assert spans(parse_timestamped(text)) == [
        (0.0, 2.01, "hello there"),
        (2.01, 4.32, "the weather is nice today"),
    ]


def test_integer_times_and_shared_boundaries():
    assert spans(parse_timestamped("[0]one[3]two[7]")) == [(0.0, 3.0, "one"), (3.0, 7.0, "two")]


def test_missing_end_uses_next_start_or_duration():
    text = "[0.00]first[1.50]second"
    assert spans(parse_timestamped(text, duration=4.0)) == [(0.0, 1.5, "first"), (1.5, 4.0, "second")]
    # no duration: the last segment cannot be given a length, but its text is kept
    assert spans(parse_timestamped(text)) == [(0.0, 1.5, "first"), (1.5, 1.5, "second")]


def test_missing_start_uses_previous_end_or_zero():
    assert spans(parse_timestamped("hello[1.2][1.4]world[2]")) == [(0.0, 1.2, "hello"), (1.4, 2.0, "world")]


def test_overlap_trims_the_earlier_segment():
    assert spans(parse_timestamped("[0]a[5][3]b[6]")) == [(0.0, 3.0, "a"), (3.0, 6.0, "b")]


def test_out_of_order_times_are_made_monotonic_keeping_text_order():
    segs = parse_timestamped("[5]a[6][3]b[4][7]c[8]")
    assert [s.text for s in segs] == ["a", "b", "c"]
    assert spans(segs) == [(5.0, 6.0, "a"), (6.0, 6.0, "b"), (7.0, 8.0, "c")]
    assert spans(parse_timestamped("[4]x[2]")) == [(4.0, 4.0, "x")]


def test_clamped_to_duration_and_segments_past_the_end_dropped():
    segs = parse_timestamped("[0]a[2][2]b[5.5][6]c[7]", duration=5.0)
    assert spans(segs) == [(0.0, 2.0, "a"), (2.0, 5.0, "b")]


def test_all_times_past_the_end_keep_the_words():
    assert spans(parse_timestamped("[40]late[45]", duration=30.0)) == [(0.0, 30.0, "late")]


def test_empty_text_segments_dropped_and_whitespace_normalised():
    segs = parse_timestamped("[0.00]  hello \n  there [1.00][1.00]   [2.00][2.00]\tend\t[3.00]")
    assert spans(segs) == [(0.0, 1.0, "hello there"), (2.0, 3.0, "end")]


def test_no_timestamps_gives_one_segment():
    assert spans(parse_timestamped("  just   words ", duration=12.5)) == [(0.0, 12.5, "just words")]
    assert spans(parse_timestamped("just words")) == [(0.0, 0.0, "just words")]
    assert parse_timestamped("") == [] and parse_timestamped("   \n") == []


def test_stray_brackets_stay_text():
    segs = parse_timestamped("[0.0]he said [laughs] and [ then ][2.5][2.5]x]y[3.0]")
    assert spans(segs) == [(0.0, 2.5, "he said [laughs] and [ then ]"), (2.5, 3.0, "x]y")]


def test_chinese_and_full_width_brackets():
    text = "【0.00】今天天气很好【2.10】［2.10］我们去公园吧［4.00］"
    assert spans(parse_timestamped(text)) == [(0.0, 2.1, "今天天气很好"), (2.1, 4.0, "我们去公园吧")]


def test_full_width_digits_and_clock_times():
    assert spans(parse_timestamped("[１.５]a[01:02.5]")) == [(1.5, 62.5, "a")]


def test_thinking_block_and_special_tokens_removed():
    text = "<think>\nThe speaker says hello.\n</think>\n\n[0.00]hello[1.00]<|im_end|>"
    assert spans(parse_timestamped(text)) == [(0.0, 1.0, "hello")]


def test_split_thinking_forms():
    assert split_thinking("<think>\nhmm\n</think>\n\nanswer") == ("hmm", "answer")
    assert split_thinking("  <think>cut off") == ("cut off", "")
    assert split_thinking("reasoned</think>\n\nanswer") == ("reasoned", "answer")
    assert split_thinking("plain answer") == ("", "plain answer")


def test_instructions():
    assert "[xx.xx]text[yy.yy]" in TIMESTAMP_INSTRUCTION
    # the example in the instruction parses to the format it describes
    example = TIMESTAMP_INSTRUCTION[TIMESTAMP_INSTRUCTION.index("[0.00]"):].split(". ")[0]
    assert [s.text for s in parse_timestamped(example)] == ["hello there", "the weather is nice today"]
    assert transcription_instruction() == PLAIN_INSTRUCTION
    assert transcription_instruction(timestamps=True) == TIMESTAMP_INSTRUCTION
    assert transcription_instruction(True, custom=" Write it down. ") == "Write it down."


def test_segment_shift():
    assert Segment(1.0, 2.5, "x").shift(30.0) == Segment(31.0, 32.5, "x")


def check_invariants(segments, duration):
    previous_end = 0.0
    for seg in segments:
        assert isinstance(seg.text, str) and seg.text == " ".join(seg.text.split()) and seg.text
        assert 0.0 <= seg.start <= seg.end
        assert seg.start >= previous_end
        if duration is not None:
            assert seg.end <= max(duration, 0.0)
        previous_end = seg.end


timestampish = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda v: f"[{v:.2f}]"),
        st.integers(min_value=0, max_value=10**30).map(lambda v: f"【{v}】"),
        st.sampled_from(["[", "]", "【", "】", "<think>", "</think>", "<|im_end|>", "[1:2:3]", "[.5]", "[9" * 3]),
    ),
    max_size=20,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), timestampish),
       duration=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_never_raises_and_output_is_well_formed(text, duration):
    segments = parse_timestamped(text, duration)
    clean = None if duration is None or duration != duration or abs(duration) == float("inf") else duration
    check_invariants(segments, clean)


@pytest.mark.parametrize("text", ["[" + "9" * 400 + "]word", "[0]a[" + "1" * 400 + ".5]"])
def test_absurd_numbers_do_not_become_infinite_times(text):
    segments = parse_timestamped(text)
    assert segments and all(s.end < float("inf") for s in segments)


# ---- speakers ------------------------------------------------------------------------------------

def speaker_spans(segments):
    return [(s.start, s.end, s.speaker, s.text) for s in segments]


def test_speaker_tags_after_the_start_time():
    text = "[0.00][S01]hello there[2.01][2.01][S02]the weather is nice[4.32][4.50][S01]yes[5.00]"
    assert speaker_spans(parse_timestamped(text, speakers=True)) == [
        (0.0, 2.01, "S01", "hello there"), (2.01, 4.32, "S02", "the weather is nice"),
        (4.5, 5.0, "S01", "yes")]


def test_speaker_tag_forms_and_missing_tags():
    text = "[S1][0.0]before the time[1.0][1.0] [speaker_02] spaced [2.0][2.0]untagged[3.0]【S03】[3.0]x[4]"
    assert speaker_spans(parse_timestamped(text, speakers=True)) == [
        (0.0, 1.0, "S01", "before the time"), (1.0, 2.0, "S02", "spaced"),
        (2.0, 3.0, None, "untagged"), (3.0, 4.0, "S03", "x")]
    # without speakers=True the tags are text, as before
    assert parse_timestamped("[0][S01]hi[1]")[0].text == "[S01]hi"


def test_speakers_repaired_like_timestamps():
    text = "[3.0][S02]late start[9.0][2.0][S01]overlap[4.0][S01]no times"
    segs = parse_timestamped(text, duration=6.0, speakers=True)
    # "overlap" starts before "late start": pushed to its end (6.0 = the duration), it is dropped;
    # "no times" starts at 4.0 inside "late start", which gives way
    assert speaker_spans(segs) == [(3.0, 4.0, "S02", "late start"), (4.0, 6.0, "S01", "no times")]
    check_invariants(segs, 6.0)
    # no times at all: one segment, the first tag's speaker
    assert speaker_spans(parse_timestamped("[S02] words only", 3.0, speakers=True)) == [
        (0.0, 3.0, "S02", "words only")]


@settings(max_examples=200, deadline=None)
@given(text=st.lists(st.one_of(st.text(max_size=8), st.sampled_from(
    ["[S01]", "[S2]", "[0.00]", "[1.5]", "[3]", "【S03】", "[SPEAKER_4]", " "])), max_size=20).map("".join),
       duration=st.one_of(st.none(), st.floats(0, 100)))
def test_speaker_parse_never_raises_and_is_well_formed(text, duration):
    segments, ranges = parse_timestamped(text, duration, speakers=True, with_spans=True)
    check_invariants(segments, duration)
    assert len(ranges) == len(segments)
    for seg, (lo, hi) in zip(segments, ranges):
        assert seg.speaker is None or (seg.speaker.startswith("S") and seg.speaker[1:].isdigit())
        assert 0 <= lo <= hi <= len(text)


def test_spans_cover_each_segment_and_its_times():
    text = "<think>x</think>\n[0.00]hello[2.01][2.01]world[4.32]"
    segments, ranges = parse_timestamped(text, with_spans=True)
    assert [text[lo:hi] for lo, hi in ranges] == ["[0.00]hello[2.01]", "[2.01]world[4.32]"]


# ---- sound events --------------------------------------------------------------------------------

def test_event_lines():
    text = "0.0 - 2.5: dog barking\nnoise line\n3 - 4.25: door slams\n1.0 – 1.5 : a cough"
    assert spans(parse_events(text, duration=4.0)) == [
        (0.0, 2.5, "dog barking"), (1.0, 1.5, "a cough"), (3.0, 4.0, "door slams")]
    assert spans(parse_events("9 - 12: late", duration=5.0)) == [(0.0, 5.0, "9 - 12: late")]
    assert spans(parse_events("Rain on a roof.", duration=5.0)) == [(0.0, 5.0, "Rain on a roof.")]
    assert parse_events("") == []
