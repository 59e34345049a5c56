"""Uploaded audio to 16 kHz mono float32, in memory (nothing is written to disk).

The bytes go through libsndfile (soundfile) exactly as `transcribe FILE` reads a file, so the
same upload gives the same samples, and the same answer, as the command line.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile

from ..audio import to_mono_16k
from ..errors import AudioError
from .openai_schema import ApiError


def decode_audio(data: bytes, name: str, param: str = "file") -> np.ndarray:
    if not data:
        raise ApiError(400, f"{name} is empty", param=param, code="invalid_audio")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            samples = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ApiError(400, f"could not read {name} as audio (wav, flac, ogg, mp3...): {reason}",
                       param=param, code="invalid_audio") from None
    try:
        return to_mono_16k(samples, rate, name=name)
    except AudioError as exc:
        raise ApiError(400, str(exc), param=param, code="invalid_audio") from None


def pcm_to_float(data: bytes, width: int = 2, channels: int = 1) -> np.ndarray:
    """Interleaved little-endian signed PCM (8/16/32 bit) -> [frames, channels] float32."""
    kinds = {1: np.int8, 2: np.dtype("<i2"), 4: np.dtype("<i4")}
    if width not in kinds:
        raise AudioError(f"PCM sample width must be 1, 2 or 4 bytes, not {width}")
    usable = len(data) - len(data) % (width * channels)
    ints = np.frombuffer(data[:usable], dtype=kinds[width]).reshape(-1, channels)
    scale = float(2 ** (8 * width - 1))
    return (ints.astype(np.float64) / scale).astype(np.float32)
