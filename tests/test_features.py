"""log_mel and StreamingLogMel against transformers' WhisperFeatureExtractor (numpy path)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.errors import AudioError
from edge_runtime.features import (
    StreamingLogMel,
    log_mel,
    mel_filters,
    normalize,
    raw_log_mel,
)

SR = 16_000


@pytest.fixture(scope="module")
def whisper_fe():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import WhisperFeatureExtractor

        return WhisperFeatureExtractor(feature_size=128)


def reference(fe, samples: np.ndarray) -> np.ndarray:
    return fe._np_extract_fbank_features(samples[None].astype(np.float32), device="cpu")[0]


def synthetic_clip(seconds: float, seed: int = 0) -> np.ndarray:
    """Chirp + noise bursts + a stretch of digital silence (exercises the max - 8 floor)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t)
    x += 0.05 * rng.standard_normal(n) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    x[: n // 10] = 0.0
    return x.astype(np.float32)


def test_mel_filters_match_transformers():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=128, min_frequency=0.0,
                          max_frequency=8000.0, sampling_rate=SR, norm="slaney",
                          mel_scale="slaney")
    assert mel_filters().shape == (128, 201)
    np.testing.assert_allclose(mel_filters(), ref.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_samples", [160, 161, 199, 200, 201, 399, 400, 401, 1234, 16_000, 48_017])
def test_log_mel_matches_reference_synthetic(whisper_fe, n_samples):
    x = synthetic_clip(4.0, seed=n_samples)[-n_samples:]
    x = x + np.float32(1e-3) * np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32)
    ours = log_mel(x)
    ref = reference(whisper_fe, x)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (128, n_samples // 160)
    assert np.abs(ours - ref).max() <= 1e-5


def test_log_mel_matches_reference_30s_with_silence(whisper_fe):
    x = synthetic_clip(30.0)
    ref = reference(whisper_fe, x)
    ours = log_mel(x)
    assert ours.shape == (128, 3000)
    assert np.abs(ours - ref).max() <= 1e-5
    # the silent start sits exactly on the floor
    assert np.allclose(ours[:, :100], ours.max() - 2.0)


def test_log_mel_matches_reference_speech(whisper_fe, tmp_path):
    from speech_fixture import make_speech_wav

    wav = make_speech_wav(tmp_path / "speech.wav")
    pcm, sr = soundfile.read(wav, dtype="float32")
    assert sr == SR
    ours = log_mel(pcm)
    ref = reference(whisper_fe, pcm)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-5


def test_log_mel_quiet_and_loud(whisper_fe):
    rng = np.random.default_rng(3)
    for scale in (1e-6, 1e-3, 1.0, 30.0):
        x = (scale * rng.standard_normal(8000)).astype(np.float32)
        assert np.abs(log_mel(x) - reference(whisper_fe, x)).max() <= 1e-5


def test_log_mel_all_zero_clip(whisper_fe):
    x = np.zeros(3200, dtype=np.float32)
    np.testing.assert_array_equal(log_mel(x), reference(whisper_fe, x))


def test_log_mel_too_short_is_audio_error():
    with pytest.raises(AudioError, match="159 samples"):
        log_mel(np.zeros(159, dtype=np.float32))


def test_normalize_is_floor_and_scale():
    raw = np.array([[-12.0, -3.0, 1.5]], dtype=np.float32)
    np.testing.assert_array_equal(normalize(raw, 1.5), (np.maximum(raw, 1.5 - 8.0) + 4.0) / 4.0)


def _stream(x: np.ndarray, sizes: list[int], floor: str) -> tuple[list[np.ndarray], StreamingLogMel]:
    s = StreamingLogMel(floor=floor)
    outs = []
    i = 0
    k = 0
    while i < x.size:
        size = sizes[k % len(sizes)]
        outs.append(s.push(x[i:i + size]))
        i += size
        k += 1
    outs.append(s.finish())
    return outs, s


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_samples=st.integers(160, 9000),
       sizes=st.lists(st.integers(1, 12_000), min_size=1, max_size=8),
       seed=st.integers(0, 3))
