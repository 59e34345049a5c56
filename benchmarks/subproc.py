"""Child processes with their own peak RSS: each heavy measurement runs in a fresh interpreter,
so memory is returned afterwards and the peak belongs to that measurement alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TIME_BIN = "/usr/bin/time"
# A measurement child is stopped when the machine's available memory falls below this (MiB).
WORKER_MIN_AVAILABLE_MB = 600


def available_mb() -> float:
    """MemAvailable of the machine, MiB (inf where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def group_rss_mb(pgid: int) -> float:
    """Summed RSS of the processes in process group `pgid`, MiB."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat: the process group
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24: rss pages
        except (OSError, ValueError, IndexError):
            continue
    return total / (1 << 20)


def _memory_guard(proc: subprocess.Popen, floor_mb: float, flag: dict[str, Any]) -> None:
    """Kill `proc`'s whole process group if the machine's available memory falls below `floor_mb`
    (shared machine: better one failed measurement than the OOM killer picking someone else's job)."""
    seen = 0.0
    while proc.poll() is None:
        seen = max(seen, group_rss_mb(proc.pid))
        if available_mb() < floor_mb:
            flag["killed_low_memory_mb"] = round(available_mb())
            flag["group_rss_seen_mb"] = round(seen)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        time.sleep(0.5)


def run_tracked(cmd: list[str], log: Path | None = None, env: dict[str, str] | None = None,
                timeout: float | None = None, min_available_mb: float | None = None) -> dict[str, Any]:
    """Run `cmd`; return returncode, wall seconds, peak RSS (MB) and the output tail.

    min_available_mb: kill the command when the machine's available memory drops below this.
    """
    tail: deque[str] = deque(maxlen=40)
    # Peak RSS through /usr/bin/time: wait4 on our own child would also count this process's
    # peak (the child's memory map starts as a copy of ours before exec).
    timefile = None
    if Path(TIME_BIN).is_file():
        fd, timefile = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        cmd = [TIME_BIN, "-f", "%M", "-o", timefile, *cmd]
    start = time.perf_counter()
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=str(ROOT), env=full_env, bufsize=1, start_new_session=True)
    logfh = open(log, "a", encoding="utf-8") if log else None
    flag: dict[str, Any] = {}
    if min_available_mb:
        threading.Thread(target=_memory_guard, args=(proc, min_available_mb, flag), daemon=True).start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            if logfh:
                logfh.write(line)
                logfh.flush()
            if timeout and time.perf_counter() - start > timeout:
                proc.kill()
        # wait4 reports this child's own rusage (ru_maxrss in KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if logfh:
            logfh.close()
    peak_kb = usage.ru_maxrss
    if timefile:
        try:
            lines = Path(timefile).read_text().split()
            peak_kb = int(lines[-1])
        except (OSError, ValueError, IndexError):
            pass
        os.unlink(timefile)
    result = {"returncode": proc.returncode, "wall_s": time.perf_counter() - start,
              "peak_rss_mb": peak_kb / 1024.0, "tail": "\n".join(tail), **flag}
    if flag:
        result["peak_rss_mb"] = max(result["peak_rss_mb"], flag["group_rss_seen_mb"])
        result["tail"] += (f"\n[stopped: machine memory available fell to {flag['killed_low_memory_mb']} MB; "
                           f"the command's RSS had reached {flag['group_rss_seen_mb']} MB]")
    return result


class WorkerError(RuntimeError):
    """A measurement child failed; the message carries its last output lines."""


def run_worker(task: str, args: dict[str, Any], log: Path | None = None,
               timeout: float | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `benchmarks.worker TASK` in a fresh interpreter; return its JSON result + peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.worker", task, json.dumps(args), str(out)]
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"\n=== worker {task} {json.dumps(args)}\n")
        res = run_tracked(cmd, log=log, timeout=timeout, env=env, min_available_mb=WORKER_MIN_AVAILABLE_MB)
        if res["returncode"] != 0 or not out.is_file():
            raise WorkerError(f"{task} failed (exit {res['returncode']}): "
                              + " | ".join(res["tail"].splitlines()[-6:]))
        result = json.loads(out.read_text())
    result["process_peak_rss_mb"] = round(result.pop("own_peak_rss_mb", res["peak_rss_mb"]), 1)
    result["process_wall_s"] = round(res["wall_s"], 2)
    return result
