"""Half-quadratic quantization (HQQ, Badri & Shaji 2023) of weight blocks, in numpy, no calibration.

HQQ fits the zero point of each block by minimising an l_p norm (p < 1) of the reconstruction
error with a half-quadratic splitting: alternately (1) quantize with the current zero point,
(2) shrink the error with the l_p proximal operator, which keeps only the large (outlier) part,
and (3) set the zero point to the mean that explains the rest. The sparse-promoting norm lets a
few outliers stay badly reconstructed in exchange for a better fit of the bulk of the block.

MatMulNBits also accepts float zero points, but the fast CPU path (accuracy level 4) wants packed
integer ones, so here the zero point is rounded to an integer level at every step, and at the
end the scale is refitted by least squares for the chosen integer codes (which never increases
the squared error of the block for those codes).
"""

from __future__ import annotations

import numpy as np

# The HQQ paper's / reference implementation's defaults.
LP_NORM = 0.7
BETA = 10.0
KAPPA = 1.01
ITERS = 20


def _shrink_lp(x: np.ndarray, beta: float, p: float) -> np.ndarray:
    """Proximal operator of the l_p 'norm' (p < 1): a soft threshold that spares large values."""
    mag = np.abs(x)
    return np.sign(x) * np.maximum(mag - (1.0 / beta) * np.power(mag + 1e-8, p - 1.0), 0.0)


def hqq_blocks(w: np.ndarray, bits: int, iters: int = ITERS, lp_norm: float = LP_NORM,
               beta: float = BETA, kappa: float = KAPPA, refit_scale: bool = True
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric HQQ of w [R, nb, bs] float32 -> (codes uint8 [R, nb, bs], scales [R, nb],
    integer zero points uint8 [R, nb]); dequantized = (code - zero) * scale."""
    levels = float((1 << bits) - 1)
    w = np.asarray(w, dtype=np.float32)
    lo = np.minimum(w.min(axis=-1, keepdims=True), 0.0)
    hi = np.maximum(w.max(axis=-1, keepdims=True), 0.0)
    span = hi - lo
    scale = np.where(span > 0, span / levels, np.float32(1.0)).astype(np.float32)  # RTN start
    zero = np.clip(np.rint(-lo / scale), 0, levels)
    best_err = np.full(w.shape[:-1] + (1,), np.inf, dtype=np.float32)
    best_zero = zero.copy()
    for _ in range(iters):
        q = np.clip(np.rint(w / scale + zero), 0, levels)
        recon = (q - zero) * scale
        err = np.abs(w - recon).mean(axis=-1, keepdims=True)
        improved = err < best_err  # per block: keep the zero point with the lowest l1 error
        best_err = np.where(improved, err, best_err)
        best_zero = np.where(improved, zero, best_zero)
        outliers = _shrink_lp(w - recon, beta, lp_norm)
        zero = np.clip(np.rint(np.mean(q - (w - outliers) / scale, axis=-1, keepdims=True)), 0, levels)
        beta *= kappa
    zero = best_zero
    q = np.clip(np.rint(w / scale + zero), 0, levels)
    if refit_scale:
        centred = q - zero
        denom = np.square(centred).sum(axis=-1, keepdims=True)
        fitted = (w * centred).sum(axis=-1, keepdims=True) / np.where(denom > 0, denom, 1.0)
        scale = np.where((denom > 0) & (fitted > 0), fitted, scale).astype(np.float32)
    return q.astype(np.uint8), scale[..., 0].astype(np.float32), zero[..., 0].astype(np.uint8)
