"""One model, one worker thread: jobs run one at a time, in arrival order.

File requests are bounded (`max_waiting` may wait behind the running one; more are refused with
a Retry-After estimate); a live stream's blocks are not counted, since each stream has at most one
block job in flight. A job whose client went away is skipped, or stopped at its next token.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable


class Cancelled(Exception):
    """The client of a job went away: its work stops at the next token."""


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class Job:
    """A unit of work: `fn(job)` runs on the worker; `future` holds its result or exception."""

    def __init__(self, fn: Callable[["Job"], Any], bounded: bool):
        self.fn = fn
        self.bounded = bounded
        self.future: Future = Future()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self, *_: Any) -> None:
        """Raise Cancelled if the client went away (called between decode steps)."""
        if self._cancelled.is_set():
            raise Cancelled()


class WorkQueue:
    def __init__(self, max_waiting: int = 8):
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.max_waiting = max_waiting
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0  # bounded jobs not started yet
        self._busy = False
        self._mean_s = 2.0  # running mean of a bounded job's duration, for Retry-After
        self.completed = 0
        self.cancelled = 0
        self._thread = threading.Thread(target=self._loop, name="edge-moss-worker", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Job], Any], bounded: bool = True) -> Job:
        job = Job(fn, bounded)
        with self._lock:
            if bounded:
                if self._waiting >= self.max_waiting and (self._busy or self._waiting):
                    ahead = self._waiting + (1 if self._busy else 0)
                    raise QueueFull(max(1, int(round(ahead * self._mean_s))))
                self._waiting += 1
            self._jobs.put(job)
        return job

    @property
    def waiting(self) -> int:
        return self._waiting

    def close(self, timeout: float = 5.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                if job.bounded:
                    self._waiting -= 1
                self._busy = True
            start = time.perf_counter()
            try:
                if job.cancelled:
                    raise Cancelled()
                job.future.set_result(job.fn(job))
                self.completed += 1
            except Cancelled as exc:
                self.cancelled += 1
                job.future.set_exception(exc)
            except BaseException as exc:  # surfaced to the request that submitted it
                job.future.set_exception(exc)
            finally:
                if job.bounded:
                    self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - start)
                with self._lock:
                    self._busy = False
