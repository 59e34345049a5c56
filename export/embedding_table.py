"""Write the token embedding table of a bundle (see edge_runtime.embeddings for the format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.embeddings import FLOAT_FILE, INT8_FILE, SCALES_FILE, files_for

# Rows converted per step: keeps the 151936 x 2560 table's temporaries small.
_ROWS = 8192


def quantize_rows_int8(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: (int8 rows, float32 scales) with value = q * scale."""
    rows = np.asarray(rows, dtype=np.float32)
    absmax = np.abs(rows).max(axis=1)
    scales = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(rows / scales[:, None]), -127, 127).astype(np.int8)
    return q, scales


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
