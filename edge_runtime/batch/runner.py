"""Run a batch: plan against the ledger, stream the files through Ray Data, write what comes back.

The driver only lists, plans and writes; the actors (MossStage, one EdgeMoss each, `threads`
ONNX Runtime threads and as many Ray CPUs) read and answer. Records stream back one file at a
time (one file per Ray block, results taken in completion order) and each is in the ledger before
the next is counted, so a killed run loses only the files in flight. A file that kills its actor
is retried twice, then recorded as failed; the run goes on (Ray Data's max_errored_blocks = -1).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgeMossError
from .ledger import Ledger, ledger_key, plan
from .options import TaskOptions
from .outputs import (FILE_FORMATS, RESULT_FORMATS, TIMED_FORMATS, atomic_write, decoded,
                      write_file_outputs, write_results)
from .progress import BatchProgress
from .stage import MossStage, one_line

LEDGER_NAME = "ledger.jsonl"
JOB_NAME = "job.json"
CRASH_RETRIES = 2
DEFAULT_MAX_THREADS = 4  # beyond ~4 ORT threads a decode step gains little; more actors do


@dataclass
class BatchConfig:
    """Everything `edge-moss batch` needs; checks itself (EdgeMossError) before Ray starts."""

    inputs: list[str]
    out_dir: Path
    bundle: str
    options: TaskOptions = field(default_factory=TaskOptions)
    address: str = "local"
    workers: int | None = None
    threads: int | None = None
    results_format: str = "jsonl"
    file_formats: tuple[str, ...] = ()
    progress: bool = True
    rehash: bool = False
    max_context: int | None = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.results_format not in RESULT_FORMATS:
            raise EdgeMossError(f"--format must be one of {', '.join(RESULT_FORMATS)}")
        bad = [f for f in self.file_formats if f not in FILE_FORMATS]
        if bad:
            raise EdgeMossError(f"-f {bad[0]}: choose from {', '.join(FILE_FORMATS)}")
        if self.options.task == "ask" and set(self.file_formats) & set(TIMED_FORMATS):
            raise EdgeMossError("-f srt/vtt need --task transcribe (an answer has no cues)")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EdgeMossError(f"--{name.replace('_', '-')} must be at least 1")
        if not self.inputs:
            raise EdgeMossError("no inputs given")


@dataclass
class BatchSummary:
    files: int = 0
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    workers: int = 0
    threads: int = 0
    results: Path | None = None

    def line(self) -> str:
        rate = self.audio_s / self.wall_s if self.wall_s > 0 else 0.0
        return (f"{self.files} files: {self.ran} run ({self.failed} failed), {self.skipped} already "
                f"done; {self.audio_s / 3600:.3f} audio h in {self.wall_s:.1f} s = {rate:.1f} "
                f"audio-h/h with {self.workers} x {self.threads} threads; results: {self.results}")


def plan_pool(cpus: int, workers: int | None, threads: int | None,
              max_workers: int | None = None) -> tuple[int, int]:
    """(actors, threads per actor) with actors x threads <= cpus; defaults fill the CPUs.

    max_workers caps the default actor count (what fits in memory); explicit values are kept.
    """
    cpus = max(1, int(cpus))
    if workers and threads:
        if workers * threads > cpus:
            raise EdgeMossError(f"--workers {workers} x --threads-per-worker {threads} = "
                                f"{workers * threads} threads would oversubscribe {cpus} CPUs")
        return workers, threads
    if workers:
        if workers > cpus:
            raise EdgeMossError(f"--workers {workers} is more than the {cpus} CPUs Ray has")
        return workers, max(1, cpus // workers)
    if threads:
        if threads > cpus:
            raise EdgeMossError(f"--threads-per-worker {threads} is more than the {cpus} CPUs Ray has")
        count = max(1, cpus // threads)
        return (min(count, max_workers) if max_workers else count), threads
    threads = max(1, min(DEFAULT_MAX_THREADS, cpus // 2))
    count = max(1, cpus // threads)
    if max_workers and count > max_workers:
        count = max(1, max_workers)
        threads = max(1, cpus // count)
    return count, threads


def actors_that_fit(bundle: str) -> int | None:
    """How many copies of the bundle this machine's available memory holds (None if unknown).

    An actor holds about its bundle's bytes plus working memory: 1.6x the bytes (the 4B int4
    bundle's actor peaked at 1.58x; benchmarks/NOTES.md, "Batch on Ray Data").
    """
    try:
        size = sum(p.stat().st_size for p in Path(bundle).iterdir() if p.is_file())
        with open("/proc/meminfo") as handle:
            info = dict(line.split(":", 1) for line in handle)
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    return max(1, int(available // (1.6 * size))) if size else None


def header_seconds(path: str) -> float:
    """The file's duration from its header (0 when unreadable: the stage will say why)."""
    import soundfile

    try:
        info = soundfile.info(path)
        return float(info.frames) / float(info.samplerate) if info.samplerate else 0.0
    except Exception:  # noqa: BLE001 - progress only
        return 0.0


