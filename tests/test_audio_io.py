"""Audio file and array input: formats, mixing, resampling, block reading, and clear errors."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import soundfile

from edge_runtime.audio import iter_audio_blocks, load_audio, to_mono_16k
from edge_runtime.errors import AudioError

SR = 16_000


def tones(sr: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Two different band-limited signals (left, right) at `sr`."""
    t = np.arange(int(sr * seconds)) / sr
    left = 0.4 * np.sin(2 * np.pi * 440.0 * t)
    right = 0.3 * np.sin(2 * np.pi * 1250.0 * t + 0.5)
    return left, right


def expected_mono_16k(seconds: float) -> np.ndarray:
    left, right = tones(SR, seconds)
    return (left + right) / 2


def write_stereo(path, sr: int, seconds: float, **kwargs) -> None:
    left, right = tones(sr, seconds)
    soundfile.write(path, np.stack([left, right], axis=1).astype(np.float32), sr, **kwargs)


def test_wav_16k_mono_float_is_read_exactly(tmp_path):
    x = np.random.default_rng(0).uniform(-0.9, 0.9, 5000).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", x, SR, subtype="FLOAT")
    y = load_audio(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.ndim == 1
    np.testing.assert_array_equal(y, x)


def test_wav_int16_scaled_to_unit_range(tmp_path):
    pcm = np.array([0, 1, -1, 32767, -32768] * 100, dtype=np.int16)
    soundfile.write(tmp_path / "b.wav", pcm, SR, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(tmp_path / "b.wav"), pcm.astype(np.float32) / 32768.0)


@pytest.mark.parametrize("fmt,ext,subtype,tol", [
    ("WAV", "wav", "FLOAT", 2e-3),
    ("FLAC", "flac", "PCM_24", 2e-3),
    ("OGG", "ogg", "VORBIS", 0.05),
    ("MP3", "mp3", "MPEG_LAYER_III", 0.05),
])
def test_formats_stereo_44k_mixed_and_resampled(tmp_path, fmt, ext, subtype, tol):
    path = tmp_path / f"c.{ext}"
    write_stereo(path, 44_100, 2.0, format=fmt, subtype=subtype)
    y = load_audio(path)
    want = expected_mono_16k(2.0)
    assert y.dtype == np.float32
    # lossy codecs may add a little priming/padding
    assert abs(y.size - want.size) <= (10 if fmt in ("WAV", "FLAC") else 2000)
    if fmt in ("WAV", "FLAC"):
        middle = slice(800, want.size - 800)
        assert np.abs(y[middle] - want[middle]).max() < tol
    else:
        # align the codec's delay, then compare the shapes
        lag = int(np.argmax(np.correlate(y[4000:8000], want[4000:6000], mode="valid")))
        seg = y[4000 + lag: 4000 + lag + 16000]
        corr = np.corrcoef(seg, want[4000:20000])[0, 1]
        assert corr > 0.99


def test_to_mono_16k_int16_and_channels():
    pcm = np.array([[16384, -16384], [32767, 32767], [-32768, 0]] * 200, dtype=np.int16)
    y = to_mono_16k(pcm, SR)
    want = (pcm.astype(np.float64) / 32768.0).mean(axis=1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, want, atol=1e-7)
    assert np.abs(y).max() <= 1.0


def test_to_mono_16k_channels_first_layout():
    left, right = tones(SR, 0.5)
    frames_first = to_mono_16k(np.stack([left, right], axis=1), SR)
    channels_first = to_mono_16k(np.stack([left, right], axis=0), SR)
    np.testing.assert_array_equal(frames_first, channels_first)
    np.testing.assert_allclose(frames_first, (left + right) / 2, atol=1e-7)


def test_to_mono_16k_resamples_to_16k():
    left, right = tones(48_000, 1.0)
    y = to_mono_16k(np.stack([left, right], axis=1), 48_000)
    want = expected_mono_16k(1.0)
    assert y.size == want.size
    assert np.abs(y[500:-500] - want[500:-500]).max() < 2e-3


def test_to_mono_16k_errors():
    with pytest.raises(AudioError, match="empty"):
        to_mono_16k(np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="NaN or infinite"):
        to_mono_16k(np.array([0.0, np.inf] * 200, np.float32), SR)
    with pytest.raises(AudioError, match=r"too short: 100 samples \(6\.2 ms"):
        to_mono_16k(np.zeros(100, np.float32), SR)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found") as err:
        load_audio(tmp_path / "nope.wav")
    assert "nope.wav" in str(err.value) and "\n" not in str(err.value)


def test_not_audio_names_the_file(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError) as err:
        load_audio(bad)
    assert "notes.wav" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AudioError, match="notes.wav"):
        next(iter_audio_blocks(bad))


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


def test_empty_file(tmp_path):
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="empty"):
        list(iter_audio_blocks(tmp_path / "empty.wav"))


def test_nan_samples(tmp_path):
    x = np.zeros(4000, np.float32)
    x[1234] = np.nan
    soundfile.write(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav contains NaN"):
        load_audio(tmp_path / "nan.wav")
    with pytest.raises(AudioError, match="NaN"):
        list(iter_audio_blocks(tmp_path / "nan.wav", block_seconds=0.05))


def test_too_short_says_how_long(tmp_path):
    soundfile.write(tmp_path / "short.wav", np.zeros(100, np.float32), SR)
    with pytest.raises(AudioError, match=r"short\.wav is too short: 100 samples \(6\.2 ms at 16000 Hz\)"):
        load_audio(tmp_path / "short.wav")
    with pytest.raises(AudioError, match="too short"):
        list(iter_audio_blocks(tmp_path / "short.wav"))
    # 300 samples at 44.1 kHz are 6.8 ms: under one frame after resampling too
    soundfile.write(tmp_path / "short44.wav", np.zeros(300, np.float32), 44_100)
    with pytest.raises(AudioError, match=r"300 samples \(6\.8 ms at 44100 Hz\)"):
        load_audio(tmp_path / "short44.wav")
    # exactly one frame is enough
    soundfile.write(tmp_path / "one.wav", np.zeros(160, np.float32), SR)
    assert load_audio(tmp_path / "one.wav").size == 160


@pytest.mark.parametrize("sr,channels", [(44_100, 2), (16_000, 1), (8_000, 3)])
def test_blocks_equal_whole_file(tmp_path, sr, channels):
    rng = np.random.default_rng(sr)
    data = (0.3 * rng.standard_normal((int(3.3 * sr), channels))).astype(np.float32)
    path = tmp_path / f"long_{sr}.flac"
    soundfile.write(path, data, sr, subtype="PCM_24")
    whole = load_audio(path)
    blocks = list(iter_audio_blocks(path, block_seconds=0.5))
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    assert len(blocks) >= 6
    joined = np.concatenate(blocks)
    assert joined.size == whole.size
    np.testing.assert_allclose(joined, whole, rtol=0, atol=1e-6)


def test_blocks_read_the_file_in_pieces(tmp_path):
    left, right = tones(44_100, 3.0)
    path = tmp_path / "pieces.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 44_100)
    requested = []
    real_read = soundfile.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    with mock.patch.object(soundfile.SoundFile, "read", spy):
        blocks = list(iter_audio_blocks(path, block_seconds=1.0))
    assert requested and all(0 < f <= 44_100 for f in requested)
    assert sum(b.size for b in blocks) == 48_000
