"""Block-wise weight-only quantization in numpy, packed the way ORT's MatMulNBits reads it.

A linear weight W [N, K] (torch layout: out_features x in_features) is cut along K into blocks
of `block_size` values; each block gets one scale (and, asymmetric, one zero point). MatMulNBits
computes Y = A @ W.T from:
  - B            uint8 [N, n_blocks, block_size * bits / 8]; for 4 bits two values per byte,
                 the even-indexed value in the low nibble;
  - scales       float [N, n_blocks];
  - zero_points  uint8 [N, ceil(n_blocks * bits / 8)] packed like B (4 bits: low nibble first),
                 omitted for symmetric quantization, where the kernel uses 2^(bits-1).
Dequantized value = (q - zero_point) * scale.

Scale choice: "rtn" takes the block's range as is; "mse" searches a grid of clipping ratios per
block and keeps the one with the smallest squared reconstruction error (often ~10-20 % lower
error than RTN at 4 bits, and never worse because ratio 1.0 is in the grid); "hqq" fits the
zero point by half-quadratic l_p minimisation (quant.hqq; asymmetric only: symmetric blocks,
e.g. an 8-bit lm_head under --method hqq, get the "mse" search).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("rtn", "mse", "hqq")

# Clipping ratios tried by the "mse" search (1.0 = plain RTN, always included).
_MSE_RATIOS = np.array([1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7], dtype=np.float32)

# Rows quantized per step: bounds the temporaries for 151936 x 2560 heads.
_ROW_CHUNK = 4096


@dataclass
class BlockQuantized:
    """A weight quantized for MatMulNBits (see the module docstring for the layouts)."""

    packed: np.ndarray  # uint8 [N, n_blocks, blob]
    scales: np.ndarray  # float32 [N, n_blocks]
    zero_points: np.ndarray | None  # uint8 [N, zp_cols], None when symmetric
    bits: int
    block_size: int
    k: int  # in_features (before padding to whole blocks)

    @property
    def n(self) -> int:
        return int(self.packed.shape[0])

    @property
    def n_blocks(self) -> int:
        return int(self.packed.shape[1])

    @property
    def nbytes(self) -> int:
        zp = 0 if self.zero_points is None else self.zero_points.nbytes
        return self.packed.nbytes + self.scales.nbytes + zp


def _check(bits: int, block_size: int, method: str) -> None:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def _quantize_rows(w: np.ndarray, bits: int, symmetric: bool, method: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """w [R, nb, bs] float32 -> (q uint8 [R, nb, bs], scales [R, nb], zero points uint8 [R, nb])."""
    ratios = _MSE_RATIOS if method == "mse" else _MSE_RATIOS[:1]
    levels = (1 << bits) - 1
    if symmetric:
        qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        absmax = np.abs(w).max(axis=-1, keepdims=True)
        base = absmax / np.float32(qmax)  # RTN: the block's extreme maps to +-qmax
        zp = np.full(w.shape[:2], 1 << (bits - 1), dtype=np.uint8)
    else:
        lo = np.minimum(w.min(axis=-1, keepdims=True), 0.0)
        hi = np.maximum(w.max(axis=-1, keepdims=True), 0.0)
    best_err = None
    best_scale = best_q = best_zp = None
    for ratio in ratios:
        if symmetric:
            scale = base * ratio
            safe = np.where(scale == 0, np.float32(1), scale)
            q = np.clip(np.rint(w / safe), qmin, qmax)
            recon = q * scale
            q_off = q - qmin  # stored unsigned: q + 2^(bits-1)
            zero = zp[..., None].astype(np.float32)
        else:
            l, h = lo * ratio, hi * ratio
            scale = (h - l) / np.float32(levels)
            safe = np.where(scale == 0, np.float32(1), scale)
            zero = np.clip(np.rint(-l / safe), 0, levels)
            q_off = np.clip(np.rint(w / safe) + zero, 0, levels)
            recon = (q_off - zero) * scale
        err = np.square(recon - w).sum(axis=-1)
        if best_err is None:
            best_err, best_scale, best_q = err, scale[..., 0], q_off
            best_zp = zero[..., 0] if not symmetric else zp
            continue
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, scale[..., 0], best_scale)
        best_q = np.where(better[..., None], q_off, best_q)
        if not symmetric:
            best_zp = np.where(better, zero[..., 0], best_zp)
    return best_q.astype(np.uint8), best_scale.astype(np.float32), np.asarray(best_zp).astype(np.uint8)


def pack_values(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned values along the last axis: 4 bits -> two per byte, low nibble first."""
    q = np.asarray(q, dtype=np.uint8)
    if bits == 8:
        return q
    if q.shape[-1] % 2:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (1,), dtype=np.uint8)], axis=-1)
    return (q[..., 0::2] & 0x0F) | ((q[..., 1::2] & 0x0F) << 4)


def unpack_values(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_values: the first `count` values along the last axis."""
    packed = np.asarray(packed, dtype=np.uint8)
    if bits == 8:
        return packed[..., :count]
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), dtype=np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out[..., :count]


def quantize_blockwise(weight: np.ndarray, bits: int = 4, block_size: int = 32, symmetric: bool = True,
                       method: str = "rtn") -> BlockQuantized:
    """Quantize W [N, K] (out x in) block-wise along K for MatMulNBits."""
    _check(bits, block_size, method)
    if method == "hqq" and symmetric:
        method = "mse"  # HQQ fits zero points; a symmetric block has none, so clip-search instead
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ValueError(f"expected a 2-D weight, got shape {weight.shape}")
    n, k = weight.shape
    n_blocks = -(-k // block_size)
    blob = block_size * bits // 8
    packed = np.empty((n, n_blocks, blob), dtype=np.uint8)
    scales = np.empty((n, n_blocks), dtype=np.float32)
    zps = None if symmetric else np.empty((n, -(-n_blocks * bits // 8)), dtype=np.uint8)
    for start in range(0, n, _ROW_CHUNK):
        rows = np.asarray(weight[start:start + _ROW_CHUNK], dtype=np.float32)
        if k % block_size:  # zero-pad K to whole blocks (the kernel reads K values only)
            rows = np.pad(rows, ((0, 0), (0, n_blocks * block_size - k)))
        blocks = rows.reshape(rows.shape[0], n_blocks, block_size)
        if method == "hqq":
            from .hqq import hqq_blocks

            q, s, z = hqq_blocks(blocks, bits)
        else:
            q, s, z = _quantize_rows(blocks, bits, symmetric, method)
        end = start + rows.shape[0]
        packed[start:end] = pack_values(q, bits)
        scales[start:end] = s
        if zps is not None:
            zps[start:end] = pack_values(z, bits)
    return BlockQuantized(packed, scales, zps, bits, block_size, k)


def dequantize_blockwise(q: BlockQuantized) -> np.ndarray:
    """The float32 weight [N, K] that the quantized form stands for."""
    values = unpack_values(q.packed, q.bits, q.block_size).astype(np.float32)
    if q.zero_points is None:
        zero = np.float32(1 << (q.bits - 1))
    else:
        zero = unpack_values(q.zero_points, q.bits, q.n_blocks).astype(np.float32)[..., None]
    w = (values - zero) * q.scales[..., None]
    return w.reshape(q.n, -1)[:, :q.k]
