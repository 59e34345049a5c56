"""Requests per minute and latency of `edge-moss serve` on 127.0.0.1 (issue 14's benchmark).

Starts the server on a bundle in a subprocess, then sends N sequential transcription requests
(response_format=json) of one clip and a few concurrent ones, and prints one JSON object.

    python benchmarks/server_load.py --model /work/cache/bundle-4b-int4 --seconds 10 \
        --requests 5 --concurrent 3 --max-new-tokens 64

With random weights the model rarely stops on its own, so every window decodes
--max-new-tokens tokens: the figure is for that many tokens a request, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SSML = ("<speak>This is a ten second clip for the server benchmark. The speaker reads a few "
        "plain sentences at an even pace, with a short pause here."
        '<break time="600ms"/>Then a last sentence ends the recording.</speak>')


def make_clip(path: Path, seconds: float) -> Path:
    """Synthetic speech (espeak-ng + sox), padded or cut to `seconds`."""
    sys.path.insert(0, str(ROOT / "tests"))
    from speech_fixture import make_speech_wav
    import soundfile as sf

    raw = make_speech_wav(path.with_suffix(".raw.wav"), SSML, lead_s=0.3, tail_s=0.3)
    audio, rate = sf.read(raw, dtype="int16")
    want = int(seconds * rate)
    audio = audio[:want] if audio.size >= want else \
        __import__("numpy").pad(audio, (0, want - audio.size))
    sf.write(path, audio, rate, subtype="PCM_16")
    return path


def start_server(args) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "edge_runtime.cli", "serve", "--model", args.model, "--port", "0",
           "--max-new-tokens", str(args.max_new_tokens), "--max-queue", str(args.concurrent + 1),
           "--log-level", "warning"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 600
    for line in proc.stderr:
        found = re.search(r"at http://127\.0\.0\.1:(\d+)/v1", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
            return proc, int(found.group(1))
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"the server did not start: {line.strip() if 'line' in dir() else ''}")


def transcribe(port: int, clip: bytes) -> float:
    start = time.perf_counter()
    response = httpx.post(f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                          files={"file": ("clip.wav", clip)}, data={"response_format": "json"},
                          timeout=1800)
    response.raise_for_status()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--audio", default=None, help="clip to send (default: synthetic speech)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=5, help="sequential requests")
    parser.add_argument("--concurrent", type=int, default=3, help="requests sent at once")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip_path = Path(args.audio) if args.audio else make_clip(Path(tmp) / "clip.wav", args.seconds)
        clip = clip_path.read_bytes()
        t0 = time.perf_counter()
        proc, port = start_server(args)
        ready_s = time.perf_counter() - t0
        try:
            transcribe(port, clip)  # warm-up (first-run allocations), not counted
            sequential = [transcribe(port, clip) for _ in range(args.requests)]
            seq_total = sum(sequential)
            latencies: list[float] = []
            threads = [threading.Thread(target=lambda: latencies.append(transcribe(port, clip)))
                       for _ in range(args.concurrent)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=3600)
            burst_s = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(json.dumps({
        "model": args.model, "clip_s": args.seconds, "max_new_tokens": args.max_new_tokens,
        "threads": args.threads, "server_ready_s": round(ready_s, 1),
        "sequential": {"requests": args.requests, "latency_median_s": round(statistics.median(sequential), 2),
                       "latency_min_s": round(min(sequential), 2), "latency_max_s": round(max(sequential), 2),
                       "requests_per_minute": round(60 * args.requests / seq_total, 2)},
        "concurrent": {"requests": args.concurrent, "wall_s": round(burst_s, 2),
                       "latencies_s": sorted(round(x, 2) for x in latencies),
                       "requests_per_minute": round(60 * len(latencies) / burst_s, 2)},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
