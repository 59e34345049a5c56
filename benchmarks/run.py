"""`python -m benchmarks.run --size 4b`: build or reuse a fixture and its bundles, measure, report.

Writes RESULTS.md, results.json and PNG charts into --out (default benchmarks/). Intermediate
results are saved after every section under the cache folder, so `--resume` continues a run that
stopped, skipping the sections that already succeeded.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import measure
from .bundles import (AUDIO_INT8_DIR, backbone_params, bundle_sizes, decoder_weight_bytes,
                      ensure_bundle, ensure_checkpoint, ensure_int8_audio_graph)
from .machine import describe_machine, logical_cpus
from .subproc import run_worker
from .roofline import annotate

HERE = Path(__file__).resolve().parent
QUANTS = ("int4", "int8", "fp16")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--size", default="4b", choices=["4b", "small", "tiny"],
                   help="fixture shape (tiny/small: quick smoke runs)")
    p.add_argument("--only", default=None, help="comma-separated quantizations (default int4,int8,fp16)")
    p.add_argument("--skip-peers", action="store_true", help="skip the torch and onnxruntime-genai peers")
    p.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (>= 3)")
    p.add_argument("--checkpoint", default=None, help="an existing fixture/real checkpoint to use")
    p.add_argument("--out", default=str(HERE), help="folder for RESULTS.md, results.json and charts")
    p.add_argument("--cache", default=None, help="bundle cache (default OUT/cache)")
    p.add_argument("--resume", action="store_true", help="keep the sections of the last run that succeeded")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume, also rerun the sections that failed (default: keep their error)")
    fit = p.add_argument_group("edge fit (issue 13): bounded runs of chosen sections")
    fit.add_argument("--sections", default=None,
                     help="comma-separated: ask,crispasr,live,memory,roofline,rows (or 'edge-fit' for all); "
                          "runs only these, against --bundle, and writes RESULTS.md from them")
    fit.add_argument("--bundle", default=None, help="an existing bundle to measure (--sections)")
    fit.add_argument("--compact-bundle", default=None, help="also run `ask` once on this --compact bundle")
    fit.add_argument("--row-bundle", action="append", default=[], metavar="LABEL=PATH",
                     help="with section 'rows': one more row (e.g. '8B int4=path/to/bundle'): `ask` "
                          "at default threads, --repeats times; repeatable")
    fit.add_argument("--crispasr-driver", default=None, help="CrispASR mossdrv binary (peer row)")
    fit.add_argument("--crispasr-gguf", default=None, help="CrispASR GGUF of the same checkpoint")
    fit.add_argument("--new-tokens", type=int, default=100, help="tokens generated per request")
    fit.add_argument("--live-tokens", type=int, default=40, help="token cap per live utterance")
    return p.parse_args(argv)


def plan_for(size: str, repeats: int, log: Path) -> measure.Plan:
    plan = measure.Plan(repeats=max(3, repeats), log=log)
    if size == "4b":
        # A 2,000-token prefill costs minutes at 4B on a small CPU: one fill per context, and the
        # repeated prefill figure at a single moderate length.
        plan.prefill_tokens = [256]
        plan.sweep_prefill_tokens = 128
    return plan


class Sections:
    """Runs named sections, saving results after each; with resume, reuses earlier successes."""

    def __init__(self, path: Path, resume: bool, retry_failed: bool = False):
        self.path = path
        self.retry_failed = retry_failed
        self.data: dict[str, Any] = {}
        if resume and path.is_file():
            self.data = json.loads(path.read_text())

    def run(self, key: str, fn: Callable[[], Any]) -> Any:
        old = self.data.get(key)
        failed = isinstance(old, dict) and "error" in old
        if old is not None and not (failed and self.retry_failed):
            print(f"[bench] {key}: reusing the earlier {'error' if failed else 'result'}", flush=True)
            return old
        start = time.perf_counter()
        value = measure.guarded(key, fn)
        if isinstance(value, dict):
            value.setdefault("section_s", round(time.perf_counter() - start, 1))
        self.data[key] = value
        self.save()
        return value

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    work = cache / args.size
    work.mkdir(parents=True, exist_ok=True)
    log = work / "workers.log"
    quants = [q.strip() for q in args.only.split(",")] if args.only else list(QUANTS)
    for q in quants:
        if q not in ("fp32", "fp16", "int8", "int4"):
            raise SystemExit(f"--only: unknown quantization {q!r}")
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.sections:
        from .edge_fit_run import SECTIONS, run_sections

        chosen = list(SECTIONS) if args.sections == "edge-fit" else [x.strip() for x in args.sections.split(",")]
        bad = [x for x in chosen if x not in SECTIONS]
        if bad or not args.bundle:
            raise SystemExit(f"--sections: unknown {bad}" if bad else "--sections needs --bundle")
        return run_sections(args, chosen, work, out, command)
    plan = plan_for(args.size, args.repeats, log)
    sec = Sections(work / "partial.json", args.resume, args.retry_failed)
    started = time.perf_counter()

    sec.data["machine"] = describe_machine()
    sec.data.update(command=command, size=args.size, plan=plan.to_dict(), quants=quants)
    # In a child: the 1 GiB bandwidth arrays must not inflate this process's memory.
    limits = sec.run("limits", lambda: run_worker("limits", {"quick": args.size != "4b"}, log=log))
    checkpoint = ensure_checkpoint(args.size, cache, args.checkpoint)
    sec.data["checkpoint"] = str(checkpoint)
    params = backbone_params(checkpoint / "config.json")
    params["checkpoint_bytes"] = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    sec.data["params"] = params

    bundles: dict[str, Path] = {}
    for q in quants:
        info = sec.run(f"bundle_{q}", lambda q=q: _bundle_info(checkpoint, work / f"bundle-{q}", q, log))
        if "error" in info:
            continue
        bundles[q] = Path(info["path"])
        audio_key = f"audio_{info['audio_dtype']}"
        sec.run(audio_key, lambda q=q: measure.audio_graph(bundles[q] / "audio.onnx", plan))
        sec.run(f"decoder_{q}", lambda q=q: measure.decoder(bundles[q], plan))
        sec.run(f"e2e_{q}", lambda q=q: measure.end_to_end(bundles[q], plan))
        sec.run(f"live_{q}", lambda q=q: measure.live(bundles[q], plan))
        if q == quants[0]:
            _audio_and_peers(sec, bundles, q, checkpoint, work, plan, args.skip_peers)

    # Across resumed invocations: the sum of every section's own time (exports included).
    sec.data["total_s"] = round(sum(v.get("section_s", 0) for v in sec.data.values() if isinstance(v, dict)), 1)
    sec.data["this_invocation_s"] = round(time.perf_counter() - started, 1)
    results = assemble(sec.data, params, limits)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    from .charts import write_charts
    from .report import write_report

    charts = write_charts(results, out)
    write_report(results, out / "RESULTS.md", charts)
    print(f"[bench] wrote {out / 'RESULTS.md'} and results.json in {sec.data['total_s']:.0f} s", flush=True)
    return 0


def _bundle_info(checkpoint: Path, path: Path, quant: str, log: Path) -> dict[str, Any]:
    info = ensure_bundle(checkpoint, path, quant, log=log)
    manifest = json.loads((path / "manifest.json").read_text())
    info["sizes"] = bundle_sizes(path)
    info["weight_bytes"] = decoder_weight_bytes(path / "decoder.onnx")
    info["embedding_kind"] = manifest["embeddings"]["kind"]
    info["audio_dtype"] = manifest["quantization"]["audio"]
    info["decoder_quant"] = manifest["quantization"]["decoder"]
    return info


def _audio_and_peers(sec: Sections, bundles: dict[str, Path], q: str, checkpoint: Path, work: Path,
                     plan: measure.Plan, skip_peers: bool) -> None:
    """Sections run once, with the first (headline) quantization's bundle."""
    bundle = bundles[q]
    if sec.data[f"bundle_{q}"]["audio_dtype"] == "fp32":
        int8 = sec.run("audio_int8_graph",
                       lambda: ensure_int8_audio_graph(bundle / "audio.onnx", work / AUDIO_INT8_DIR, plan.log))
        if "error" not in int8:
            sec.run("audio_int8", lambda: measure.audio_graph(Path(int8["path"]), plan))
    sec.run("profile", lambda: measure.profile(bundle, work / "profile", plan))
    sec.run("thread_sweep", lambda: {"rows": measure.thread_sweep(bundle, plan)})
    if skip_peers:
        return
    genai = sec.run("peer_genai", lambda: measure.genai_peer(checkpoint, work, plan))
    if "error" in genai:
        layers = json.loads((checkpoint / "config.json").read_text())["language_config"]["num_hidden_layers"]
        sec.run("peer_genai_scaled", lambda: measure.genai_peer_scaled(checkpoint, work, plan, layers))
    # Like for like (1 thread, as edge-moss runs here), and torch's own default thread count.
    sec.run("peer_torch", lambda: measure.torch_peer(checkpoint, plan, threads=1))
    if logical_cpus() > 1:
        sec.run("peer_torch_default", lambda: measure.torch_peer(checkpoint, plan, threads=None))


