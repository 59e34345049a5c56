"""Endpointer on synthetic probability sequences.

Chunks of 160 samples (10 ms) keep the expected sample positions easy to derive by hand from the
config: e.g. min_silence_s 0.7 s = 11200 samples, pre-roll 0.2 s = 3200, post-roll 0.1 s = 1600.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.endpointing import (
    EndpointConfig, Endpointer, SpeechDiscarded, SpeechStart, Utterance,
)

CHUNK = 160
SR = 16000


def probs_for(*segments: tuple[float, float]) -> list[float]:
    """[(prob, seconds), ...] -> one probability per 10 ms chunk."""
    out: list[float] = []
    for prob, seconds in segments:
        out += [prob] * int(round(seconds * SR / CHUNK))
    return out


def run(probs, config: EndpointConfig | None = None, energies=None, flush: bool = True):
    """Push every chunk; returns [(samples_seen when emitted, event), ...]."""
    ep = Endpointer(config or EndpointConfig())
    log = []
    for i, prob in enumerate(probs):
        energy = None if energies is None else energies[i]
        for event in ep.push(prob, CHUNK, energy):
            log.append((ep.samples_seen, event))
    if flush:
        log += [(ep.samples_seen, event) for event in ep.flush()]
    return log


def events_of(log, kind):
    return [event for _, event in log if isinstance(event, kind)]


def test_silence_only_gives_nothing():
    assert run(probs_for((0.0, 5.0), (0.3, 2.0))) == []


def test_one_utterance_closed_by_silence():
    log = run(probs_for((0.0, 1.0), (0.9, 2.0), (0.0, 2.0)))
    assert log == [
        (16000 + CHUNK, SpeechStart(16000, 16000 - 3200)),
        # silence starts at 3 s = 48000; it has lasted 0.7 s once the clock reaches 59200
        (48000 + 11200, Utterance(16000 - 3200, 48000 + 1600, "silence")),
    ]
    start = log[0][1]
    assert start.t == 1.0


def test_speech_at_time_zero_has_no_negative_pre_roll():
    log = run(probs_for((0.9, 1.0), (0.0, 1.0)))
    assert log[0] == (CHUNK, SpeechStart(0, 0))
    assert events_of(log, Utterance) == [Utterance(0, 16000 + 1600, "silence")]


def test_speech_until_the_end_is_closed_by_flush():
    ep = Endpointer()
    events = ep.push_many(probs_for((0.0, 0.5), (0.9, 1.5)), n_samples=CHUNK)
    assert events == [SpeechStart(8000, 8000 - 3200)]
    assert ep.in_speech and ep.utterance_start == 8000 - 3200
    assert ep.flush() == [Utterance(8000 - 3200, 32000, "end_of_stream")]
    assert not ep.in_speech and ep.flush() == []


def test_flush_inside_short_trailing_silence_ends_at_the_silence():
    log = run(probs_for((0.9, 1.0), (0.0, 0.3)))
    assert events_of(log, Utterance) == [Utterance(0, 16000 + 1600, "end_of_stream")]


def test_post_roll_is_clipped_to_the_stream():
    cfg = EndpointConfig(post_roll_s=0.5, min_silence_s=0.2)
    log = run(probs_for((0.9, 1.0), (0.0, 0.3)), cfg)
    # the utterance closes after 0.2 s of silence, when only 0.2 s of post-roll exists yet
    assert events_of(log, Utterance) == [Utterance(0, 16000 + 3200, "silence")]


def test_tiny_blips_are_discarded():
    log = run(probs_for((0.0, 1.0), (0.9, 0.1), (0.0, 1.0), (1.0, 0.2), (0.0, 1.0)))
    assert events_of(log, Utterance) == []
    assert events_of(log, SpeechDiscarded) == [
        SpeechDiscarded(16000 - 3200, 17600 + 1600),
        SpeechDiscarded(17600 + 16000 - 3200, 17600 + 16000 + 3200 + 1600),
    ]
    assert len(events_of(log, SpeechStart)) == 2


def test_speech_of_exactly_min_speech_is_kept():
    log = run(probs_for((0.0, 1.0), (0.9, 0.25), (0.0, 1.0)))
    assert events_of(log, Utterance) == [Utterance(16000 - 3200, 20000 + 1600, "silence")]


def test_short_pause_does_not_split():
    log = run(probs_for((0.9, 1.0), (0.0, 0.6), (0.9, 1.0), (0.0, 1.0)))
    assert events_of(log, Utterance) == [Utterance(0, 41600 + 1600, "silence")]
    assert len(events_of(log, SpeechStart)) == 1


def test_hysteresis_between_thresholds():
    # 0.4 neither starts speech when idle nor counts as silence inside speech
    log = run(probs_for((0.4, 1.0), (0.9, 1.0), (0.4, 2.0), (0.1, 1.0)))
    assert events_of(log, SpeechStart) == [SpeechStart(16000, 16000 - 3200)]
    assert events_of(log, Utterance) == [Utterance(16000 - 3200, 64000 + 1600, "silence")]
    # a chunk at the threshold is speech; one at neg_threshold is not silence
    log = run(probs_for((0.5, 1.0), (0.35, 1.0), (0.349, 1.0)))
    assert events_of(log, Utterance) == [Utterance(0, 32000 + 1600, "silence")]


def test_pre_roll_never_reaches_into_the_previous_utterance():
    cfg = EndpointConfig(min_silence_s=0.3, pre_roll_s=0.5, post_roll_s=0.1)
    log = run(probs_for((0.9, 1.0), (0.0, 0.4), (0.9, 1.0), (0.0, 1.0)), cfg)
    first, second = events_of(log, Utterance)
    assert first == Utterance(0, 16000 + 1600, "silence")
    assert second.start_sample == first.end_sample  # not 22400 - 8000
    assert events_of(log, SpeechStart)[1] == SpeechStart(22400, 17600)


def test_long_monologue_is_cut_at_the_quietest_chunk():
    cfg = EndpointConfig(max_utterance_s=10.0, cut_search_s=2.0)
    # steady speech with one less certain chunk at 9.0 s and one (outside the search window) at 5 s
    probs = probs_for((0.95, 25.0))
    probs[500] = 0.55
    probs[900] = 0.6
    log = run(probs, cfg)
    utterances = events_of(log, Utterance)
    cut = 900 * CHUNK + CHUNK // 2
    assert utterances[0] == Utterance(0, cut, "max_length")
    assert (10 * SR, SpeechStart(cut, cut)) in log  # decided when the clock reaches the limit
    # the rest: cut again 10 s later (no quieter chunk: the latest chunk before the limit), then flush
    second_limit = cut + 10 * SR
    second_cut = second_limit // CHUNK * CHUNK - CHUNK // 2  # last whole chunk before the limit
    assert utterances[1] == Utterance(cut, second_cut, "max_length")
    assert utterances[2] == Utterance(second_cut, 25 * SR, "end_of_stream")
    assert all(u.duration_s <= 10.0 for u in utterances)


def test_long_monologue_cut_uses_energy_among_equally_likely_chunks():
    cfg = EndpointConfig(max_utterance_s=10.0, cut_search_s=2.0)
    probs = probs_for((0.99, 12.0))
    energies = [0.3] * len(probs)
    energies[850] = 0.01  # a breath at 8.5 s
    energies[300] = 0.001  # quieter, but too far from the limit
    log = run(probs, cfg, energies=energies)
    assert events_of(log, Utterance)[0] == Utterance(0, 850 * CHUNK + CHUNK // 2, "max_length")


def test_limit_reached_inside_trailing_silence_ends_there():
    cfg = EndpointConfig(max_utterance_s=10.0)
    log = run(probs_for((0.9, 9.8), (0.0, 0.5), (0.9, 1.0), (0.0, 1.0)), cfg)
    first, second = events_of(log, Utterance)
    assert first == Utterance(0, 9.8 * SR + 1600, "max_length")
    # speech resumes at 10.3 s: a new utterance with its full pre-roll (clear of the first one)
    assert second.start_sample == 10.3 * SR - 3200 > first.end_sample
    assert second.reason == "silence"


def test_config_validation():
    with pytest.raises(ValueError):
        EndpointConfig(threshold=0.3, neg_threshold=0.5)
    with pytest.raises(ValueError):
        EndpointConfig(min_silence_s=0)
    with pytest.raises(ValueError):
        EndpointConfig(max_utterance_s=2.0, cut_search_s=2.0)
    with pytest.raises(ValueError):
        Endpointer().push(0.9, 0)


segments = st.lists(
    st.tuples(st.sampled_from([0.0, 0.2, 0.4, 0.5, 0.8, 1.0]), st.integers(1, 120)), max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(segments=segments, max_utterance_s=st.sampled_from([1.5, 3.0, 30.0]))
def test_invariants_on_random_streams(segments, max_utterance_s):
    cfg = EndpointConfig(max_utterance_s=max_utterance_s, cut_search_s=1.0)
    probs = [p for p, n in segments for _ in range(n)]
    log = run(probs, cfg)
    total = len(probs) * CHUNK
    closed = [e for _, e in log if isinstance(e, (Utterance, SpeechDiscarded))]
    starts = events_of(log, SpeechStart)
    # every SpeechStart is answered by exactly one close, for the same audio start
    assert [s.start_sample for s in starts] == [c.start_sample for c in closed]
    utterances = events_of(log, Utterance)
    previous_end = 0
    for utt in utterances:
        assert previous_end <= utt.start_sample < utt.end_sample <= total
        assert utt.end_sample - utt.start_sample <= cfg.samples(max_utterance_s)
        previous_end = utt.end_sample
    # no event is about audio not seen yet
    for seen, event in log:
        end = getattr(event, "end_sample", getattr(event, "sample", 0))
        assert end <= seen
    # every speech chunk lies in some kept or discarded span
    for i, prob in enumerate(probs):
        if prob >= cfg.threshold:
            mid = i * CHUNK + CHUNK // 2
            assert any(c.start_sample <= mid < c.end_sample for c in closed), i


def test_chunk_size_does_not_change_the_result_in_time():
    # the same timeline in 10 ms and in 20 ms chunks gives the same utterances
    segs = [(0.0, 1.0), (0.9, 2.0), (0.0, 1.0), (0.9, 0.5), (0.0, 2.0)]
    fine = events_of(run(probs_for(*segs)), Utterance)
    ep = Endpointer()
    coarse = []
    for prob, seconds in segs:
        coarse += ep.push_many([prob] * int(seconds * SR / 320), n_samples=320)
    coarse += ep.flush()
    assert [e for e in coarse if isinstance(e, Utterance)] == fine


def test_file_through_vad_and_endpointer_gives_the_spoken_sentences(tmp_path):
    """End to end without a model: FileStream -> SileroVAD -> Endpointer on espeak speech."""
    import numpy as np
    import soundfile as sf

    from edge_runtime.capture import FileStream
    from edge_runtime.vad import CHUNK_SAMPLES, SileroVAD, speech_regions

    from speech_fixture import make_speech_wav

    wav = make_speech_wav(tmp_path / "speech.wav")  # three sentences, 1.5 s and 1.2 s breaks
    vad, ep = SileroVAD(threads=1), Endpointer(EndpointConfig(min_silence_s=0.7))
    events = []
    with FileStream(wav, block_seconds=0.05) as stream:
        for block in stream:
            events += ep.push_many(vad.probs(block), n_samples=CHUNK_SAMPLES)
    events += ep.push_many(vad.flush(), n_samples=CHUNK_SAMPLES) + ep.flush()
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert [u.reason for u in utterances] == ["silence"] * 3
    # each VAD speech region of the whole clip (the comma pause splits the first sentence) lies in
    # exactly one utterance, and the breaks between sentences separate the utterances
    samples, _ = sf.read(wav, dtype="float32")
    regions = speech_regions(samples, vad=SileroVAD(threads=1))
    owners = [[i for i, u in enumerate(utterances) if u.start_s <= a and b <= u.end_s + 0.05]
              for a, b in regions]
    assert owners == [[0], [0], [1], [2]]
    assert all(np.isclose(u.start_s, regions[i][0] + 0.03 - 0.2, atol=0.04)
               for u, i in zip(utterances, (0, 2, 3)))


def test_committed_end_never_passes_the_final_end():
    # Random speech/silence streams: whenever an utterance closes, every committed_end reported
    # while it was open lies inside it (a live session never prefills audio past the end).
    import random

    for seed in range(40):
        rnd = random.Random(seed)
        cfg = EndpointConfig(max_utterance_s=3.0, cut_search_s=1.0)
        ep = Endpointer(cfg)
        committed = []
        for _ in range(600):
            prob = 0.9 if rnd.random() < 0.6 else rnd.choice([0.1, 0.4])
            for ev in ep.push(prob):
                if isinstance(ev, Utterance):
                    assert all(ev.start_sample <= c <= ev.end_sample for c in committed)
                    committed = []
                elif isinstance(ev, SpeechDiscarded):
                    committed = []
            if ep.committed_end is not None:
                committed.append(ep.committed_end)
        for ev in ep.flush():
            if isinstance(ev, Utterance):
                assert all(ev.start_sample <= c <= ev.end_sample for c in committed)


def test_refine_end_anchors_ends_to_the_waveform():
    import numpy as np

    from edge_runtime.endpointing import refine_end

    sr = 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr).astype(np.float32)
    fade = tone[:1600] * np.linspace(1, 0, 1600, dtype=np.float32)
    audio = np.concatenate([tone, fade, np.zeros(8000, np.float32)])  # sound ends ~1.1 s
    sound_end = sr + 1600
    ends = []
    for shift in range(0, 512, 37):  # the VAD grid falling anywhere on the waveform
        padded = np.concatenate([np.zeros(shift, np.float32), audio])
        vad_end = shift + sound_end + 3000 + (shift * 7) % 512
        end = refine_end(padded[:vad_end], 0, vad_end, max_trim=4800, post_roll=1600)
        assert vad_end - 4800 <= end <= vad_end  # only trims, within bounds
        ends.append(end - shift)
    assert max(ends) - min(ends) <= 160  # within one 10 ms frame whatever the grid
    assert abs(ends[0] - (sound_end + 1600)) <= 400  # fade end + post-roll
    # nothing loud in the trim window: trim the whole allowance
    assert refine_end(np.zeros(16000, np.float32), 0, 16000, max_trim=3000, post_roll=0) == 13000
