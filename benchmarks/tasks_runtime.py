"""Measurements of the edge-moss runtime, each meant to run in its own child process.

Every task takes a dict of arguments and returns a JSON-able dict of raw samples (one entry per
repeat); statistics are computed by the parent (benchmarks.stats).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .memory import StagePeaks, rss_mb
from .sessions import audio_inputs, bench_session, run_audio, test_signal


def _embedding_rows(bundle: Path, count: int, seed: int = 0) -> np.ndarray:
    """Real embedding rows of random token ids: realistic activations for a prefill."""
    from edge_runtime.bundle import verify_bundle
    from edge_runtime.embeddings import EmbeddingTable

    b = verify_bundle(bundle)
    table = EmbeddingTable.load(b.path, b.embeddings["kind"])
    ids = np.random.default_rng(seed).integers(1000, 100000, size=count)
    return np.ascontiguousarray(table.lookup(ids), dtype=np.float32)


def audio_graph(args: dict[str, Any]) -> dict[str, Any]:
    """Audio graph seconds per clip of `seconds`, per encoder mode (the first run reported apart)."""
    from edge_runtime.features import log_mel

    peaks = StagePeaks()
    peaks.start()
    t = time.perf_counter()
    session = bench_session(args["graph"], threads=args.get("threads", 1),
                            spinning=args.get("spinning", False))
    load_s = time.perf_counter() - t
    peaks.end("audio_load")
    samples = test_signal(args.get("seconds", 30.0))
    t = time.perf_counter()
    mel = log_mel(samples)
    mel_s = time.perf_counter() - t
    out: dict[str, Any] = {"load_s": load_s, "mel_s": mel_s, "mel_frames": int(mel.shape[1]),
                           "seconds": args.get("seconds", 30.0), "modes": {}}
    for mode in args.get("modes", ["chunked", "full"]):
        chunks, last = audio_inputs(mel, mode)
        peaks.start()
        runs, tokens = [], 0
        for _ in range(args.get("repeats", 3) + 1):
            t = time.perf_counter()
            embeds, _ = run_audio(session, chunks, last)
            runs.append(time.perf_counter() - t)
            tokens = int(embeds.shape[0])
        peaks.end(f"audio_{mode}")
        out["modes"][mode] = {"first_s": runs[0], "runs_s": runs[1:], "audio_tokens": tokens,
                              "chunks": int(chunks.shape[0])}
    out["peaks_mb"] = peaks.peaks
    out["peak_resettable"] = peaks.resettable
    return out


def decoder(args: dict[str, Any]) -> dict[str, Any]:
    """Prefill tokens/s at several lengths and decode seconds/token at several context lengths.

    The cache for a context of N is filled by one real prefill of N embedding rows (timed: that is
    also the prefill figure at that length); each repeat then rolls back to N and times `steps`
    single-token steps after one untimed warm-up step.
    """
    from edge_runtime.bundle import DECODER_GRAPH
    from edge_runtime.decoder import Decoder

    bundle = Path(args["bundle"])
    repeats, steps = args.get("repeats", 3), args.get("steps", 16)
    contexts = list(args.get("contexts", [100, 2000]))
    prefill_lengths = list(args.get("prefill_tokens", []))
    longest = max(contexts + prefill_lengths)
    peaks = StagePeaks()
    base_rss = rss_mb()
    peaks.start()
    t = time.perf_counter()
    session = bench_session(bundle / DECODER_GRAPH, threads=args.get("threads", 1),
                            spinning=args.get("spinning", False))
    dec = Decoder(bundle / DECODER_GRAPH, max_context=longest + steps + 8, session=session)
    load_s = time.perf_counter() - t
    peaks.end("decoder_load")
    loaded_rss = rss_mb()
    rows = _embedding_rows(bundle, longest + steps + 8)
    out: dict[str, Any] = {"load_s": load_s, "threads": args.get("threads", 1),
                           "spinning": bool(args.get("spinning", False)),
                           "weights_rss_mb": round(loaded_rss - base_rss, 1),
                           "prefill": {}, "decode": {}}
    peaks.start()
    for n in prefill_lengths:
        runs = []
        for _ in range(repeats):
            dec.reset()
            t = time.perf_counter()
            dec.forward(rows[:n])
            runs.append(time.perf_counter() - t)
        out["prefill"][str(n)] = {"runs_s": runs, "tokens": n}
    peaks.end("prefill")
    for ctx in contexts:
        dec.reset()
        peaks.start()
        t = time.perf_counter()
        dec.forward(rows[:ctx])
        fill_s = time.perf_counter() - t
        peaks.end("prefill")
        peaks.start()
        step_medians, all_steps = [], []
        for _ in range(repeats):
            dec.rollback(ctx)
            dec.forward(rows[ctx:ctx + 1])  # warm-up step, not timed
            times = []
            for i in range(steps):
                row = rows[ctx + 1 + i: ctx + 2 + i]
                t = time.perf_counter()
                dec.forward(row)
                times.append(time.perf_counter() - t)
            step_medians.append(float(np.median(times)))
            all_steps.extend(times)
        peaks.end("decode")
        out["decode"][str(ctx)] = {"step_s": step_medians, "fill_prefill_s": fill_s,
                                   "steps_per_repeat": steps,
                                   "p90_step_s": float(np.percentile(all_steps, 90))}
        if str(ctx) not in out["prefill"]:
            out["prefill"][str(ctx)] = {"runs_s": [fill_s], "tokens": ctx}
    out["peaks_mb"] = peaks.peaks
    out["peak_resettable"] = peaks.resettable
    return out


def end_to_end(args: dict[str, Any]) -> dict[str, Any]:
    """`EdgeMoss.ask` on a clip: wall time, time to first token, real-time factor, per repeat."""
    from edge_runtime.api import EdgeMoss

    peaks = StagePeaks()
    peaks.start()
    t = time.perf_counter()
    model = EdgeMoss(args["bundle"], threads=args.get("threads"))
    load_s = time.perf_counter() - t
    peaks.end("load")
    seconds = args.get("seconds", 30.0)
    samples = test_signal(seconds, seed=1)
    runs = []
    peaks.start()
    for _ in range(args.get("repeats", 3)):
        t = time.perf_counter()
        result = model.ask((samples, 16000), "What is said in this audio?",
                           max_new_tokens=args.get("new_tokens", 100), ignore_eos=True,
                           temperature=0)
        wall = time.perf_counter() - t
        timings = dict(result.timings)
        runs.append({"wall_s": wall, "ttft_s": wall - timings["decode_s"],
                     "rtf": wall / seconds, "new_tokens": len(result.token_ids),
                     "prompt_tokens": result.prompt_tokens, "audio_tokens": result.audio_tokens,
                     **{k: v for k, v in timings.items() if k != "load_s"}})
    peaks.end("ask")
    return {"load_s": load_s, "seconds": seconds, "runs": runs, "peaks_mb": peaks.peaks,
            "process_peak_mb": peaks.process_peak}


def live_latency(args: dict[str, Any]) -> dict[str, Any]:
    """End of speech -> final text: a 10 s utterance whose full 4 s chunks are already in the cache.

    Timed per repeat: encoding the 2 s tail chunk, appending its span, <|audio_eos|> and the
    question's closing tokens, and decoding `new_tokens` tokens (ignore_eos).
    """
    from edge_runtime.api import EdgeMoss
    from edge_runtime.generation import GenerationOptions
    from edge_runtime.model_facts import CHUNK_FRAMES

    model = EdgeMoss(args["bundle"], threads=args.get("threads"))
    seconds = args.get("seconds", 10.0)
    mel = model.features(test_signal(seconds, seed=2))
    builder = model.prompt_builder()
    lm = model.lm
    lm.start_from_prefix(builder.prefix_ids())
    span = builder.interleaver()
    full = mel.shape[1] // CHUNK_FRAMES
    if full * CHUNK_FRAMES == mel.shape[1]:
        full -= 1  # keep a tail to process after the end of speech
    for c in range(full):
        feats = model.encoder.encode_chunks(mel[None, :, c * CHUNK_FRAMES:(c + 1) * CHUNK_FRAMES],
                                            CHUNK_FRAMES)
        piece = span.push(feats.num_tokens)
        lm.append(piece.ids, piece.audio_slots, feats)
    cached = lm.length
    tail = mel[:, full * CHUNK_FRAMES:]
    padded = np.zeros((1, mel.shape[0], CHUNK_FRAMES), dtype=np.float32)
    padded[0, :, :tail.shape[1]] = tail
    suffix = np.asarray(builder.suffix_ids("Transcribe the audio."), dtype=np.int64)
    runs = []
    for _ in range(args.get("repeats", 3)):
        lm.rollback(cached)
        tail_span = builder.interleaver()
        tail_span.audio_tokens = span.audio_tokens  # continue the marker count of the cached span
        t0 = time.perf_counter()
        feats = model.encoder.encode_chunks(padded if full else tail[None], tail.shape[1])
        t1 = time.perf_counter()
        piece = tail_span.push(feats.num_tokens)
        ids = np.concatenate([piece.ids, suffix])
        logits = lm.append(ids, piece.audio_slots, feats)
        t2 = time.perf_counter()
        opts = GenerationOptions(max_new_tokens=args.get("new_tokens", 20), ignore_eos=True)
        result = lm.decode(logits, opts)
        t3 = time.perf_counter()
        runs.append({"latency_s": t3 - t0, "tail_encode_s": t1 - t0, "tail_prefill_s": t2 - t1,
                     "decode_s": t3 - t2, "tail_tokens": int(ids.size),
                     "new_tokens": len(result.token_ids)})
    return {"utterance_s": seconds, "cached_positions": cached, "tail_frames": int(tail.shape[1]),
            "runs": runs}
