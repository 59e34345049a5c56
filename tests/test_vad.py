"""Silero VAD on ONNX Runtime: against the official silero-vad wrapper, and on synthetic speech.

The official package (`pip install silero-vad`, MIT; needs torch, a build/test dependency) is the
reference: its OnnxWrapper for per-chunk probabilities and its get_speech_timestamps for regions.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.vad import (
    CHUNK_SAMPLES, MODEL_PATH, SileroVAD, regions_from_probs, speech_probs, speech_regions,
)

from speech_fixture import make_speech_wav

import torch  # build/test dependency, present wherever tests run
torch.set_num_threads(1)
import silero_vad  # the official package (test dependency): the reference


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    path = make_speech_wav(tmp_path_factory.mktemp("vad") / "speech.wav")
    samples, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    return samples


@pytest.fixture(scope="module")
def official_model():
    return silero_vad.load_silero_vad(onnx=True)


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD(threads=1)


def official_probs(model, samples: np.ndarray) -> np.ndarray:
    """Per-chunk probabilities the official wrapper gives (last chunk zero-padded, as it does)."""
    model.reset_states()
    padded = np.zeros(-(-len(samples) // CHUNK_SAMPLES) * CHUNK_SAMPLES, dtype=np.float32)
    padded[: len(samples)] = samples
    out = [
        model(torch.from_numpy(padded[i:i + CHUNK_SAMPLES]), 16000).item()
        for i in range(0, len(padded), CHUNK_SAMPLES)
    ]
    return np.array(out, dtype=np.float32)


def test_shipped_model_is_the_official_one():
    import importlib.resources

    official = importlib.resources.files("silero_vad.data").joinpath("silero_vad.onnx").read_bytes()
    assert MODEL_PATH.read_bytes() == official
    license_text = (MODEL_PATH.parent / "SILERO_VAD_LICENSE").read_text()
    assert "MIT License" in license_text and "Silero Team" in license_text


def test_probs_equal_official_wrapper(speech, official_model, vad):
    noise = np.random.default_rng(1).normal(0, 0.05, 16000 * 2).astype(np.float32)
    audio = np.concatenate([speech, noise, speech[:5000]])  # ends with a partial chunk
    expected = official_probs(official_model, audio)
    ours = speech_probs(audio, vad)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    assert ours.max() > 0.9 and ours.min() < 0.1  # the audio really has speech and non-speech


def test_streaming_in_odd_blocks_matches_whole_clip(speech, vad):
    vad.reset()
    whole = np.concatenate([vad.probs(speech), vad.flush()])
    vad.reset()
    rng = np.random.default_rng(2)
    parts, pos = [], 0
    while pos < len(speech):
        size = int(rng.integers(1, 3000))
        parts.append(vad.probs(speech[pos:pos + size]))
        assert vad.pending_samples < CHUNK_SAMPLES
        pos += size
    parts.append(vad.flush())
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # prob() chunk by chunk is the same stream
    vad.reset()
    starts = range(0, len(speech) - CHUNK_SAMPLES + 1, CHUNK_SAMPLES)
    one_by_one = [vad.prob(speech[i:i + CHUNK_SAMPLES]) for i in starts]
    np.testing.assert_array_equal(np.array(one_by_one, dtype=np.float32), whole[: len(one_by_one)])


def test_reset_forgets_state(speech, vad):
    vad.reset()
    first = vad.probs(speech[:16000])
    vad.probs(speech)  # state now depends on more audio
    vad.reset()
    np.testing.assert_array_equal(vad.probs(speech[:16000]), first)


def test_prob_rejects_wrong_chunk_size(vad):
    with pytest.raises(ValueError):
        vad.prob(np.zeros(480, dtype=np.float32))


def test_speech_regions_equal_official_timestamps(speech, official_model, vad):
    audio = np.concatenate([np.zeros(3000, dtype=np.float32), speech, speech[: 16000 + 100]])
    expected = silero_vad.get_speech_timestamps(
        torch.from_numpy(audio), official_model, threshold=0.5, min_speech_duration_ms=250,
        min_silence_duration_ms=100, speech_pad_ms=30, neg_threshold=0.35,
    )
    ours = speech_regions(audio, vad=vad)
    assert len(expected) >= 3
    assert [(round(a * 16000), round(b * 16000)) for a, b in ours] == [
        (seg["start"], seg["end"]) for seg in expected
    ]


@settings(max_examples=150, deadline=None)
@given(
    probs=st.lists(st.sampled_from([0.0, 0.2, 0.34, 0.35, 0.4, 0.5, 0.7, 1.0]), max_size=120),
    min_speech_ms=st.sampled_from([0, 100, 250]),
    min_silence_ms=st.sampled_from([0, 50, 100, 300]),
    pad_ms=st.sampled_from([0, 30, 100]),
    tail=st.integers(0, CHUNK_SAMPLES - 1),
)
def test_regions_from_probs_equal_official(probs, min_speech_ms, min_silence_ms, pad_ms, tail):
    n_samples = max(0, len(probs) * CHUNK_SAMPLES - tail)
    expected = silero_vad.get_speech_timestamps_from_probs(
        probs, threshold=0.5, neg_threshold=0.35, min_speech_duration_ms=min_speech_ms,
        min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms, audio_length_samples=n_samples,
    )
    ours = regions_from_probs(
        probs, n_samples, threshold=0.5, neg_threshold=0.35, min_speech_s=min_speech_ms / 1000,
        min_silence_s=min_silence_ms / 1000, pad_s=pad_ms / 1000,
    )
    assert ours == [(seg["start"], seg["end"]) for seg in expected]


def _quiet_stretches(samples: np.ndarray, min_s: float) -> list[tuple[float, float]]:
    """Stretches of at least min_s where the waveform stays below -60 dBFS (espeak's pauses)."""
    quiet = np.abs(samples) < 1e-3
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    return [(a / 16000, b / 16000) for a, b in zip(edges[::2], edges[1::2]) if (b - a) / 16000 >= min_s]


def test_speech_regions_cover_words_and_skip_pauses(speech, vad):
    regions = speech_regions(speech, vad=vad)
    pauses = _quiet_stretches(speech, 0.45)  # the 0.5 s lead and tail, the two SSML breaks
    assert len(pauses) >= 4
    assert len(regions) >= 3
    for start, end in regions:
        for quiet_start, quiet_end in pauses:
            # the VAD's probability falls a few chunks after the voice stops
            outside = end <= quiet_start + 0.25 or start >= quiet_end - 0.15
            assert outside, (start, end, quiet_start, quiet_end)
    # every loud 32 ms frame lies in a region
    frames = speech[: len(speech) // CHUNK_SAMPLES * CHUNK_SAMPLES].reshape(-1, CHUNK_SAMPLES)
    loud = np.flatnonzero(np.sqrt((frames ** 2).mean(axis=1)) > 0.05)
    assert len(loud) > 50
    covered = [any(s <= (i + 0.5) * CHUNK_SAMPLES / 16000 <= e for s, e in regions) for i in loud]
    assert np.mean(covered) >= 0.97


@pytest.mark.parametrize("kind", ["zeros", "white", "hum"])
def test_silence_and_noise_have_no_speech(kind, vad):
    rng = np.random.default_rng(3)
    t = np.arange(16000 * 3) / 16000
    audio = {
        "zeros": np.zeros_like(t),
        "white": rng.normal(0, 0.05, t.shape),
        "hum": 0.2 * np.sin(2 * np.pi * 50 * t) + 0.1 * np.sin(2 * np.pi * 100 * t),
    }[kind].astype(np.float32)
    assert speech_regions(audio, vad=vad) == []


def test_runtime_modules_do_not_import_torch():
    code = (
        "import sys; import edge_runtime.vad, edge_runtime.endpointing, edge_runtime.capture, "
        "edge_runtime.commands.devices; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
