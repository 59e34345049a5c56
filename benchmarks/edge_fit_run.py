"""`python -m benchmarks.run --size 4b --sections ask,crispasr,live,memory,roofline ...`.

Runs the chosen edge-fit sections (benchmarks.edge_fit) against one bundle and, when given, one
CrispASR build, saving results after every section (`--resume` keeps the finished ones), then
writes RESULTS.md and edge_fit.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import edge_fit as ef
from .machine import describe_machine, logical_cpus, read_bandwidth, read_bandwidth_processes
from .subproc import run_worker

SECTIONS = ("ask", "crispasr", "live", "memory", "roofline", "rows")


def thread_counts() -> list[int]:
    return list(range(1, logical_cpus() + 1))


def run_sections(args, sections: list[str], work: Path, out: Path, command: str) -> int:
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "edge_fit_partial.json"
    data: dict[str, Any] = json.loads(state_path.read_text()) if args.resume and state_path.is_file() else {}
    log = ef.log_to(work / "edge_fit.log")
    bundle = Path(args.bundle)
    clip = work / "speech30.wav"
    if not clip.is_file():
        ef.speech_clip(clip)
    data.update(command=command, machine=describe_machine(), bundle=str(bundle),
                checkpoint=args.checkpoint, new_tokens=args.new_tokens, repeats=args.repeats,
                live_tokens=args.live_tokens)
    data["bundle_bytes"] = {p.name: p.stat().st_size for p in bundle.iterdir() if p.is_file()}

    def save() -> None:
        # Results and the report after every section: a run stopped later still leaves both.
        from .edge_fit_report import write_report

        state_path.write_text(json.dumps(data, indent=1, default=str))
        out.mkdir(parents=True, exist_ok=True)
        (out / "edge_fit.json").write_text(json.dumps(data, indent=1, default=str))
        write_report(data, out / "RESULTS.md")

    def section(key: str, fn) -> None:
        if key in data.get("done", []):
            log(f"{key}: reusing the earlier result")
            return
        log(f"{key} ...")
        start = time.perf_counter()
        try:
            data[key] = fn()
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            log(f"{key} FAILED: {exc}")
            data[key] = {"error": str(exc)}
        else:
            data.setdefault("done", []).append(key)
        if isinstance(data[key], dict):
            data[key]["section_s"] = round(time.perf_counter() - start, 1)
        save()

    reps, new = args.repeats, args.new_tokens
    default_t = _default_threads()
    others = [t for t in thread_counts() if t != default_t]
    why = ef.have(args.crispasr_driver, args.crispasr_gguf)
    f32 = ef.f32_clip(clip) if not why else None
    crisp_best = logical_cpus()  # measured first with repeats; the other counts once, later

    def crisp_rows(counts: list[int], runs: int) -> dict[str, Any]:
        rows = dict(data.get("crispasr") or {})
        rows["gguf_bytes"] = Path(args.crispasr_gguf).stat().st_size
        for t in counts:
            log(f"CrispASR -t {t}")
            rows[f"threads_{t}"] = ef.repeat(
                lambda t=t: ef.crispasr(Path(args.crispasr_driver), Path(args.crispasr_gguf), f32, t, new),
                runs, log)
        return rows

    # Headline figures first (the machine is shared and a run may be cut short), then the
    # other thread counts, then the rest.
    if "ask" in sections:
        def ask_default() -> dict[str, Any]:
            rows: dict[str, Any] = {"default_threads": default_t}
            log(f"edge-moss ask, default threads ({default_t})")
            rows["default"] = ef.repeat(lambda: ef.edge_ask(bundle, clip, None, new), reps, log)
            rows[f"threads_{default_t}"] = rows["default"]  # the default's runs are this count's
            return rows
        section("ask", ask_default)
    if "crispasr" in sections:
        if why:
            data["crispasr"] = {"skipped": why}
        else:
            section("crispasr", lambda: crisp_rows([crisp_best], reps))
    if "live" in sections:
        live_wav = work / "live2.wav"
        if not live_wav.is_file():
            ef.live_clip(live_wav)
        section("live", lambda: run_worker("live_paced", {"bundle": str(bundle), "clip": str(live_wav),
                                                          "new_tokens": args.live_tokens}))
    if "ask" in sections and others and isinstance(data.get("ask"), dict) and "error" not in data["ask"]:
        def ask_others() -> dict[str, Any]:
            """Adds the other thread counts to data["ask"]; returns a marker."""
            rows = dict(data["ask"])
            for t in others:
                log(f"edge-moss ask --threads {t}")
                rows[f"threads_{t}"] = ef.repeat(lambda t=t: ef.edge_ask(bundle, clip, t, new), 1, log)
            if args.compact_bundle:
                log("edge-moss ask, --compact bundle, default threads")
                rows["compact"] = ef.repeat(
                    lambda: ef.edge_ask(Path(args.compact_bundle), clip, None, new), 1, log)
            data["ask"] = rows
            return {"merged_into": "ask"}
        section("ask_threads", ask_others)
    if "crispasr" in sections and not why and isinstance(data.get("crispasr"), dict) \
            and "error" not in data["crispasr"]:
        rest = [t for t in thread_counts() if t != crisp_best]
        def crisp_others() -> dict[str, Any]:
            data["crispasr"] = crisp_rows(rest, 1)
            return {"merged_into": "crispasr"}
        if rest:
            section("crispasr_threads", crisp_others)
    if "rows" in sections and getattr(args, "row_bundle", None):
        def other_bundles() -> dict[str, Any]:
            rows: dict[str, Any] = {}
            for spec in args.row_bundle:
                label, _, path = spec.partition("=")
                if not path:
                    raise ValueError(f"--row-bundle takes LABEL=PATH, not {spec!r}")
                log(f"edge-moss ask, {label} ({path}), default threads")
                row = ef.repeat(lambda p=Path(path): ef.edge_ask(p, clip, None, new), reps, log)
                row["bundle"] = path
                row["bundle_bytes"] = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
                rows[label] = row
            return rows
        section("rows", other_bundles)
    if "memory" in sections:
        section("memory", lambda: run_worker("memory", {"bundle": str(bundle), "new_tokens": new}))
    if "roofline" in sections:
        def roofline() -> dict[str, Any]:
            return {"read_1t": read_bandwidth(1.0, threads=1),
                    "read_all": read_bandwidth_processes(1.0, procs=logical_cpus()),
                    "decoder_bytes": (bundle / "decoder.onnx.data").stat().st_size}
        section("roofline", roofline)
    from .edge_fit_report import write_report

    out.mkdir(parents=True, exist_ok=True)
    (out / "edge_fit.json").write_text(json.dumps(data, indent=1, default=str))
    write_report(data, out / "RESULTS.md")
    log(f"wrote {out / 'RESULTS.md'} and edge_fit.json")
    return 0


def _default_threads() -> int:
    from edge_runtime.ort_session import default_threads

    return default_threads()
