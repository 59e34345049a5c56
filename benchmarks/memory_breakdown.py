"""Where the memory of one `ask` goes: resident memory after each step, split anonymous / file.

Run in a fresh process (`python -m benchmarks.memory_breakdown BUNDLE [--opt KEY=VALUE ...]`, or as
the worker task "memory"). It loads the bundle step by step the way `EdgeMoss` does, runs a 30 s
clip + N tokens, and records after each step the resident memory split into anonymous pages
(heap: copies, arenas, activations, KV cache) and file-backed pages (memory-mapped weights and
libraries), from /proc/self/smaps_rollup, plus the peak (VmHWM) reached inside the step.
Session config entries given with --opt apply to both graphs (to measure e.g. prepacking).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .memory import peak_mb, reset_peak


def _rollup_mb() -> dict[str, float]:
    keys = {"Rss": "rss", "Anonymous": "anon", "Pss_File": "pss_file"}
    out = {}
    try:
        with open("/proc/self/smaps_rollup", encoding="utf-8") as fh:
            for line in fh:
                name = line.split(":")[0]
                if name in keys:
                    out[keys[name]] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    if "rss" in out and "anon" in out:
        out["file"] = round(out["rss"] - out["anon"], 1)
    return out


class Steps:
    """Records {step: rollup after it, peak inside it, seconds}."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        reset_peak()
        self._t = time.perf_counter()

    def mark(self, step: str) -> None:
        row = {"step": step, **_rollup_mb(), "peak_mb": peak_mb(),
               "seconds": round(time.perf_counter() - self._t, 2)}
        self.rows.append(row)
        reset_peak()
        self._t = time.perf_counter()


def breakdown(args: dict[str, Any]) -> dict[str, Any]:
    """Step-by-step resident memory of load + encode + prefill + decode of one clip."""
    steps = Steps()
    from edge_runtime.api import EdgeMoss  # noqa: F401  (imports numpy, onnxruntime, tokenizers)
    from edge_runtime.audio_encoder import AudioEncoder
    from edge_runtime.bundle import AUDIO_GRAPH, DECODER_GRAPH, verify_bundle
    from edge_runtime.decoder import Decoder
    from edge_runtime.embeddings import EmbeddingTable
    from edge_runtime.generation import CachedLM, GenerationOptions
    from edge_runtime.ort_session import make_session

    from .sessions import test_signal

    steps.mark("python + numpy + onnxruntime imported")
    bundle = verify_bundle(args["bundle"])
    opts = dict(args.get("opts", {}))
    threads = args.get("threads")
    # "arena=0" / "mem_pattern=0" are SessionOptions attributes, not config entries.
    for key in ("cpu_arena", "mem_pattern"):
        if key in opts:
            opts[key] = opts[key] not in ("0", "false", False)
    encoder = AudioEncoder(bundle.file(AUDIO_GRAPH), mode=bundle.encoder_mode, threads=threads)
    if opts:  # a variant: the audio graph with these settings instead of the runtime's own
        encoder.session = None
        encoder.session = make_session(bundle.file(AUDIO_GRAPH), threads=threads, **opts)
    steps.mark("audio graph session")
    session = make_session(bundle.file(DECODER_GRAPH), threads=threads, **opts)
    decoder = Decoder(bundle.file(DECODER_GRAPH), bundle.config, session=session,
                      max_context=int(args.get("max_context", 4096)))
    steps.mark("decoder session")
    table = EmbeddingTable.load(bundle.path, bundle.embeddings["kind"])
    ids = bundle.special_ids
    lm = CachedLM(decoder, table, bundle.config.num_deepstack, (ids["im_end"], ids["endoftext"]))
    steps.mark("embedding table (memory-mapped)")
    from edge_runtime.features import log_mel

    audio = encoder.encode(log_mel(test_signal(float(args.get("seconds", 30.0)))))
    steps.mark("encode 30 s (audio graph run)")
    n = audio.num_tokens
    prompt = np.concatenate([np.arange(1000, 1030), np.full(n, ids["audio_token"]), np.arange(2000, 2010)])
    slots = np.arange(30, 30 + n)
    logits = lm.append(prompt, slots, audio)
    steps.mark(f"prefill {prompt.size} positions")
    new = int(args.get("new_tokens", 100))
    result = lm.decode(logits, GenerationOptions(max_new_tokens=new, ignore_eos=True))
    steps.mark(f"decode {len(result.token_ids)} tokens")
    cache_mb = sum(b.nbytes for b in decoder._cache) / (1 << 20)
    used_mb = cache_mb * decoder.length / max(1, decoder.capacity)
    return {"rows": steps.rows, "opts": opts, "threads": threads or "default",
            "kv_cache": {"capacity": decoder.capacity, "length": decoder.length,
                         "allocated_mb": round(cache_mb, 1), "used_mb": round(used_mb, 1),
                         "dtype": str(np.dtype(decoder.cache_dtype))},
            "bundle_files_mb": {p.name: round(p.stat().st_size / (1 << 20), 1)
                                for p in sorted(Path(bundle.path).iterdir()) if p.is_file()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory_breakdown", description=__doc__)
    p.add_argument("bundle")
    p.add_argument("--opt", action="append", default=[], help="session config KEY=VALUE")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--new-tokens", type=int, default=100)
    args = p.parse_args(argv)
    opts = dict(o.split("=", 1) for o in args.opt)
    result = breakdown({"bundle": args.bundle, "opts": opts, "threads": args.threads,
                        "new_tokens": args.new_tokens})
    print(json.dumps(result))
    for row in result["rows"]:
        print(f"{row['step']:<40} rss {row.get('rss', 0):8.0f}  anon {row.get('anon', 0):8.0f}  "
              f"file {row.get('file', 0):8.0f}  peak {row['peak_mb']:8.0f}  {row['seconds']:6.1f} s")
    print("kv:", result["kv_cache"])
    import os

    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