def _check_job(out_dir: Path, fingerprint: dict[str, Any]) -> None:
    job = out_dir / JOB_NAME
    if job.exists():
        try:
            previous = json.loads(job.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
        if previous != fingerprint:
            raise EdgeMossError(f"{out_dir} holds a batch with other settings (see {job}): "
                                "use another -o, or the same task, question, flags and bundle")
        return
    atomic_write(job, (json.dumps(fingerprint, indent=2, ensure_ascii=False) + "\n").encode())


def _failed(path: str, error: str, worker: str = "driver") -> dict[str, Any]:
    return {"path": path, "sha256": "", "size": -1, "mtime_ns": -1, "duration": -1.0, "text": "",
            "segments": [], "timings": {}, "worker": worker, "error": error}


def _plain(value: Any) -> Any:
    """numpy scalars from a Ray row -> Python values (for JSON)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _stage(ds, stage_args: dict[str, Any], workers: int, threads: int):
    """ds.map_batches(MossStage) on a fixed pool of `workers` actors of `threads` CPUs each.

    Ray Data retries a task whose actor died forever by default; a file that kills its actor
    every time would then stall the run, so retries are capped (a remote arg Ray marks as
    deprecated, without a named replacement yet: the warning is silenced, and a Ray that no
    longer takes it runs with its own default).
    """
    from ray.data import ActorPoolStrategy

    common = dict(batch_size=1, fn_constructor_kwargs=stage_args,
                  compute=ActorPoolStrategy(size=workers), num_cpus=threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return ds.map_batches(MossStage, max_task_retries=CRASH_RETRIES, **common)
    except TypeError:
        return ds.map_batches(MossStage, **common)


def run_batch(cfg: BatchConfig, temp_dir: str | None = None) -> BatchSummary:
    """Plan, run what is not done, write results; `temp_dir` is Ray's session folder (local mode)."""
    from .session import require_ray

    require_ray()
    start = time.monotonic()
    out_dir = cfg.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = [ledger_key(p) for p in cfg.inputs]
    input_set = {os.path.realpath(p) for p in inputs}
    results_path = out_dir / f"results.{cfg.results_format}"
    for own in (results_path, out_dir / LEDGER_NAME, out_dir / JOB_NAME):
        if os.path.realpath(own) in input_set:
            raise EdgeMossError(f"{own} is an input: choose another -o")
    _check_job(out_dir, cfg.options.fingerprint(cfg.bundle))

    summary = BatchSummary(files=len(inputs))
    with Ledger(out_dir / LEDGER_NAME) as ledger:
        latest = ledger.latest()
        todo = plan(inputs, latest, rehash=cfg.rehash)
        summary.skipped = len(todo.done)

        def keep(record: dict[str, Any]) -> None:
            ledger.append(record)
            latest[ledger_key(record["path"])] = record
            if record["error"]:
                summary.failed += 1
                return
            summary.audio_s += max(0.0, float(record["duration"]))
            try:
                write_file_outputs(out_dir, record, cfg.file_formats, cfg.options.task, input_set)
            except (EdgeMossError, OSError) as exc:
                print(f"edge-moss batch: {record['path']}: {one_line(exc)}", file=sys.stderr)

        for path, error in todo.unreadable.items():
            keep(_failed(path, error))
        for record in todo.done.values():
            write_file_outputs(out_dir, record, cfg.file_formats, cfg.options.task, input_set,
                               only_missing=True)
        if todo.todo:
            summary.ran = len(todo.todo) + len(todo.unreadable)
            _run_on_ray(cfg, todo.todo, keep, summary, temp_dir)
        else:
            summary.ran = len(todo.unreadable)

    records = [latest[key] for key in inputs if key in latest]
    summary.results = write_results(results_path, records, cfg.results_format)
    summary.wall_s = time.monotonic() - start
    return summary


def _run_on_ray(cfg: BatchConfig, paths: list[str], keep, summary: BatchSummary,
                temp_dir: str | None) -> None:
    from .session import LOCAL, cluster_cpus, connect

    local = cfg.address == LOCAL
    if local or Path(cfg.bundle).exists():
        from ..bundle import verify_bundle

        verify_bundle(cfg.bundle)  # a bad -m is one line here, not an actor crash later
    audio_total = sum(header_seconds(p) for p in paths) if cfg.progress else 0.0
    ray, started = connect(cfg.address, num_cpus=os.cpu_count() if local else None,
                           temp_dir=temp_dir)
    try:
        from ray.data import DataContext

        cap = actors_that_fit(cfg.bundle) if local else None
        workers, threads = plan_pool(cluster_cpus(ray), cfg.workers, cfg.threads, cap)
        summary.workers, summary.threads = workers, threads
        DataContext.get_current().max_errored_blocks = -1  # a crashing file never ends the run
        opts = cfg.options
        ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=len(paths))
        stage_args = dict(bundle=str(Path(cfg.bundle).absolute()), task=opts.task,
                          question=opts.question, timestamps=opts.timestamps, threads=threads,
                          window_s=opts.window_s, vad=opts.vad, decode=dict(opts.decode),
                          max_context=cfg.max_context)
        ds = _stage(ds, stage_args, min(workers, len(paths)), threads)
        progress = BatchProgress(len(paths), audio_total, enabled=cfg.progress)
        seen: set[str] = set()
        try:
            for row in ds.iter_rows():
                record = decoded({k: _plain(v) for k, v in row.items()})
                seen.add(ledger_key(record["path"]))
                keep(record)
                progress.update(max(0.0, float(record["duration"])), failed=bool(record["error"]))
        except Exception as exc:  # noqa: BLE001 - Ray's own failure: one line, ledger kept
            raise EdgeMossError(f"the Ray run stopped: {one_line(exc)} (finished files are kept "
                                f"in {cfg.out_dir / LEDGER_NAME}; rerun to continue)") from None
        finally:
            progress.close()
        for path in paths:
            if ledger_key(path) not in seen:
                keep(_failed(path, f"the worker process died on this file "
                                   f"{CRASH_RETRIES + 1} times (crash or out of memory)", "ray"))
    finally:
        if started:
            ray.shutdown()
