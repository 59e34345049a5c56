"""Fuzzing the audio reader: whatever bytes a file holds, load_audio and iter_audio_blocks either
return audio or raise the project's AudioError, never anything else (no traceback for users)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.audio import iter_audio_blocks, load_audio
from edge_runtime.errors import AudioError


def _valid_wav(subtype: str = "PCM_16", rate: int = 16000, channels: int = 1, frames: int = 800) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    data = (0.1 * rng.standard_normal((frames, channels))).astype(np.float32)
    sf.write(buf, data, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


VALID = {subtype: _valid_wav(subtype) for subtype in ("PCM_16", "PCM_24", "FLOAT", "ULAW")}
VALID["stereo8k"] = _valid_wav("PCM_16", rate=8000, channels=2)

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _read_both(path) -> None:
    """Both readers: each returns finite float32 audio or raises AudioError."""
    for read in (lambda: [load_audio(path)], lambda: list(iter_audio_blocks(path, block_seconds=0.01))):
        try:
            blocks = read()
        except AudioError as exc:
            assert str(exc) and "\n" not in str(exc)
            continue
        for block in blocks:
            assert block.dtype == np.float32 and np.all(np.isfinite(block))


@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(tmp_path, data):
    path = tmp_path / "fuzz.wav"
    path.write_bytes(data)
    _read_both(path)


@FUZZ
@given(base=st.sampled_from(sorted(VALID)),
       edits=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 2000)))
def test_mutated_wav_headers(tmp_path, base, edits, cut):
    """Flip bytes of the RIFF/fmt/data headers (the first 64 bytes), optionally truncate."""
    data = bytearray(VALID[base])
    for offset, value in edits:
        data[offset] = value
    if cut is not None:
        data = data[:cut]
    path = tmp_path / "mutated.wav"
    path.write_bytes(bytes(data))
    _read_both(path)


@FUZZ
@given(field=st.sampled_from(["riff_size", "channels", "rate", "byte_rate", "align", "bits", "data_size"]),
       value=st.sampled_from([0, 1, 2, 3, 7, 255, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
def test_header_fields_set_to_extremes(tmp_path, field, value):
    """Each fmt/data field of a canonical 44-byte header set to 0, 1, or its maximum."""
    data = bytearray(VALID["PCM_16"])
    offsets = {"riff_size": (4, "<I"), "channels": (22, "<H"), "rate": (24, "<I"),
               "byte_rate": (28, "<I"), "align": (32, "<H"), "bits": (34, "<H"),
               "data_size": (40, "<I")}
    offset, fmt = offsets[field]
    assert data[36:40] == b"data"  # the canonical layout this test edits
    struct.pack_into(fmt, data, offset, value & (0xFFFF if fmt == "<H" else 0xFFFFFFFF))
    path = tmp_path / "extreme.wav"
    path.write_bytes(bytes(data))
    _read_both(path)


@pytest.mark.parametrize("subtype", sorted(VALID))
def test_the_unmutated_files_read(tmp_path, subtype):
    path = tmp_path / "ok.wav"
    path.write_bytes(VALID[subtype])
    assert load_audio(path).size > 0
