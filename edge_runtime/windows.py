"""Cut long audio into windows short enough for one model call, cutting in quiet places.

A window ends at most max_window_s after it starts.  When the audio goes on, the cut is placed at
the quietest point (smoothed frame RMS) within the last search_s seconds before that limit, so
words are not split where a pause is available.  Energy is computed once, vectorised, on a 5 ms
grid, so hours of audio cost a few passes over the samples.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

HOP_S = 0.005  # resolution of the cut points


def _check_limits(sr: int, max_window_s: float, search_s: float, min_window_s: float) -> None:
    if sr <= 0:
        raise ValueError(f"sr must be > 0, got {sr!r}")
    if not max_window_s > 0:
        raise ValueError(f"max_window_s must be > 0, got {max_window_s!r}")
    if not 0 <= search_s < max_window_s:
        raise ValueError(f"search_s must be >= 0 and < max_window_s, got {search_s!r}")
    if not 0 <= min_window_s <= max_window_s - search_s:
        raise ValueError(
            f"min_window_s must be >= 0 and <= max_window_s - search_s, got {min_window_s!r}"
        )


def _centred_mean(values: np.ndarray, half: int) -> np.ndarray:
    """Mean of `values` over [i - half, i + half) for each boundary i = 0..len(values)."""
    n = len(values)
    cumulative = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    index = np.arange(n + 1)
    lo = np.clip(index - half, 0, n)
    hi = np.clip(index + half, 0, n)
    return (cumulative[hi] - cumulative[lo]) / np.maximum(hi - lo, 1)


def energy_profile(
    samples: np.ndarray, sr: int = 16000, frame_s: float = 0.025, smooth_s: float = 0.1
) -> tuple[np.ndarray, int]:
    """Smoothed RMS around each hop boundary, and the hop in samples.

    Value i describes the audio around sample i * hop: the RMS of a frame_s frame centred there,
    averaged over smooth_s so a short dip inside a word does not look like a pause.
    """
    x = np.asarray(samples).reshape(-1)
    hop = max(1, int(round(sr * HOP_S)))
    n_blocks = math.ceil(len(x) / hop)
    # sum of squares per hop block, in slices so a long int16 or float64 input is never copied whole
    block_energy = np.zeros(n_blocks, dtype=np.float64)
    step = hop * 65536
    for first in range(0, len(x), step):
        piece = np.asarray(x[first:first + step], dtype=np.float32)
        pad = (-len(piece)) % hop
        if pad:
            piece = np.concatenate([piece, np.zeros(pad, dtype=np.float32)])
        blocks = piece.reshape(-1, hop).astype(np.float64)
        block_energy[first // hop:first // hop + len(blocks)] = np.einsum("ij,ij->i", blocks, blocks)
    bad = ~np.isfinite(block_energy)
    if bad.any():  # NaN/inf samples: call those blocks loud, never a place to cut
        finite = block_energy[~bad]
        block_energy[bad] = max(float(hop), float(finite.max()) if finite.size else 0.0)
    mean_square = _centred_mean(block_energy / hop, max(1, round(frame_s / HOP_S / 2)))
    rms = np.sqrt(mean_square)
    return _centred_mean(rms, max(1, round(smooth_s / HOP_S / 2))), hop


def _quietest(profile: np.ndarray, lo: int, hi: int) -> int:
    """Boundary index in [lo, hi] with the least energy; the middle of a flat minimum."""
    values = profile[lo:hi + 1]
    best = int(np.argmin(values))
    floor = values[best]
    tolerance = abs(floor) * 1e-6 + 1e-12
    end = best
    while end + 1 < len(values) and values[end + 1] <= floor + tolerance:
        end += 1
    return lo + (best + end) // 2


def plan_windows(
    samples: np.ndarray,
    sr: int = 16000,
    max_window_s: float = 30.0,
    search_s: float = 5.0,
    min_window_s: float = 1.0,
    frame_s: float = 0.025,
    smooth_s: float = 0.1,
) -> list[tuple[int, int]]:
    """Contiguous (start_sample, end_sample) windows covering all of `samples`.

    Each window is at most max_window_s long.  When more audio follows, the window ends at the
    quietest point in its last search_s seconds, but never so late that less than min_window_s
    would be left for the final window.  No gaps, no overlaps; empty input gives [].
    """
    _check_limits(sr, max_window_s, search_s, min_window_s)
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"samples must be 1-D mono audio, got shape {x.shape}")
    n = len(x)
    max_len = int(math.floor(max_window_s * sr))
    if n == 0:
        return []
    if n <= max_len:
        return [(0, n)]
    profile, hop = energy_profile(x, sr, frame_s, smooth_s)
    search_len = int(round(search_s * sr))
    min_len = int(round(min_window_s * sr))

    windows: list[tuple[int, int]] = []
    start = 0
    while n - start > max_len:
        latest = min(start + max_len, n - min_len)
        earliest = min(max(start + max_len - search_len, start + 1), latest)
        lo, hi = math.ceil(earliest / hop), latest // hop  # boundaries whose sample is in range
        cut = _quietest(profile, lo, hi) * hop if lo <= hi else latest
        windows.append((start, cut))
        start = cut
    windows.append((start, n))
    return windows


def plan_windows_from_regions(
    regions: Sequence[tuple[int, int]],
    sr: int = 16000,
    max_window_s: float = 30.0,
    max_gap_s: float | None = 2.0,
    samples: np.ndarray | None = None,
    search_s: float = 5.0,
    min_window_s: float = 1.0,
    unit: str = "samples",
) -> list[tuple[int, int]]:
    """Windows (start_sample, end_sample) that cover the given speech regions.

    Regions are (start, end) sample indices (vad.regions_from_probs) with unit="samples", or
    seconds (vad.speech_regions) with unit="seconds"; float regions with unit="samples" are
    refused, since reading seconds as samples would silently drop nearly all the audio.
    Regions are sorted and clipped to the audio, then merged in order into a
    window while the window stays within max_window_s and the silence bridged is at most max_gap_s
    (None: any gap).  Silence between windows is left out.  A region longer than max_window_s is
    split by the quietest-point rule of plan_windows when `samples` is given, else into equal parts.
    """
    _check_limits(sr, max_window_s, search_s, min_window_s)
    max_len = int(math.floor(max_window_s * sr))
    max_gap = None if max_gap_s is None else int(round(max_gap_s * sr))
    n = None if samples is None else len(samples)
    spans = sorted(_region_samples(regions, unit, sr))
    if n is not None:
        spans = [(max(0, a), min(n, b)) for a, b in spans]
    spans = [(a, b) for a, b in spans if b > a]

    windows: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for start, end in spans:
        if current is not None:
            fits = max(end, current[1]) - current[0] <= max_len
            near = max_gap is None or start - current[1] <= max_gap
            if fits and near:
                current = (current[0], max(end, current[1]))
                continue
            windows.append(current)
            start = max(start, current[1])  # overlapping regions: do not cover audio twice
        pieces = _split_region(start, end, max_len, samples, sr, max_window_s, search_s, min_window_s)
        windows.extend(pieces[:-1])
        current = pieces[-1]  # the last piece may still merge with the regions that follow
    if current is not None:
        windows.append(current)
    return windows


def _region_samples(regions: Sequence[tuple[float, float]], unit: str, sr: int) -> list[tuple[int, int]]:
    if unit == "seconds":
        return [(int(round(a * sr)), int(round(b * sr))) for a, b in regions]
    if unit != "samples":
        raise ValueError(f"unit must be 'samples' or 'seconds', got {unit!r}")
    out = []
    for a, b in regions:
        if isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
            raise ValueError("regions in samples must be integers; pass unit='seconds' for times in seconds")
        out.append((int(a), int(b)))
    return out


def _split_region(
    start: int, end: int, max_len: int, samples: np.ndarray | None, sr: int,
    max_window_s: float, search_s: float, min_window_s: float,
) -> list[tuple[int, int]]:
    if end - start <= max_len:
        return [(start, end)]
    if samples is not None:
        inner = plan_windows(samples[start:end], sr, max_window_s, search_s, min_window_s)
        return [(start + a, start + b) for a, b in inner]
    parts = math.ceil((end - start) / max_len)
    edges = np.linspace(start, end, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
