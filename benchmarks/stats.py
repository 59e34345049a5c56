"""Median and spread of repeated samples, and the rates derived from them."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def summary(values: Iterable[float], digits: int = 4) -> dict[str, float | int]:
    """{"median", "min", "max", "n"} of `values` (NaNs dropped); empty -> n = 0."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": round(float(np.median(v)), digits), "min": round(float(v.min()), digits),
            "max": round(float(v.max()), digits), "n": int(v.size)}


def rate(count: float, seconds: Iterable[float], digits: int = 2) -> dict[str, float | int]:
    """count / seconds for each sample, summarised (a rate's min comes from the slowest sample)."""
    return summary([count / s for s in seconds if s and s > 0], digits)


def fmt(stat: dict | None, unit: str = "", digits: int = 2) -> str:
    """'median (min–max)' for a table cell; '—' when missing."""
    if not stat or not stat.get("n"):
        return "—"
    m, lo, hi = stat["median"], stat["min"], stat["max"]
    if stat["n"] == 1 or lo == hi:
        return f"{m:.{digits}f}{unit}"
    return f"{m:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"
