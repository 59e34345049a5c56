"""Write the token embedding table of a bundle (see edge_runtime.embeddings for the format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.embeddings import (FLOAT_FILE, INT4_BLOCK, INT4_FILE, INT4_SCALES_FILE, INT8_FILE,
                                     SCALES_FILE, files_for)
from edge_moss_quant.blockwise import quantize_blockwise

# Rows converted per step: keeps the 151936 x 2560 table's temporaries small.
_ROWS = 8192


def quantize_rows_int8(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: (int8 rows, float32 scales) with value = q * scale."""
    rows = np.asarray(rows, dtype=np.float32)
    absmax = np.abs(rows).max(axis=1)
    scales = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(rows / scales[:, None]), -127, 127).astype(np.int8)
    return q, scales


def quantize_rows_int4(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int4 in blocks of 32 along each row, scales by per-block clip search:
    (packed uint8 [n, hidden / 2], float16 scales [n, hidden / 32]); value = (nibble - 8) * scale."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.shape[1] % INT4_BLOCK:
        raise ValueError(f"int4 embeddings need a hidden size divisible by {INT4_BLOCK}")
    q = quantize_blockwise(rows, bits=4, block_size=INT4_BLOCK, symmetric=True, method="mse")
    return q.packed.reshape(rows.shape[0], -1), q.scales.astype(np.float16)


def write_embedding_table(weight: np.ndarray, out_dir: str | Path, kind: str = "fp16") -> list[Path]:
    """Write `weight` [vocab, hidden] as a table of `kind` into out_dir; return the files written.

    `weight` may be a memory-mapped or lazily read array: it is converted in row chunks.
    """
    names = files_for(kind)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, hidden = weight.shape
    if kind in ("fp16", "fp32"):
        dtype = np.float16 if kind == "fp16" else np.float32
        table = np.lib.format.open_memmap(out_dir / FLOAT_FILE, mode="w+", dtype=dtype,
                                          shape=(vocab, hidden))
        for start in range(0, vocab, _ROWS):
            table[start:start + _ROWS] = np.asarray(weight[start:start + _ROWS], dtype=np.float32)
        table.flush()
        del table
    elif kind == "int4":
        table = np.lib.format.open_memmap(out_dir / INT4_FILE, mode="w+", dtype=np.uint8,
                                          shape=(vocab, hidden // 2))
        scales = np.lib.format.open_memmap(out_dir / INT4_SCALES_FILE, mode="w+", dtype=np.float16,
                                           shape=(vocab, hidden // INT4_BLOCK))
        for start in range(0, vocab, _ROWS):
            q, s = quantize_rows_int4(weight[start:start + _ROWS])
            table[start:start + len(q)] = q
            scales[start:start + len(s)] = s
        table.flush()
        scales.flush()
        del table, scales
    else:
        table = np.lib.format.open_memmap(out_dir / INT8_FILE, mode="w+", dtype=np.int8, shape=(vocab, hidden))
        scales = np.empty((vocab,), dtype=np.float32)
        for start in range(0, vocab, _ROWS):
            q, s = quantize_rows_int8(weight[start:start + _ROWS])
            table[start:start + len(q)] = q
            scales[start:start + len(s)] = s
        table.flush()
        del table
        np.save(out_dir / SCALES_FILE, scales)
    return [out_dir / n for n in names]
