"""Each measurement: run its child process(es), turn raw samples into median + spread.

Every figure is repeated (`Plan.repeats`, at least 3) and reported as median with min and max.
Peak RSS comes from the child's own rusage (the whole process) and, inside it, per stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .stats import rate, summary
from .subproc import WorkerError, run_worker


@dataclass
class Plan:
    """What to run and how often."""

    repeats: int = 3
    decode_steps: int = 16
    contexts: list[int] = field(default_factory=lambda: [100, 2000])
    prefill_tokens: list[int] = field(default_factory=lambda: [128, 512])
    clip_s: float = 30.0
    new_tokens: int = 100
    live_new_tokens: int = 20
    live_utterance_s: float = 10.0
    thread_sweep: list[tuple[int, bool]] = field(
        default_factory=lambda: [(1, False), (1, True), (2, False), (2, True)])
    sweep_prefill_tokens: int = 128
    log: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("log")
        return d


def guarded(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a measurement; a failure becomes {"error": ...} so the rest of the run goes on."""
    print(f"[bench] {label} ...", flush=True)
    try:
        result = fn()
    except (WorkerError, RuntimeError, OSError, ValueError) as exc:
        print(f"[bench] {label} FAILED: {exc}", flush=True)
        return {"error": str(exc)}
    return result


def audio_graph(graph: Path, plan: Plan) -> dict[str, Any]:
    raw = run_worker("audio", {"graph": str(graph), "seconds": plan.clip_s, "repeats": plan.repeats,
                               "modes": ["chunked", "full"]}, log=plan.log)
    per = 30.0 / raw["seconds"]
    modes = {}
    for mode, m in raw["modes"].items():
        modes[mode] = {"seconds_per_30s": summary([s * per for s in m["runs_s"]]),
                       "first_run_s": round(m["first_s"] * per, 3), "audio_tokens": m["audio_tokens"],
                       "chunks": m["chunks"]}
    return {"load_s": round(raw["load_s"], 2), "mel_s_per_30s": round(raw["mel_s"] * per, 3),
            "modes": modes, "peaks_mb": raw["peaks_mb"], "process_peak_rss_mb": raw["process_peak_rss_mb"]}


def _decoder_stats(raw: dict[str, Any]) -> dict[str, Any]:
    prefill = {n: {"tokens_per_s": rate(p["tokens"], p["runs_s"]), "seconds": summary(p["runs_s"])}
               for n, p in raw["prefill"].items()}
    decode = {c: {"tokens_per_s": rate(1.0, d["step_s"]), "step_ms": summary([s * 1e3 for s in d["step_s"]]),
                  "p90_step_ms": round(d["p90_step_s"] * 1e3, 2), "steps_per_repeat": d["steps_per_repeat"]}
              for c, d in raw["decode"].items()}
    return {"load_s": round(raw["load_s"], 2), "threads": raw["threads"], "spinning": raw["spinning"],
            "weights_rss_mb": raw["weights_rss_mb"], "prefill": prefill, "decode": decode,
            "peaks_mb": raw["peaks_mb"], "process_peak_rss_mb": raw["process_peak_rss_mb"]}


def decoder(bundle: Path, plan: Plan, threads: int = 1, spinning: bool = False,
            contexts: list[int] | None = None, prefill_tokens: list[int] | None = None) -> dict[str, Any]:
    raw = run_worker("decoder", {
        "bundle": str(bundle), "threads": threads, "spinning": spinning, "repeats": plan.repeats,
        "steps": plan.decode_steps, "contexts": contexts if contexts is not None else plan.contexts,
        "prefill_tokens": prefill_tokens if prefill_tokens is not None else plan.prefill_tokens,
    }, log=plan.log)
    return _decoder_stats(raw)


def thread_sweep(bundle: Path, plan: Plan) -> list[dict[str, Any]]:
    """Decode (shortest context) and prefill speed for each (intra-op threads, spinning) setting."""
    rows = []
    for threads, spinning in plan.thread_sweep:
        res = guarded(f"threads={threads} spinning={spinning}",
                      lambda: decoder(bundle, plan, threads, spinning, contexts=[min(plan.contexts)],
                                      prefill_tokens=[plan.sweep_prefill_tokens]))
        rows.append({"threads": threads, "spinning": spinning, **res})
    return rows


def end_to_end(bundle: Path, plan: Plan) -> dict[str, Any]:
    raw = run_worker("e2e", {"bundle": str(bundle), "seconds": plan.clip_s, "repeats": plan.repeats,
                             "new_tokens": plan.new_tokens}, log=plan.log)
    runs = raw["runs"]

    def col(key: str) -> dict[str, Any]:
        return summary([r[key] for r in runs])

    return {"load_s": round(raw["load_s"], 2), "clip_s": raw["seconds"],
            "wall_s": col("wall_s"), "rtf": col("rtf"), "ttft_s": col("ttft_s"),
            "encode_s": col("encode_s"), "prefill_s": col("prefill_s"), "decode_s": col("decode_s"),
            "decode_tokens_per_s": col("decode_tokens_per_s"),
            "prompt_tokens": runs[0]["prompt_tokens"], "audio_tokens": runs[0]["audio_tokens"],
            "new_tokens": runs[0]["new_tokens"], "peaks_mb": raw["peaks_mb"],
            "process_peak_rss_mb": raw["process_peak_rss_mb"]}


