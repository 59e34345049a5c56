"""What a batch writes under OUT_DIR, always atomically (temp file in the same folder + os.replace).

- `results.jsonl` or `results.parquet`: one record per input of this run, in input order.
- `files/<the input's absolute path>.<fmt>`: per-file srt/vtt/json/txt when asked. The input's
  whole absolute path is mirrored under `files/` and the format appended to its full name, so
  /a/x/talk.wav gives OUT_DIR/files/a/x/talk.wav.srt: two inputs never share an output (same
  stem in two folders, or talk.wav beside talk.flac), and the name is the same on every rerun.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ..errors import EdgeMossError
from ..private_files import PRIVATE_MODE
from ..segments import Segment, TranscriptionInfo
from ..subtitles import render

RESULT_FORMATS = ("jsonl", "parquet")
FILE_FORMATS = ("srt", "vtt", "json", "txt")
TIMED_FORMATS = ("srt", "vtt")


def atomic_write(path: Path, data: bytes) -> Path:
    """Write `data` to `path` via a private temp file beside it and os.replace (all or nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PRIVATE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def file_output(out_dir: Path, path: str, fmt: str) -> Path:
    """OUT_DIR/files/<absolute input path>.<fmt> (see the module docstring)."""
    absolute = Path(os.path.abspath(path))
    parts = list(absolute.parts)
    anchor = parts.pop(0).strip("\\/").replace(":", "") if parts else ""
    if anchor:  # a Windows drive ("C:\\") becomes a folder "C"
        parts.insert(0, anchor)
    return out_dir.joinpath("files", *parts[:-1], f"{parts[-1]}.{fmt}")


def decoded(record: dict[str, Any]) -> dict[str, Any]:
    """A record with its JSON-string columns (segments, timings) turned into lists and dicts."""
    out = dict(record)
    for name, empty in (("segments", []), ("timings", {})):
        value = out.get(name)
        if isinstance(value, str):
            out[name] = json.loads(value) if value else empty
    return out


def render_file(record: dict[str, Any], fmt: str, task: str) -> str:
    """The per-file output of a successful record in format `fmt`."""
    if task == "ask":
        if fmt == "txt":
            return record["text"].strip() + "\n"
        doc = {k: record[k] for k in ("path", "sha256", "duration", "text", "timings")}
        return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    segments = [Segment.from_dict(s) for s in record["segments"]]
    info = TranscriptionInfo(duration=float(record["duration"]),
                             timings={k: v for k, v in record["timings"].items()
                                      if k.endswith("_s")})
    return render(segments, fmt, info)


def write_file_outputs(out_dir: Path, record: dict[str, Any], formats: Iterable[str], task: str,
                       inputs: set[str], only_missing: bool = False) -> list[Path]:
    """Write the per-file outputs of one record; refuses a name that is one of the inputs."""
    written = []
    for fmt in formats:
        target = file_output(out_dir, record["path"], fmt)
        if os.path.realpath(target) in inputs:
            raise EdgeMossError(f"{target} is an input: not overwriting it")
        if only_missing and target.exists():
            continue
        written.append(atomic_write(target, render_file(record, fmt, task).encode("utf-8")))
    return written


def write_results(path: Path, records: list[dict[str, Any]], fmt: str) -> Path:
    """All records, one per input, as JSON lines or Parquet (segments as a list of structs)."""
    if fmt == "jsonl":
        text = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
        return atomic_write(path, text.encode("utf-8"))
    if fmt != "parquet":
        raise ValueError(f"unknown results format {fmt!r}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    segment = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("text", pa.string())])
    schema = pa.schema([
        ("path", pa.string()), ("sha256", pa.string()), ("size", pa.int64()),
        ("mtime_ns", pa.int64()), ("duration", pa.float64()), ("text", pa.string()),
        ("segments", pa.list_(segment)), ("timings", pa.string()), ("worker", pa.string()),
        ("error", pa.string()),
    ])
    rows = [{**rec, "timings": json.dumps(rec.get("timings", {}))} for rec in records]
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return atomic_write(path, sink.getvalue().to_pybytes())
