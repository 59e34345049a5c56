"""Window planning for long audio: coverage, limits, quiet cut points, speech regions."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.windows import plan_windows, plan_windows_from_regions

SR = 16000


def noise(seconds: float, seed: int = 0, level: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * level).astype(np.float32)


def assert_contiguous_cover(windows, n):
    assert windows[0][0] == 0 and windows[-1][1] == n
    for (a, b), (c, _) in zip(windows, windows[1:]):
        assert b == c  # no gap, no overlap
    assert all(b > a for a, b in windows)


@pytest.mark.parametrize("seconds", [0.01, 5.0, 30.0, 30.01, 61.0, 95.3])
def test_cover_and_limit(seconds):
    x = noise(seconds, seed=int(seconds * 100))
    windows = plan_windows(x, max_window_s=30.0, search_s=5.0)
    assert_contiguous_cover(windows, len(x))
    assert all(b - a <= 30 * SR for a, b in windows)
    if len(x) <= 30 * SR:
        assert windows == [(0, len(x))]
    else:
        # every window but the last ends within the search region before its limit
        for a, b in windows[:-1]:
            assert 25 * SR <= b - a <= 30 * SR


def test_empty_and_bad_input():
    assert plan_windows(np.zeros(0, dtype=np.float32)) == []
    with pytest.raises(ValueError, match="1-D"):
        plan_windows(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="search_s"):
        plan_windows(noise(1.0), max_window_s=5.0, search_s=5.0)


def test_cut_lands_in_silent_gap():
    x = noise(50.0, seed=3)
    gap = (int(27.0 * SR), int(27.4 * SR))
    x[gap[0]:gap[1]] = 0.0
    windows = plan_windows(x)
    cut = windows[0][1]
    assert gap[0] < cut < gap[1]
    assert_contiguous_cover(windows, len(x))


def test_cut_prefers_quiet_over_loud_not_only_silence():
    x = noise(40.0, seed=4)
    x[int(26.0 * SR):int(26.3 * SR)] *= 0.05  # a soft pause, not digital silence
    windows = plan_windows(x)
    assert 26.0 * SR < windows[0][1] < 26.3 * SR


def test_min_window_keeps_last_window_from_being_tiny():
    x = noise(30.5, seed=5)
    x[int(30.3 * SR):int(30.4 * SR)] = 0  # tempting gap that would leave 0.15 s
    windows = plan_windows(x, min_window_s=1.0)
    assert windows[-1][1] - windows[-1][0] >= 1.0 * SR
    assert_contiguous_cover(windows, len(x))


def test_one_hour_with_int16_input():
    # a 28 s pattern: 26.5 s of noise, then 1.5 s of silence; every search region holds a gap
    pattern = noise(28.0, seed=6)
    pattern[int(26.5 * SR):] = 0
    x = (np.tile(pattern, 3600 // 28 + 1)[: 3600 * SR] * 20000).astype(np.int16)
    windows = plan_windows(x)
    assert_contiguous_cover(windows, len(x))
    assert all(b - a <= 30 * SR for a, b in windows)
    for _, cut in windows[:-1]:
        position = (cut % (28 * SR)) / SR
        assert 26.5 < position < 28.0, position


def test_regions_merge_within_limit_and_gap():
    regions = [(0, 5 * SR), (6 * SR, 12 * SR), (13 * SR, 29 * SR), (29 * SR + 100, 40 * SR),
               (50 * SR, 52 * SR)]
    windows = plan_windows_from_regions(regions, max_window_s=30.0, max_gap_s=2.0)
    assert windows == [(0, 29 * SR), (29 * SR + 100, 40 * SR), (50 * SR, 52 * SR)]
    # without a gap limit the last two merge (they fit in 30 s)
    assert plan_windows_from_regions(regions, max_gap_s=None)[-1] == (29 * SR + 100, 52 * SR)


def test_every_region_is_covered_and_windows_do_not_overlap():
    rng = np.random.default_rng(8)
    starts = np.sort(rng.integers(0, 600 * SR, 80))
    regions = [(int(s), int(s + rng.integers(SR // 4, 45 * SR))) for s in starts]  # some overlap
    windows = plan_windows_from_regions(regions, max_window_s=30.0, max_gap_s=1.0)
    assert all(0 < b - a <= 30 * SR for a, b in windows)
    assert all(b <= c for (_, b), (c, _) in zip(windows, windows[1:]))
    covered = np.zeros(650 * SR, dtype=bool)
    for a, b in windows:
        covered[a:b] = True
    for a, b in regions:
        assert covered[a:b].all()


def test_overlong_region_split_in_its_quiet_point():
    x = noise(70.0, seed=9)
    x[int(20.0 * SR):int(20.5 * SR)] = 0  # before the search region: must not be used
    x[int(32.0 * SR):int(32.4 * SR)] = 0  # 27-32 s into the region (which starts at 5 s)
    windows = plan_windows_from_regions([(5 * SR, 65 * SR)], samples=x, max_window_s=30.0)
    assert windows[0][0] == 5 * SR and windows[-1][1] == 65 * SR
    assert 32.0 * SR < windows[0][1] < 32.4 * SR
    assert all(b - a <= 30 * SR for a, b in windows)
    # without samples the region is cut into equal parts within the limit
    equal = plan_windows_from_regions([(0, 70 * SR)], max_window_s=30.0)
    assert len(equal) == 3 and all(abs((b - a) - 70 * SR / 3) <= 1 for a, b in equal)
    assert_contiguous_cover(equal, 70 * SR)


def test_regions_clipped_to_audio():
    x = noise(10.0)
    assert plan_windows_from_regions([(-100, 3 * SR), (9 * SR, 12 * SR)], samples=x) == [
        (0, 3 * SR), (9 * SR, 10 * SR)
    ]


def test_regions_in_seconds_and_unit_guard():
    x = noise(10.0)
    assert plan_windows_from_regions([(0.5, 2.25), (2.5, 4.0)], samples=x, unit="seconds") == [
        (SR // 2, 4 * SR)
    ]
    with pytest.raises(ValueError, match="seconds"):
        plan_windows_from_regions([(0.5, 2.25)], samples=x)
    with pytest.raises(ValueError, match="unit"):
        plan_windows_from_regions([(0, 10)], unit="ms")
