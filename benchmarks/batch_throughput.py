"""Throughput of `edge-moss batch` in audio-hours per hour, with 1, 2, ... actors on this machine.

    flock /tmp/edge-moss-heavy.lock python -m benchmarks.batch_throughput \
        --bundle /work/cache/bundle-4b-int4 --workers 1,2 --out benchmarks/batch_throughput_4b.json

Each setting runs the real command (local Ray, loopback only) on the same generated clips (tones
and noise: random weights make any text meaningless, so no speech is needed) with VAD off and
`--max-new-tokens` fixed, i.e. about the 3 tokens a second of audio that speech transcribes to.
Two rates are reported from the records: end to end (wall time of the whole command: Ray start,
one model load per actor, all files) and steady (audio / the busiest actor's summed per-file
time: what the pool does once loaded, the figure a long archive approaches). Peak RSS is each
actor's own (ru_maxrss), so "fits N times" is measured, not guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def make_clips(folder: Path, count: int, seconds: float) -> list[str]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    paths = []
    for i in range(count):
        x = 0.2 * np.sin(2 * np.pi * (180 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 1.5 * t))
        x = (x + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        path = folder / f"clip{i:03d}.wav"
        sf.write(path, x, 16000)
        paths.append(str(path))
    return paths


def mem_available_gb() -> float:
    with open("/proc/meminfo") as handle:
        info = dict(line.split(":", 1) for line in handle)
    return int(info["MemAvailable"].split()[0]) / 2**20


def run_one(bundle: str, clips: list[str], out: Path, workers: int, threads: int,
            tokens: int) -> dict:
    load_before = os.getloadavg()[0]
    mem_before = mem_available_gb()
    cmd = [sys.executable, "-m", "edge_runtime.cli", "batch", *clips, "-m", bundle, "-o", str(out),
           "--no-vad", "--max-new-tokens", str(tokens), "--workers", str(workers),
           "--threads-per-worker", str(threads), "--no-progress"]
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"batch failed ({proc.returncode}): {proc.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    audio = sum(r["duration"] for r in records)
    busy: dict[str, float] = {}
    for r in records:
        busy[r["worker"]] = busy.get(r["worker"], 0.0) + r["timings"]["total_s"]
    return {
        "workers": workers, "threads": threads, "files": len(records), "audio_s": audio,
        "wall_s": round(wall, 2),
        "end_to_end_audio_h_per_h": round(audio / wall, 3),
        "steady_audio_h_per_h": round(audio / max(busy.values()), 3),
        "actors_seen": len(busy),
        "per_file_s_median": round(float(np.median([r["timings"]["total_s"] for r in records])), 2),
        "model_load_s": sorted({r["timings"].get("load_s") for r in records}),
        "peak_rss_gb_per_actor": round(max(r["timings"]["peak_rss_mb"] for r in records) / 1024, 2),
        "generated_tokens_per_file": sorted({r["timings"]["generated_tokens"] for r in records}),
        "load_avg_before": round(load_before, 2), "mem_available_gb_before": round(mem_before, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--workers", default="1,2", help="comma-separated actor counts")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per actor")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the measurements here as JSON")
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="batchbench") as tmp:
        clips = make_clips(Path(tmp), args.clips, args.seconds)
        for rep in range(args.repeat):
            for workers in (int(w) for w in args.workers.split(",")):
                peak = max((r.get("peak_rss_gb_per_actor", 0.0) for r in runs), default=0.0)
                if peak and workers * peak > 0.9 * mem_available_gb():
                    note = {"workers": workers, "skipped": f"{workers} x {peak} GB does not fit "
                            f"in {mem_available_gb():.1f} GB available", "repeat": rep}
                    print(json.dumps(note), flush=True)
                    runs.append(note)
                    continue
                res = run_one(args.bundle, clips, Path(tmp) / f"out-{workers}-{rep}", workers,
                              args.threads, args.max_new_tokens)
                res["repeat"] = rep
                print(json.dumps(res), flush=True)
                runs.append(res)
    doc = {"bundle": args.bundle, "clips": args.clips, "seconds": args.seconds,
           "max_new_tokens": args.max_new_tokens, "cpus": os.cpu_count(),
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "runs": runs}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
