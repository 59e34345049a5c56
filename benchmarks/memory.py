"""Resident memory of this process: current RSS and the peak since the last reset (Linux /proc).

Writing "5" to /proc/self/clear_refs resets the peak (VmHWM), which gives a peak per stage inside
one process. Where that is refused the peak is simply the process peak so far (`resettable` False).
"""

from __future__ import annotations


def _status_kb(key: str) -> int:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_mb() -> float:
    """Current resident set size in MiB."""
    return round(_status_kb("VmRSS") / 1024, 1)


def peak_mb() -> float:
    """Peak resident set size since the last reset_peak() (or process start), MiB."""
    return round(_status_kb("VmHWM") / 1024, 1)


_max_seen_mb = 0.0


def process_peak_mb() -> float:
    """Peak RSS of this whole process, across every reset_peak()."""
    return max(_max_seen_mb, peak_mb())


def reset_peak() -> bool:
    """Reset the peak to the current RSS; False where the kernel does not allow it."""
    global _max_seen_mb
    _max_seen_mb = max(_max_seen_mb, peak_mb())
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class StagePeaks:
    """Collects {stage: peak MiB} by resetting the peak before each stage."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.resettable = reset_peak()
        self.process_peak = 0.0

    def start(self) -> None:
        self.process_peak = max(self.process_peak, peak_mb())
        reset_peak()

    def end(self, stage: str) -> None:
        peak = peak_mb()
        self.peaks[stage] = max(self.peaks.get(stage, 0.0), peak)
        self.process_peak = max(self.process_peak, peak)
