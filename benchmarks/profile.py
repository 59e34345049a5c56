"""A CPU profile of one end-to-end request with ONNX Runtime's profiler, summarised two ways:
by stage (mel, audio graph, prefill, decode; wall time and time inside ORT kernels) and by operator
type (where the kernel time goes, per stage and in all).

The request is what `EdgeMoss.ask` does, assembled from the runtime's parts so that the two graph
sessions can be created with profiling on.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .sessions import bench_session, run_audio, audio_inputs, test_signal


def _load_events(path: str) -> list[dict[str, Any]]:
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # a profile cut short: close the array
        return json.loads(text.rstrip().rstrip(",") + "]")


def kernel_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Node kernel executions: (op type, node name, start us, duration us)."""
    out = []
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            out.append({"op": e.get("args", {}).get("op_name", "?"), "node": e["name"][:-12],
                        "ts": e["ts"], "dur": e["dur"]})
    return out


def run_events(events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(start, end) us of each session run, in order."""
    runs = [(e["ts"], e["ts"] + e["dur"]) for e in events
            if e.get("cat") == "Session" and e.get("name") == "model_run"]
    return sorted(runs)


def summarise_ops(kernels: list[dict[str, Any]], top: int = 12) -> list[dict[str, Any]]:
    """Top operator types by total kernel time, with count and share."""
    total = sum(k["dur"] for k in kernels) or 1
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for k in kernels:
        by_op[k["op"]][0] += k["dur"]
        by_op[k["op"]][1] += 1
    rows = sorted(by_op.items(), key=lambda kv: -kv[1][0])[:top]
    return [{"op": op, "ms": round(v[0] / 1000, 2), "calls": int(v[1]),
             "share": round(v[0] / total, 4)} for op, v in rows]


def split_decoder_kernels(events: list[dict[str, Any]], prefill_runs: int
                          ) -> dict[str, list[dict[str, Any]]]:
    """Assign decoder kernels to 'prefill' (the first `prefill_runs` runs) or 'decode'."""
    runs = run_events(events)
    kernels = kernel_events(events)
    stages: dict[str, list[dict[str, Any]]] = {"prefill": [], "decode": []}
    for k in kernels:
        index = next((i for i, (a, b) in enumerate(runs) if a <= k["ts"] <= b), len(runs))
        stages["prefill" if index < prefill_runs else "decode"].append(k)
    return stages


def profile_run(args: dict[str, Any]) -> dict[str, Any]:
    """One profiled request: `seconds` of audio, `new_tokens` decoded (ignore_eos)."""
    from edge_runtime.audio_encoder import AudioFeatures
    from edge_runtime.bundle import AUDIO_GRAPH, DECODER_GRAPH, verify_bundle
    from edge_runtime.decoder import Decoder
    from edge_runtime.embeddings import EmbeddingTable
    from edge_runtime.features import log_mel
    from edge_runtime.generation import CachedLM, GenerationOptions
    from edge_runtime.prompt import PromptBuilder
    from edge_runtime.tokenizer import load_tokenizer

    bundle = verify_bundle(args["bundle"])
    out_dir = Path(args["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = args.get("threads", 1)
    audio_sess = bench_session(bundle.file(AUDIO_GRAPH), threads=threads,
                               profile_prefix=str(out_dir / "audio"))
    dec_sess = bench_session(bundle.file(DECODER_GRAPH), threads=threads,
                             profile_prefix=str(out_dir / "decoder"))
    decoder = Decoder(bundle.file(DECODER_GRAPH), max_context=2048, session=dec_sess)
    table = EmbeddingTable.load(bundle.path, bundle.embeddings["kind"])
    ids = bundle.special_ids
    lm = CachedLM(decoder, table, bundle.config.num_deepstack, (ids["im_end"], ids["endoftext"]))
    builder = PromptBuilder(load_tokenizer(bundle.tokenizer_dir), time_markers=bundle.time_markers)

    wall: dict[str, float] = {}
    samples = test_signal(args.get("seconds", 30.0), seed=3)
    t = time.perf_counter()
    mel = log_mel(samples)
    wall["mel"] = time.perf_counter() - t
    t = time.perf_counter()
    chunks, last = audio_inputs(mel, bundle.encoder_mode)
    embeds, deepstack = run_audio(audio_sess, chunks, last)
    feats = AudioFeatures(embeds=embeds, deepstack=deepstack)
    wall["audio_graph"] = time.perf_counter() - t
    t = time.perf_counter()
    lm.start_from_prefix(builder.prefix_ids())
    span = builder.interleaver().push(feats.num_tokens)
    prompt = np.concatenate([span.ids, np.asarray(builder.suffix_ids("Describe the audio."), np.int64)])
    logits = lm.append(prompt, span.audio_slots, feats)
    wall["prefill"] = time.perf_counter() - t
    t = time.perf_counter()
    result = lm.decode(logits, GenerationOptions(max_new_tokens=args.get("new_tokens", 20),
                                                 ignore_eos=True))
    wall["decode"] = time.perf_counter() - t

    audio_events = _load_events(audio_sess.end_profiling())
    dec_events = _load_events(dec_sess.end_profiling())
    stages = {"audio_graph": kernel_events(audio_events),
              **split_decoder_kernels(dec_events, prefill_runs=2)}
    all_kernels = [k for ks in stages.values() for k in ks]
    return {
        "seconds": args.get("seconds", 30.0), "prompt_tokens": int(lm.length - len(result.token_ids)),
        "new_tokens": len(result.token_ids), "threads": threads,
        "wall_s": {k: round(v, 4) for k, v in wall.items()},
        "kernel_s": {s: round(sum(k["dur"] for k in ks) / 1e6, 4) for s, ks in stages.items()},
        "top_ops": summarise_ops(all_kernels),
        "top_ops_by_stage": {s: summarise_ops(ks, top=6) for s, ks in stages.items()},
    }
