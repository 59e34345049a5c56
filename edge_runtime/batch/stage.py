"""The Ray Data stage: a callable class that loads a bundle once per actor and answers per file.

Use it in your own pipeline with `Dataset.map_batches(MossStage, fn_constructor_kwargs=...,
compute=ActorPoolStrategy(size=N), num_cpus=T)`. A batch holds a `path` column and optionally a
`bytes` column (as `ray.data.read_binary_files(..., include_paths=True)` gives); without bytes the
actor reads the path itself, so the path must be readable on every node (a shared folder).

Each row becomes one record (RECORD_COLUMNS): the file's sha256, size and mtime, the audio
duration, the text, the segments and timings as JSON strings (one Arrow type whatever the row),
the worker that did it, and `error`: "" on success, else one line saying what went wrong. A bad
file never raises out of `__call__`, so one file cannot stop a run.

Nothing here imports Ray: the class is plain Python, usable and testable without it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import sys
import time
from typing import Any, Mapping

import numpy as np

from .. import model_facts as facts
from ..errors import AudioError, EdgeMossError
from .options import TaskOptions

RECORD_COLUMNS = ("path", "sha256", "size", "mtime_ns", "duration", "text", "segments", "timings",
                  "worker", "error")


def one_line(exc: BaseException) -> str:
    """An exception as one line: the project's own errors as their message, others with their type."""
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(exc, EdgeMossError):
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def file_identity(path: str) -> tuple[str, int, int]:
    """(sha256 hex, size, mtime_ns) of a file, hashed in blocks (never held whole in memory)."""
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest(), st.st_size, st.st_mtime_ns


def _decode_bytes(data: bytes, name: str) -> np.ndarray:
    """Audio bytes -> 16 kHz mono float32, read as `load_audio` reads a file."""
    import soundfile

    from ..audio import to_mono_16k

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"cannot read {name} as audio "
                         f"(unsupported or corrupt file: {reason})") from None
    return to_mono_16k(samples, rate, name=name)


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (what one actor needs), in MB; -1 if unknown."""
    try:
        import resource
    except ImportError:  # not POSIX
        return -1.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1024.0 if sys.platform != "darwin" else peak / 2**20, 1)


def _rows(batch: Any) -> list[dict[str, Any]]:
    """The rows of a Ray batch in any of its formats (dict of arrays, pandas, Arrow)."""
    if hasattr(batch, "to_pydict"):  # pyarrow.Table
        columns = batch.to_pydict()
    elif hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas.DataFrame
        columns = {name: list(batch[name]) for name in batch.columns}
    elif isinstance(batch, Mapping):
        columns = {name: list(values) for name, values in batch.items()}
    else:
        raise TypeError("a batch must be a dict of columns, a DataFrame or a Table, "
                        f"not {type(batch)}")
    if "path" not in columns and "bytes" not in columns:
        raise KeyError("a batch needs a 'path' column (and optionally 'bytes')")
    count = len(next(iter(columns.values()))) if columns else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(count)]


class MossStage:
    """Transcribe or ask, file by file, with one EdgeMoss per actor.

    Args:
        bundle: bundle folder (the same path on every node).
        task: "transcribe" or "ask".
        question: the question for task "ask".
        timestamps: sentence-level timestamps (transcribe).
        threads: ONNX Runtime intra-op threads of this actor; give Ray the same as num_cpus so
            that N actors never oversubscribe a node.
        window_s, vad, decode: as TaskOptions.
        device, max_context: as EdgeMoss.
    """

    def __init__(self, bundle: str | os.PathLike, task: str = "transcribe",
                 question: str | None = None, timestamps: bool = False,
                 threads: int | None = None, *, window_s: float = 30.0, vad: bool = True,
                 decode: dict[str, Any] | None = None, device: str = "cpu",
                 max_context: int | None = None):
        from ..api import EdgeMoss

        self.options = TaskOptions(task=task, question=question, timestamps=timestamps,
                                   window_s=window_s, vad=vad, decode=dict(decode or {}))
        self.model = EdgeMoss(bundle, device=device, threads=threads, max_context=max_context)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: Any) -> dict[str, list]:
        out: dict[str, list] = {name: [] for name in RECORD_COLUMNS}
        for row in _rows(batch):
            record = self.process(row.get("path"), row.get("bytes"))
            for name in RECORD_COLUMNS:
                out[name].append(record[name])
        return out

    def process(self, path: Any, data: bytes | None = None) -> dict[str, Any]:
        """One file (or its bytes) -> one record; never raises."""
        start = time.perf_counter()
        name = str(path) if path is not None else "<bytes>"
        record: dict[str, Any] = {"path": name, "sha256": "", "size": -1, "mtime_ns": -1,
                                  "duration": -1.0, "text": "", "segments": "[]", "timings": "{}",
                                  "worker": self.worker, "error": ""}
        try:
            if data is None:
                record["sha256"], record["size"], record["mtime_ns"] = file_identity(name)
                samples = self.model.load(name)
            else:
                data = bytes(data)
                record["sha256"] = hashlib.sha256(data).hexdigest()
                record["size"] = len(data)
                samples = _decode_bytes(data, name)
            read_s = time.perf_counter() - start
            record["duration"] = samples.size / facts.SAMPLE_RATE
            text, segments, timings = self._answer(samples)
            timings = {"read_s": round(read_s, 4), **timings,
                       "total_s": round(time.perf_counter() - start, 4),
                       "peak_rss_mb": _peak_rss_mb()}
            record.update(text=text, segments=json.dumps(segments, ensure_ascii=False),
                          timings=json.dumps(timings))
        except FileNotFoundError:
            record["error"] = f"audio file not found: {name}"
        except OSError as exc:
            record["error"] = f"cannot read {name}: {exc.strerror or one_line(exc)}"
        except Exception as exc:  # noqa: BLE001 - one bad file is recorded, never fatal
            record["error"] = one_line(exc)
        return record

    def _answer(self, samples: np.ndarray) -> tuple[str, list[dict], dict[str, Any]]:
        opts = self.options
        if opts.task == "ask":
            result = self.model.ask(samples, opts.question, **opts.settings())
            timings = dict(result.timings)
            timings["generated_tokens"] = len(result.token_ids)
            return result.text, [], timings
        from ..subtitles import to_json

        segments, info = self.model.transcribe(samples, timestamps=opts.timestamps,
                                               window_s=opts.window_s, vad=opts.vad,
                                               **opts.settings())
        # the transcript text exactly as `edge-moss transcribe -f json` writes it
        text = json.loads(to_json(segments))["text"]
        timings = dict(info.timings)
        timings.update(audio_tokens=info.audio_tokens, generated_tokens=info.generated_tokens,
                       windows=len(info.windows))
        return text, [seg.to_dict() for seg in segments], timings