def assemble(data: dict[str, Any], params: dict[str, int], limits: dict[str, Any]) -> dict[str, Any]:
    """The final results.json: per quantization, audio graphs, peers, sweep, profile, rooflines."""
    quants: dict[str, Any] = {}
    for q in data["quants"]:
        b = data.get(f"bundle_{q}", {})
        entry = {"bundle": b, "sizes": b.get("sizes"), "weight_bytes": b.get("weight_bytes"),
                 "export": b.get("export"), "decoder": data.get(f"decoder_{q}"),
                 "e2e": data.get(f"e2e_{q}"), "live": data.get(f"live_{q}")}
        if isinstance(entry["decoder"], dict) and "error" not in entry["decoder"] \
                and "error" not in limits:
            annotate(entry, limits, params, b.get("embedding_kind", "fp32"))
        quants[q] = entry
    audio = {k[len("audio_"):]: v for k, v in data.items()
             if k.startswith("audio_") and k != "audio_int8_graph"}
    return {
        "note": "random weights: only speed, memory and size are meaningful",
        "command": data.get("command"), "size": data.get("size"), "machine": data.get("machine"),
        "limits": limits, "params": params, "plan": data.get("plan"), "checkpoint": data.get("checkpoint"),
        "quants": quants, "audio": audio, "audio_int8_graph": data.get("audio_int8_graph"),
        "profile": data.get("profile"), "thread_sweep": data.get("thread_sweep"),
        "peers": {"torch_bf16": data.get("peer_torch"), "torch_bf16_default": data.get("peer_torch_default"),
                  "genai_int4": data.get("peer_genai"), "genai_int4_scaled": data.get("peer_genai_scaled")},
        "total_s": data.get("total_s"),
    }


if __name__ == "__main__":
    sys.exit(main())