def live(bundle: Path, plan: Plan) -> dict[str, Any]:
    raw = run_worker("live", {"bundle": str(bundle), "seconds": plan.live_utterance_s,
                              "repeats": plan.repeats, "new_tokens": plan.live_new_tokens}, log=plan.log)
    runs = raw["runs"]
    return {"utterance_s": raw["utterance_s"], "cached_positions": raw["cached_positions"],
            "tail_frames": raw["tail_frames"], "new_tokens": runs[0]["new_tokens"],
            "latency_s": summary([r["latency_s"] for r in runs]),
            "tail_encode_s": summary([r["tail_encode_s"] for r in runs]),
            "tail_prefill_s": summary([r["tail_prefill_s"] for r in runs]),
            "decode_s": summary([r["decode_s"] for r in runs]),
            "process_peak_rss_mb": raw["process_peak_rss_mb"]}


def torch_peer(checkpoint: Path, plan: Plan, threads: int | None = None) -> dict[str, Any]:
    raw = run_worker("torch", {"checkpoint": str(checkpoint), "repeats": plan.repeats,
                               "steps": max(4, plan.decode_steps // 2), "contexts": plan.contexts,
                               "prefill_tokens": [min(plan.prefill_tokens)], "threads": threads},
                     log=plan.log)
    prefill = {n: {"tokens_per_s": rate(p["tokens"], p["runs_s"]), "seconds": summary(p["runs_s"])}
               for n, p in raw["prefill"].items()}
    decode = {c: {"tokens_per_s": rate(1.0, d["step_s"]), "step_ms": summary([s * 1e3 for s in d["step_s"]])}
              for c, d in raw["decode"].items()}
    return {"load_s": round(raw["load_s"], 2), "threads": raw["threads"], "dtype": raw["dtype"],
            "prefill": prefill, "decode": decode, "peaks_mb": raw["peaks_mb"],
            "process_peak_rss_mb": raw["process_peak_rss_mb"]}


def genai_peer(checkpoint: Path, work: Path, plan: Plan, threads: int = 1) -> dict[str, Any]:
    from .genai_peer import build_genai_model, model_bytes, write_qwen3_checkpoint

    qwen = write_qwen3_checkpoint(checkpoint, work / "qwen3-backbone")
    build = build_genai_model(qwen, work / "genai-int4", "int4", log=plan.log)
    shutil_rm = __import__("shutil").rmtree
    shutil_rm(qwen, ignore_errors=True)  # only the builder needs it; keep the cache lean
    raw = run_worker("genai", {"model": build["path"], "contexts": plan.contexts,
                               "steps": plan.decode_steps, "repeats": plan.repeats,
                               "threads": threads}, log=plan.log)
    decode, prefill = {}, {}
    for key, d in raw.items():
        if not key.startswith("ctx_"):
            continue
        ctx = key[4:]
        decode[ctx] = {"tokens_per_s": rate(1.0, d["step_s"]),
                       "step_ms": summary([s * 1e3 for s in d["step_s"]])}
        prefill[ctx] = {"tokens_per_s": rate(d["prefill_tokens"], d["prefill_s"]),
                        "seconds": summary(d["prefill_s"])}
    return {"build": build, "threads": threads, "model_bytes": model_bytes(build["path"]),
            "decode": decode, "prefill": prefill,
            "process_peak_rss_mb": raw["process_peak_rss_mb"]}


def profile(bundle: Path, out_dir: Path, plan: Plan) -> dict[str, Any]:
    return run_worker("profile", {"bundle": str(bundle), "out_dir": str(out_dir),
                                  "seconds": plan.clip_s, "new_tokens": plan.live_new_tokens},
                      log=plan.log)


def genai_peer_scaled(checkpoint: Path, work: Path, plan: Plan, full_layers: int,
                      layer_counts: tuple[int, ...] = (6, 12), threads: int = 1) -> dict[str, Any]:
    """When the builder cannot hold the whole backbone in memory: build same-width models with
    fewer layers, time their decode steps, and extrapolate the step time linearly in the layer
    count (step = fixed part (embedding, final norm, lm_head) + layers * per-layer part)."""
    import shutil

    import numpy as np

    from .genai_peer import build_genai_model, write_qwen3_checkpoint

    points: dict[int, Any] = {}
    for n in layer_counts:
        qwen = write_qwen3_checkpoint(checkpoint, work / f"qwen3-{n}layers", layers=n)
        build = build_genai_model(qwen, work / f"genai-int4-{n}layers", "int4", log=plan.log)
        shutil.rmtree(qwen, ignore_errors=True)
        raw = run_worker("genai", {"model": build["path"], "contexts": plan.contexts,
                                   "steps": plan.decode_steps, "repeats": plan.repeats,
                                   "threads": threads}, log=plan.log)
        points[n] = {"build": build, "process_peak_rss_mb": raw["process_peak_rss_mb"],
                     "step_ms": {k[4:]: summary([s * 1e3 for s in v["step_s"]])
                                 for k, v in raw.items() if k.startswith("ctx_")}}
    decode = {}
    for ctx in (str(c) for c in plan.contexts):
        xs = np.array(list(points), dtype=np.float64)
        ys = np.array([points[n]["step_ms"][ctx]["median"] for n in points])
        slope, intercept = np.polyfit(xs, ys, 1)
        step_ms = intercept + slope * full_layers
        decode[ctx] = {"tokens_per_s": {"median": round(1e3 / step_ms, 2), "min": round(1e3 / step_ms, 2),
                                        "max": round(1e3 / step_ms, 2), "n": 1},
                       "step_ms_extrapolated": round(step_ms, 2), "per_layer_ms": round(slope, 3),
                       "fixed_ms": round(intercept, 2)}
    return {"method": f"linear extrapolation to {full_layers} layers from builds with "
                      f"{', '.join(map(str, layer_counts))} layers of the same width",
            "threads": threads, "points": {str(k): v for k, v in points.items()}, "decode": decode,
            "extrapolated": True}
