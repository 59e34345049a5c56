"""Audio input: files and arrays to 16 kHz mono float32, whole or in blocks.

Files are read with soundfile (WAV, FLAC, OGG, MP3, ... whatever libsndfile reads), channels are
averaged, and other sample rates are resampled with soxr. Problems become one-line AudioErrors.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import soxr

from .errors import AudioError
from .inputs import STDIN, display_name
from .model_facts import HOP_LENGTH, SAMPLE_RATE


RESAMPLE_QUALITY = "HQ"


def _describe(name: str | None) -> str:
    return f"audio file {name}" if name else "audio"


def _length_text(samples: int, sample_rate: int) -> str:
    return f"{samples} samples ({1000.0 * samples / sample_rate:.1f} ms at {sample_rate} Hz)"


def _as_float(samples: np.ndarray) -> np.ndarray:
    """float32 copy-if-needed; integer PCM is scaled to [-1, 1)."""
    samples = np.asarray(samples)
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype.kind == "i":
        scale = float(2 ** (8 * samples.dtype.itemsize - 1))
        return (samples.astype(np.float64) / scale).astype(np.float32)
    if samples.dtype.kind == "u":
        half = float(2 ** (8 * samples.dtype.itemsize - 1))
        return ((samples.astype(np.float64) - half) / half).astype(np.float32)
    raise AudioError(f"audio samples must be numbers, got dtype {samples.dtype}")


def _mix_to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels of [frames, channels] samples; 1-D input is already mono."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioError(f"audio must be 1-D or [frames, channels], got shape {samples.shape}")
    if samples.shape[1] == 1:
        return samples[:, 0]
    return samples.mean(axis=1, dtype=np.float32)


def _check_finite(samples: np.ndarray, name: str | None) -> None:
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{_describe(name)} contains NaN or infinite samples")


def _check_length(samples: int, name: str | None, original: int, original_rate: int) -> None:
    if original == 0 or samples == 0:
        raise AudioError(f"{_describe(name)} is empty (no samples)")
    if samples < HOP_LENGTH:
        raise AudioError(
            f"{_describe(name)} is too short: {_length_text(original, original_rate)}; "
            f"need at least 10 ms ({HOP_LENGTH} samples at {SAMPLE_RATE} Hz)"
        )


def _resample(mono: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    if sample_rate == target_rate:
        return np.ascontiguousarray(mono, dtype=np.float32)
    out = soxr.resample(mono, sample_rate, target_rate, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(out, dtype=np.float32)


def to_mono_16k(samples: np.ndarray, sr: int, *, name: str | None = None,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Convert an array at `sr` Hz to mono float32 at `sample_rate` (16 kHz).

    Accepts [frames], [frames, channels] (soundfile's layout) or [channels, frames] (taken when
    there are more columns than rows: a clip has more frames than channels); float samples, or
    integer PCM scaled to [-1, 1]. Raises AudioError for empty, non-finite or too short audio
    (under one 10 ms mel frame).
    """
    if sr <= 0:
        raise AudioError(f"{_describe(name)} has an invalid sample rate {sr}")
    samples = np.asarray(samples)
    if samples.size == 0:  # before the layout guess: a (0, channels) array is no [channels, frames]
        raise AudioError(f"{_describe(name)} is empty (no samples)")
    if samples.ndim == 2 and samples.shape[1] > samples.shape[0]:
        samples = samples.T
    mono = _mix_to_mono(_as_float(samples))
    _check_finite(mono, name)
    out = _resample(mono, int(sr), sample_rate) if mono.size else mono
    _check_length(out.size, name, mono.size, int(sr))
    return out


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _open(path: str | Path) -> soundfile.SoundFile:
    """Open a file, `-` (standard input) or a FIFO for reading.

    The file is opened here, by descriptor, so any name the OS accepts works (non-UTF-8 bytes
    included) and an unreadable file says "permission denied" rather than "corrupt". Streams that
    cannot seek (stdin, pipes, FIFOs) are read whole into memory first: libsndfile seeks in them.
    """
    name = display_name(path)
    try:
        if str(path) == STDIN:
            if sys.stdin is None:
                raise ValueError("there is no standard input")
            fd = os.dup(sys.stdin.fileno())
        else:
            fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise AudioError(f"audio file not found: {name}") from None
    except PermissionError:
        raise AudioError(f"cannot read {name}: permission denied") from None
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL, or no stdin at all
        why = getattr(exc, "strerror", None) or str(exc)
        raise AudioError(f"cannot open {name}: {why}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise AudioError(f"audio path is a directory, not a file: {name}")
        if stat.S_ISREG(mode):
            source, fd = fd, -1  # the SoundFile owns it now
            return soundfile.SoundFile(source, closefd=True)
        try:
            data = _read_all(fd)
        except OSError as exc:
            raise AudioError(f"cannot read {name}: {exc.strerror or exc}") from None
        if not data:
            raise AudioError(f"{_describe(name)} is empty (no data)")
        return soundfile.SoundFile(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = _reason(exc)
        raise AudioError(f"cannot read {name} as audio (unsupported or corrupt file: {reason})") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _reason(exc: Exception) -> str:
    # libsndfile's own words, without soundfile's "Error opening <fd>: " prefix
    text = getattr(exc, "error_string", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _read_error(path: str | Path, exc: Exception) -> AudioError:
    reason = _reason(exc)
    return AudioError(f"cannot decode audio file {display_name(path)}: {reason}")


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 at `sample_rate` (16 kHz by default)."""
    with _open(path) as f:
        try:
            data = f.read(dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise _read_error(path, exc) from None
        rate = f.samplerate
    return to_mono_16k(data, rate, name=display_name(path), sample_rate=sample_rate)


def iter_audio_blocks(path: str | Path, block_seconds: float = 30.0,
                      sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks at `sample_rate`, reading the file `block_seconds` at a time.

    The whole file is never held in memory. Blocks are about `block_seconds` long (the resampler
    delays a little, and the last block holds the rest); their concatenation equals
    `load_audio(path)` up to the resampler's streaming/one-shot rounding. Errors (missing,
    unreadable, non-finite, empty, too short) are raised as AudioError during iteration.
    """
    if block_seconds <= 0:
        raise ValueError("block_seconds must be positive")
    name = display_name(path)
    with _open(path) as f:
        rate = f.samplerate
        frames_per_block = max(1, int(round(block_seconds * rate)))
        stream = None
        if rate != sample_rate:
            stream = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32",
                                         quality=RESAMPLE_QUALITY)
        read_in = 0
        emitted = 0
        held: list[np.ndarray] = []  # output kept back until one mel frame is certain
        while True:
            try:
                data = f.read(frames_per_block, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                raise _read_error(path, exc) from None
            last = data.shape[0] < frames_per_block
            mono = _mix_to_mono(data)
            _check_finite(mono, name)
            read_in += mono.size
            out = mono if stream is None else stream.resample_chunk(mono, last=last)
            out = np.ascontiguousarray(out, dtype=np.float32)
            if emitted == 0 and not last:
                held.append(out)
                if sum(b.size for b in held) < HOP_LENGTH:
                    continue
                out = np.concatenate(held)
                held = []
            elif held:
                out = np.concatenate(held + [out])
                held = []
            if emitted == 0:
                _check_length(out.size, name, read_in, rate)
            if out.size:
                emitted += out.size
                yield out
            if last:
                return