def test_streaming_equals_offline_with_clip_max(n_samples, sizes, seed):
    x = synthetic_clip(0.6, seed=seed)
    x = np.tile(x, n_samples // x.size + 1)[:n_samples] + np.float32(1e-4)
    outs, s = _stream(x, sizes, floor="none")
    raw = np.concatenate(outs, axis=1)
    assert raw.shape == (128, n_samples // 160)
    assert s.frames_emitted == n_samples // 160
    np.testing.assert_allclose(raw, raw_log_mel(x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(normalize(raw, raw.max()), log_mel(x), rtol=0, atol=1e-6)


def test_streaming_one_sample_blocks():
    x = synthetic_clip(0.2, seed=5)[:1000] + np.float32(1e-3)
    outs, _ = _stream(x, [1], floor="none")
    raw = np.concatenate(outs, axis=1)
    np.testing.assert_allclose(normalize(raw, raw.max()), log_mel(x), rtol=0, atol=1e-6)
    # a frame is released only once its whole window is in: 200 samples past its centre
    sizes = [o.shape[1] for o in outs[:-1]]
    first = sizes.index(1)
    assert first + 1 == 201  # frame 0 needs samples 0..200 (its reflected start uses sample 200)
    assert sizes[360 - 1] == 1 and sum(sizes[:360]) == 2


def test_streaming_frames_wait_for_lookahead():
    s = StreamingLogMel(floor="none")
    assert s.push(np.ones(200, np.float32)).shape == (128, 0)
    assert s.push(np.ones(1, np.float32)).shape == (128, 1)
    assert s.push(np.ones(158, np.float32)).shape == (128, 0)  # 359 samples: frame 1 needs 360
    assert s.push(np.ones(1, np.float32)).shape == (128, 1)


def test_streaming_running_floor_differs_only_below_80_db():
    rng = np.random.default_rng(7)
    quiet = 1e-6 * rng.standard_normal(16_000)
    loud = 0.5 * rng.standard_normal(16_000)
    x = np.concatenate([quiet, loud]).astype(np.float32)
    outs, s = _stream(x, [1600], floor="running")
    streamed = np.concatenate(outs, axis=1)
    offline = log_mel(x)
    assert streamed.shape == offline.shape
    # after the loud part starts, the running maximum is the clip maximum (up to growth)
    assert np.abs(streamed[:, -50:] - offline[:, -50:]).max() <= 1e-6
    # the quiet start was floored with a lower maximum, so it is not clipped as far
    assert (streamed[:, :50] < offline[:, :50] - 1e-3).any()
    differs = np.abs(streamed - offline) > 1e-6
    raw = raw_log_mel(x)
    assert (raw[differs] < raw.max() - 8.0 + 1e-6).all()
    assert s.running_max == pytest.approx(float(raw.max()), abs=1e-6)


def test_streaming_running_floor_equals_offline_when_loudest_first():
    rng = np.random.default_rng(8)
    x = np.concatenate([0.5 * rng.standard_normal(3200), 1e-7 * rng.standard_normal(8000)])
    x = x.astype(np.float32)
    outs, _ = _stream(x, [777], floor="running")
    np.testing.assert_allclose(np.concatenate(outs, axis=1), log_mel(x), rtol=0, atol=1e-6)


def test_streaming_block_larger_than_clip_and_short_clips():
    for n in (160, 200, 350, 1000):
        x = synthetic_clip(0.1, seed=n)[:n] + np.float32(1e-3)
        outs, _ = _stream(x, [50_000], floor="none")
        raw = np.concatenate(outs, axis=1)
        np.testing.assert_allclose(normalize(raw, raw.max()), log_mel(x), rtol=0, atol=1e-6)


def test_streaming_under_one_frame_gives_nothing():
    s = StreamingLogMel()
    assert s.push(np.zeros(100, np.float32)).shape == (128, 0)
    assert s.finish().shape == (128, 0)
    with pytest.raises(RuntimeError):
        s.push(np.zeros(10, np.float32))


def test_float64_input_is_rounded_to_float32_like_the_upstream_processor(whisper_fe):
    x = np.random.default_rng(11).standard_normal(4000) * 0.1
    ours = log_mel(x)
    np.testing.assert_array_equal(ours, log_mel(x.astype(np.float32)))
    assert np.abs(ours - reference(whisper_fe, x.astype(np.float32))).max() <= 1e-5


def test_streaming_running_floor_does_not_depend_on_block_sizes():
    # A quiet start then loud speech: the running floor matters here, and a live session must get
    # exactly the frames that pushing the same audio in one block gives.
    rng = np.random.default_rng(7)
    x = np.concatenate([1e-7 * rng.standard_normal(8000), 0.3 * rng.standard_normal(24000)])
    whole = StreamingLogMel(floor="running")
    ref = np.concatenate([whole.push(x), whole.finish()], axis=1)
    for sizes in ([1], [480], [160, 7, 3000], [100000]):
        outs, _ = _stream(x, sizes, floor="running")
        got = np.concatenate(outs, axis=1)
        np.testing.assert_array_equal(got, ref)
    # and it really is a running floor: the quiet start is not floored at the clip maximum
    assert not np.allclose(ref, log_mel(x.astype(np.float32)))
