"""The token embedding table of a bundle, memory-mapped and gathered row by row in numpy.

Kinds on disk (numpy .npy files in the bundle folder):
  - "fp16" / "fp32": embed_tokens.npy, float16 / float32 [vocab, hidden];
  - "int8": embed_tokens.int8.npy int8 [vocab, hidden] + embed_tokens.scales.npy [vocab]
    (one symmetric scale per row: value = int8 * scale);
  - "int4": embed_tokens.int4.npy uint8 [vocab, hidden / 2] (two values a byte, the even column
    in the low nibble) + embed_tokens.int4_scales.npy float16 [vocab, hidden / 32] (one symmetric
    scale per block of 32 values of a row: value = (nibble - 8) * scale). Half the size of int8,
    for bundles that must be small (a block of 32 keeps the error near int8-per-row's ~10x).
Only the rows a prompt uses are ever read from disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import BundleError

KINDS = ("fp32", "fp16", "int8", "int4")
FLOAT_FILE = "embed_tokens.npy"
INT8_FILE = "embed_tokens.int8.npy"
SCALES_FILE = "embed_tokens.scales.npy"
INT4_FILE = "embed_tokens.int4.npy"
INT4_SCALES_FILE = "embed_tokens.int4_scales.npy"
INT4_BLOCK = 32


def files_for(kind: str) -> tuple[str, ...]:
    """The file names a table of `kind` consists of."""
    if kind in ("fp16", "fp32"):
        return (FLOAT_FILE,)
    if kind == "int8":
        return (INT8_FILE, SCALES_FILE)
    if kind == "int4":
        return (INT4_FILE, INT4_SCALES_FILE)
    raise ValueError(f"unknown embedding kind {kind!r}; choose one of {KINDS}")


def detect_kind(directory: str | Path) -> str:
    """The kind of the table stored in `directory` (the smallest kind when several exist)."""
    directory = Path(directory)
    if all((directory / f).is_file() for f in files_for("int4")):
        return "int4"
    if all((directory / f).is_file() for f in files_for("int8")):
        return "int8"
    if (directory / FLOAT_FILE).is_file():
        return "fp32" if _load(directory / FLOAT_FILE).dtype == np.float32 else "fp16"
    raise BundleError(f"{directory}: no embedding table ({FLOAT_FILE} or {INT8_FILE} + {SCALES_FILE})")


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"embedding file {path} is unreadable or truncated ({exc})") from None


class EmbeddingTable:
    """Token id -> embedding row lookups over a memory-mapped table."""

    def __init__(self, rows: np.ndarray, scales: np.ndarray | None = None):
        if rows.dtype not in (np.float16, np.float32, np.int8, np.uint8):
            raise BundleError(f"embedding table has unsupported dtype {rows.dtype}")
        quantized = rows.dtype in (np.int8, np.uint8)
        if quantized != (scales is not None):
            raise BundleError("a quantized embedding table needs its scales (and only it has them)")
        if rows.ndim != 2:
            raise BundleError(f"embedding table must be 2-D, got shape {rows.shape}")
        if rows.dtype == np.uint8:  # int4: packed nibbles, one scale per block of 32 values
            expected = (rows.shape[0], rows.shape[1] * 2 // INT4_BLOCK)
        else:
            expected = (rows.shape[0],)
        if scales is not None and scales.shape != expected:
            raise BundleError(f"embedding scales have shape {scales.shape}, expected {expected}")
        self._rows = rows
        self._scales = scales

    @classmethod
    def load(cls, directory: str | Path, kind: str | None = None) -> "EmbeddingTable":
        """Open the table in `directory`; kind None = detect from the files present."""
        directory = Path(directory)
        kind = kind or detect_kind(directory)
        names = files_for(kind)
        missing = [n for n in names if not (directory / n).is_file()]
        if missing:
            raise BundleError(f"{directory}: embedding file {missing[0]} is missing")
        if kind in ("fp16", "fp32"):
            return cls(_load(directory / FLOAT_FILE))
        return cls(*(_load(directory / n) for n in names))

    @property
    def kind(self) -> str:
        if self._rows.dtype == np.uint8:
            return "int4"
        if self._scales is not None:
            return "int8"
        return "fp32" if self._rows.dtype == np.float32 else "fp16"

    @property
    def vocab_size(self) -> int:
        return int(self._rows.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self._rows.shape[1]) * (2 if self._rows.dtype == np.uint8 else 1)

    def lookup(self, ids) -> np.ndarray:
        """float32 [n, hidden] embeddings of the token ids."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = int(ids[(ids < 0) | (ids >= self.vocab_size)][0])
            raise ValueError(f"token id {bad} outside the vocabulary of {self.vocab_size}")
        if self._rows.dtype == np.uint8:
            return _unpack_int4(np.asarray(self._rows[ids]), np.asarray(self._scales[ids]))
        out = np.asarray(self._rows[ids], dtype=np.float32)
        if self._scales is not None:
            out *= np.asarray(self._scales[ids], dtype=np.float32)[:, None]
        return out


def _unpack_int4(packed: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 [n, hidden] from packed nibbles [n, hidden / 2] and block scales [n, hidden / 32]."""
    values = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=np.float32)
    values[:, 0::2] = packed & 0x0F
    values[:, 1::2] = packed >> 4
    values -= 8.0
    blocks = values.reshape(packed.shape[0], -1, INT4_BLOCK)
    blocks *= scales.astype(np.float32)[:, :, None]
    return values
