"""Live input: the incremental path equals offline transcription of the same utterances."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import test_clip
from edge_runtime.api import EdgeMoss
from edge_runtime.capture import FileStream
from edge_runtime.live import LiveTranscriber, UtteranceDecoder
from edge_runtime.timestamps import TIMESTAMP_INSTRUCTION
from speech_fixture import make_speech_wav

SR = 16000
TOKENS = 24
# One long sentence (> 8 s: several 4 s chunks prefilled while "speaking"), then two short ones.
SSML = ("<speak>Hello there, this is a long sentence for the live test, and it keeps going on and "
        "on for quite a while, so that the session has to encode and prefill several four second "
        "chunks before the speaker finally pauses."
        '<break time="1500ms"/>The weather is nice today.'
        '<break time="1300ms"/>Goodbye for now.</speak>')


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return make_speech_wav(tmp_path_factory.mktemp("live") / "speech.wav", SSML, lead_s=0.6,
                           tail_s=1.2)


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory):
    """Three short utterances (the first ends ~4 s in, the clip at ~9 s)."""
    return make_speech_wav(tmp_path_factory.mktemp("live") / "short.wav")


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, bundle_factory):
    return bundle_factory(tiny_checkpoint, "fp32", "chunked")


def live_run(model, path, block_sizes=(480,), speculate=True, partial_every_s=None):
    """Push a file through LiveTranscriber in blocks of the given sizes (cycled); the finals."""
    finals = []

    def on_event(event):
        if event.type == "final":
            finals.append(event)

    live = LiveTranscriber(model, on_event, max_new_tokens=TOKENS, speculate=speculate,
                           partial_every_s=partial_every_s)
    audio = sf.read(path, dtype="float32")[0]
    i = k = 0
    while i < audio.size:
        n = block_sizes[k % len(block_sizes)]
        live.process(audio[i:i + n])
        i, k = i + n, k + 1
    live.close()
    return finals, live


def test_live_equals_transcribe_with_the_same_segmentation(bundle, speech):
    model = EdgeMoss(bundle, threads=1)
    finals, live = live_run(model, speech, block_sizes=(480, 1, 7000, 333))
    assert len(live.utterances) == 3
    assert max(b - a for a, b in live.utterances) > 8 * SR  # several chunks prefilled live
    windows = [(a / SR, b / SR) for a, b in live.utterances]
    segments, _ = model.transcribe(speech, windows=windows, front_end="streaming",
                                   max_new_tokens=TOKENS)
    assert [(e.start, e.end, e.text) for e in finals] == \
        [(s.start, s.end, s.text) for s in segments]
    assert all(e.type == "final" and e.latency_s is not None for e in finals)
    # The same audio in other block sizes gives the same events: nothing depends on timing.
    again, _ = live_run(model, speech, block_sizes=(16000,))
    assert [without_timing(e.to_dict()) for e in again] == \
        [without_timing(e.to_dict()) for e in finals]


# A pause shorter than the endpointer's 0.7 s: speculation starts in it and must be dropped.
SSML_RESUMING = ("<speak>This sentence pauses briefly here"
                 '<break time="550ms"/>and then goes on speaking for a few more seconds.'
                 '<break time="1500ms"/>Goodbye.</speak>')


def test_speculative_tail_gives_the_same_finals_as_offline(bundle, speech, tmp_path, monkeypatch):
    """The tail prefilled while the endpointer waits out the silence gives exactly the finals of
    the plain path and of offline transcription; speculation on a pause that turns out to be
    inside the utterance is rolled back without changing anything."""
    model = EdgeMoss(bundle, threads=1)
    dropped = []
    real_drop = UtteranceDecoder.drop_speculation

    def counting_drop(self):
        if self._spec is not None:
            dropped.append(self._spec.key)
        real_drop(self)

    monkeypatch.setattr(UtteranceDecoder, "drop_speculation", counting_drop)
    resuming = make_speech_wav(tmp_path / "resuming.wav", SSML_RESUMING, lead_s=0.5, tail_s=1.2)
    for path in (speech, resuming):
        dropped.clear()
        plain, plain_live = live_run(model, path, block_sizes=(480, 7000, 333), speculate=False)
        spec, spec_live = live_run(model, path, block_sizes=(480, 7000, 333), speculate=True)
        assert spec_live.utterances == plain_live.utterances
        assert [(e.start, e.end, e.text) for e in spec] == [(e.start, e.end, e.text) for e in plain]
        assert any(e.speculated for e in spec) and not any(e.speculated for e in plain)
        windows = [(a / SR, b / SR) for a, b in spec_live.utterances]
        segments, _ = model.transcribe(path, windows=windows, front_end="streaming",
                                       max_new_tokens=TOKENS)
        assert [(e.start, e.end, e.text) for e in spec] == [(s.start, s.end, s.text) for s in segments]
        if path == resuming:
            # the short pause was speculated on, then speech resumed inside the same utterance
            first_start, first_end = spec_live.utterances[0]
            assert any(key[0] == first_start and key[3] < first_end for key in dropped)


# The live benchmark's two short utterances (benchmarks/edge_fit.py LIVE_SSML).
SSML_TWO = ("<speak>Please book a table for four people at seven tonight."
            '<break time="1500ms"/>And remind me to call the dentist tomorrow morning.</speak>')


@pytest.fixture(scope="module")
def two_short(tmp_path_factory):
    return make_speech_wav(tmp_path_factory.mktemp("live") / "two.wav", SSML_TWO, lead_s=0.5,
                           tail_s=1.5)


@pytest.mark.parametrize("clip,block,partials,count", [("speech", 480, None, 3),
                                                       ("speech", 100, None, 3),
                                                       ("two_short", 1600, 0.1, 2)])
def test_speculation_is_done_once_per_utterance_and_kept(bundle, request, monkeypatch, clip,
                                                         block, partials, count):
    """Small blocks (a microphone's 30 ms) reach the tentative end before the committed fed point
    has caught up with it: the speculation must still be made once, on the fed point the
    endpoint will use, and then adopted, not dropped and redone a block later (nor rolled back
    by a partial hypothesis)."""
    model = EdgeMoss(bundle, threads=1)
    made, dropped = [], []
    real_speculate, real_drop = UtteranceDecoder.speculate, UtteranceDecoder.drop_speculation

    def counting_speculate(self, samples, key):
        made.append(key)
        real_speculate(self, samples, key)

    def counting_drop(self):
        if self._spec is not None:
            dropped.append(self._spec.key)
        real_drop(self)

    monkeypatch.setattr(UtteranceDecoder, "speculate", counting_speculate)
    monkeypatch.setattr(UtteranceDecoder, "drop_speculation", counting_drop)
    speech = request.getfixturevalue(clip)
    spec, spec_live = live_run(model, speech, block_sizes=(block,), speculate=True,
                               partial_every_s=partials)
    assert len(spec_live.utterances) == count
    # Each assumed end (utterance start, tentative end) is speculated on once; the pauses inside
    # the long sentence are speculated on and dropped, the real ends are adopted.
    ends = [key[:2] for key in made]
    assert len(ends) == len(set(ends)), made
    assert len(made) - len(dropped) == count and set(dropped) <= set(made), (made, dropped)
    assert all(e.speculated for e in spec)
    plain, plain_live = live_run(model, speech, block_sizes=(block,), speculate=False,
                                 partial_every_s=partials)
    assert plain_live.utterances == spec_live.utterances
    assert [(e.start, e.end, e.text) for e in spec] == [(e.start, e.end, e.text) for e in plain]
    windows = [(a / SR, b / SR) for a, b in spec_live.utterances]
    segments, _ = model.transcribe(speech, windows=windows, front_end="streaming",
                                   max_new_tokens=TOKENS)
    assert [(e.start, e.end, e.text) for e in spec] == [(s.start, s.end, s.text) for s in segments]


def test_warm_up_loads_the_decoder_and_prefix_without_changing_the_finals(bundle, speech):
    model = EdgeMoss(bundle, threads=1)
    finals = []
    live = LiveTranscriber(model, finals.append, max_new_tokens=TOKENS)
    assert model._decoder is None  # still loading (or loaded but not yet asked for)
    live.warm_up()
    prefix = live.utterance.builder.prefix_ids()
    assert model._decoder is not None and model.lm.length == len(prefix)
    audio = sf.read(speech, dtype="float32")[0]
    for i in range(0, audio.size, 480):
        live.process(audio[i:i + 480])
    live.close()
    cold, _ = live_run(EdgeMoss(bundle, threads=1), speech)
    assert [e.to_dict() | {"latency_s": 0} for e in finals] == \
        [e.to_dict() | {"latency_s": 0} for e in cold]


def test_incremental_prefill_gives_the_tokens_of_a_whole_prefill(bundle):
    model = EdgeMoss(bundle, threads=1)
    rng = np.random.default_rng(3)
    for seconds in (2.0, 4.0, 9.7, 12.0):
        clip = test_clip(seconds, seed=int(seconds))
        utt = UtteranceDecoder(model, max_new_tokens=TOKENS)
        utt.begin()
        i = 0
        while i < clip.size:
            n = int(rng.integers(1, 9000))
            utt.feed(clip[i:i + n])
            i += n
        assert utt.chunks_done == (clip.size // 160) // 400 - (1 if (clip.size // 160) % 400 == 0
                                                               else 0) or seconds < 4.1
        utt.finish(0.0)
        whole = model._run(clip, TIMESTAMP_INSTRUCTION, model.decode_settings(TOKENS), None,
                           "streaming")
        assert utt.last_token_ids == whole.token_ids, seconds


def test_partials_leave_the_committed_cache_alone(bundle):
    model = EdgeMoss(bundle, threads=1)
    clip = test_clip(10.0, seed=9)
    utt = UtteranceDecoder(model, max_new_tokens=TOKENS)
    utt.begin()
    for i in range(0, clip.size, 8000):
        utt.feed(clip[i:i + 8000])
        length = model.lm.length
        utt.partial(max_new_tokens=4)
        assert model.lm.length == length
    utt.finish(0.0)
    whole = model._run(clip, TIMESTAMP_INSTRUCTION, model.decode_settings(TOKENS), None, "streaming")
    assert utt.last_token_ids == whole.token_ids


def listen_cli(*args, env=None, **popen):
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "listen", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, **popen)


def without_timing(event: dict) -> dict:
    """An event minus its measured latency (a wall-clock figure, different on every run) and
    whether its tail was speculated (that depends on how the audio was split into blocks)."""
    return {k: v for k, v in event.items() if k not in ("latency_s", "speculated")}


def final_events(stdout: str):
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert all(e["type"] in ("partial", "final") for e in events)
    return [without_timing(e) for e in events if e["type"] == "final"]


def test_listen_cli_json_transcript_and_latency(tmp_path, bundle, speech):
    transcript = tmp_path / "notes.srt"
    proc = listen_cli("--input", str(speech), "--json", "--model", str(bundle), "--transcript",
                      str(transcript), "--max-new-tokens", str(TOKENS), "--threads", "1")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    finals = final_events(out)
    assert {e["utterance"] for e in finals} == {0, 1, 2}
    model = EdgeMoss(bundle, threads=1)
    expected, _ = live_run(model, speech)
    assert [(e["start"], e["end"], e["text"]) for e in finals] == \
        [(round(e.start, 3), round(e.end, 3), e.text) for e in expected]
    assert stat.S_IMODE(transcript.stat().st_mode) == 0o600
    import srt

    cues = list(srt.parse(transcript.read_text()))
    assert len(cues) == len(finals)
    assert "end of speech -> final text" in err and "real-time factor" in err


def test_kill_9_leaves_the_transcript_whole(tmp_path, bundle, short_speech):
    # The short clip: its first final comes ~4 s in (the long one's after ~10 s) and two more
    # utterances are still to come when the process is killed.
    transcript = tmp_path / "t.jsonl"
    proc = listen_cli("--input", str(short_speech), "--realtime", "--model", str(bundle),
                      "--transcript", str(transcript), "--max-new-tokens", str(TOKENS))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if transcript.exists() and transcript.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the first final segment"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    lines = transcript.read_text().splitlines()
    assert lines and all(set(json.loads(line)) == {"start", "end", "text"} for line in lines)


def test_microphone_run_equals_its_replay_and_finds_the_files_utterances(tmp_path, bundle, speech):
    """A real PortAudio input device (private PulseAudio server, null sink monitor).

    The replay of the saved capture goes through the same code, so equal events there prove
    determinism only; the independent check is against the original file: the same utterances
    at the same times (within 0.1 s)."""
    import system_deps
    from pulse_rig import PulseRig

    system_deps.require(*system_deps.PULSE_RIG)  # first: sounddevice cannot load without PortAudio
    system_deps.importorskip("sounddevice", "live")
    cap = tmp_path / "cap.wav"
    with PulseRig() as rig:
        env = dict(os.environ, **rig.env)
        proc = listen_cli("--mic", "--mic-device", "pulse", "--save-audio", str(cap), "--json",
                          "--model", str(bundle), "--max-new-tokens", str(TOKENS), env=env)
        # Play once the model is loaded and the capture is flowing: --save-audio is opened
        # after the model loads and grows with every captured block (a fixed sleep was 4 s).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not (
                cap.exists() and cap.stat().st_size > 64 * 1024):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        player = rig.play(speech)
        player.wait(timeout=120)
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "stopped; finished the last utterance" in err
    assert stat.S_IMODE(cap.stat().st_mode) == 0o600
    mic_finals = final_events(out)
    # Replaying the saved capture gives exactly the same final events.
    replay = listen_cli("--input", str(cap), "--json", "--model", str(bundle),
                        "--max-new-tokens", str(TOKENS))
    rout, rerr = replay.communicate(timeout=600)
    assert replay.returncode == 0, rerr
    assert final_events(rout) == mic_finals
    # Against the original file: the same utterances, timestamps within 0.1 s once the capture's
    # offset (found by cross-correlation) is removed.
    captured = sf.read(cap, dtype="float32")[0]
    original = sf.read(speech, dtype="float32")[0]
    corr = np.correlate(captured[: SR * 8], original[: SR * 4], mode="valid")
    offset = int(np.argmax(np.abs(corr))) / SR
    model = EdgeMoss(bundle, threads=1)
    ref, _ = live_run(model, speech)
    spans = lambda events: sorted({tuple(e) for e in events})  # noqa: E731
    mic_spans = spans((e["utterance_start"] - offset, e["utterance_end"] - offset)
                      for e in mic_finals)
    ref_spans = spans(e.span for e in ref)
    assert len(mic_spans) == len(ref_spans) == 3
    for (a0, a1), (b0, b1) in zip(mic_spans, ref_spans):
        assert abs(a0 - b0) <= 0.1 and abs(a1 - b1) <= 0.1, (mic_spans, ref_spans, offset)
