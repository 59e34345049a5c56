"""A/B of ONNX Runtime session settings on a bundle's decoder: session creation, one prefill and
decode steps, each setting in its own process, alternated round by round.

    python -m benchmarks.decoder_settings BUNDLE "spin=session.intra_op.allow_spinning=1" \
        "no-spin=session.intra_op.allow_spinning=0" [--level extended] [--rounds 2]

A setting is NAME=KEY=VALUE (a session config entry) or NAME=level:LEVEL (the graph optimization
level). Random inputs: only the timings mean anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def measure(graph: str, setting: str, threads: int, prefill: int, steps: int) -> dict:
    """One process's figures for one setting (run in a child: a fresh session and allocator)."""
    import numpy as np
    import onnxruntime as ort

    from edge_runtime.decoder import Decoder
    from edge_runtime.ort_session import DEFAULT_OPTIMIZATION, session_options

    level = DEFAULT_OPTIMIZATION
    entries: dict[str, str] = {}
    if setting.startswith("level:"):
        level = setting.split(":", 1)[1]
    elif setting:
        key, _, value = setting.partition("=")
        entries[key] = value
    so = session_options(threads, optimization=level)
    for key, value in entries.items():
        so.add_session_config_entry(key, value)  # replaces the edge-moss default for that key
    start = time.perf_counter()
    session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
    create = time.perf_counter() - start
    dec = Decoder(graph, session=session, max_context=max(1024, prefill + steps + 1))
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((prefill, dec.dims.hidden_size)) * 0.02).astype(np.float32)
    ds = np.zeros((dec.dims.num_deepstack, prefill, dec.dims.hidden_size), np.float32)
    start = time.perf_counter()
    dec.forward(x, ds)
    prefill_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        dec.forward(x[:1], ds[:, :1])
        times.append(time.perf_counter() - start)
    return {"create_s": create, "prefill_s": prefill_s,
            "decode_tok_s": 1.0 / statistics.median(times[min(5, steps - 1):])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decoder_settings", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("settings", nargs="*", help="NAME=KEY=VALUE or NAME=level:LEVEL")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--prefill", type=int, default=428)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    graph = str(Path(args.bundle) / "decoder.onnx")
    if args.child:
        from edge_runtime.ort_session import default_threads

        print(json.dumps(measure(graph, args.child[1], args.threads or default_threads(),
                                 args.prefill, args.steps)))
        return 0
    if not args.settings:
        p.error("name at least one setting")
    named = [s.partition("=")[::2] for s in args.settings]
    results: dict[str, list[dict]] = {name: [] for name, _ in named}
    for _ in range(args.rounds):
        for name, setting in named:
            cmd = [sys.executable, "-m", "benchmarks.decoder_settings", args.bundle, "--child", name,
                   setting, "--prefill", str(args.prefill), "--steps", str(args.steps)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
    print(f"| setting | runs | session creation s | prefill {args.prefill} s | decode tok/s (each run) |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        each = " / ".join(f"{r['decode_tok_s']:.2f}" for r in runs)
        print(f"| {name} | {len(runs)} | {med['create_s']:.2f} | {med['prefill_s']:.2f} | {each} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
