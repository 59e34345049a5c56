"""RESULTS.md from an edge-fit run (benchmarks.edge_fit_run): the issue-13 table, ratios against
CrispASR, targets met or the distance, the memory breakdown and the live latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GIB = 1 << 30


def _med(section: dict[str, Any] | None, key: str) -> float | None:
    if not isinstance(section, dict) or "median" not in section:
        return None
    return section["median"].get(key)


def _best(rows: dict[str, Any], prefix: str = "threads_") -> tuple[str | None, dict[str, Any] | None]:
    """The thread count whose median time after load is lowest."""
    best, best_t = None, None
    for key, row in rows.items():
        if not key.startswith(prefix) or _med(row, "after_load_s") is None:
            continue
        if best is None or _med(row, "after_load_s") < _med(rows[best], "after_load_s"):
            best, best_t = key, row
    return (best[len(prefix):] if best else None), best_t


def _fmt(v: float | None, unit: str = "", digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}{unit}"


def _ratio(ours: float | None, theirs: float | None, higher_is_better: bool) -> float | None:
    if ours is None or theirs is None or ours == 0 or theirs == 0:
        return None
    return ours / theirs if higher_is_better else theirs / ours


def _rate(row: dict[str, Any] | None, tokens_key: str = "prompt_tokens") -> float | None:
    p, n = _med(row, "prefill_s"), _med(row, tokens_key)
    return n / p if p and n else None


def _load_note(machine: dict[str, Any]) -> str:
    """What the load average at the start says about the run (more than half the CPUs busy with
    other work: the figures are pessimistic)."""
    load, cpus = machine.get("load_average_at_start"), machine.get("logical_cpus")
    if not load or not cpus:
        return "Load before the run unknown: compare the ratios, measured in the same run."
    if load[0] > 0.5 * cpus:
        return ("**The machine was busy with other jobs when the run started**: figures are "
                "medians of repeats, pessimistic and noisy; compare the ratios, measured in the "
                "same run.")
    return ("The machine was otherwise idle when the run started; figures are medians of "
            "repeats; compare the ratios, measured in the same run.")


def write_report(data: dict[str, Any], path: Path) -> None:
    m = data.get("machine", {})
    lines = ["# Benchmark results: edge fit at 4B shape (issue 13)", "",
             "Random weights: only speed, memory and size mean anything here, never the text.", "",
             f"- Command: `{data.get('command')}`",
             f"- Machine: {m.get('cpu', '?')} VM ({', '.join(m.get('cpu_flags', []))}), "
             f"{m.get('logical_cpus', '?')} vCPUs, {m.get('memory_gb', '?')} GB RAM, onnxruntime "
             f"{m.get('onnxruntime', '?')}, {m.get('date', '')}, load average at start "
             f"{m.get('load_average_at_start')}. {_load_note(m)}",
             f"- Bundle: `{data.get('bundle')}` ({sum(data.get('bundle_bytes', {}).values()) / 1e9:.2f} GB); "
             f"checkpoint `{data.get('checkpoint')}`; 30 s synthetic speech clip (espeak-ng), prompt "
             f"\"Transcribe the audio.\", {data.get('new_tokens')} generated tokens (ignore EOS).",
             "- Every row is a whole command under `/usr/bin/time -v`; peak RSS is its maximum "
             "resident set. Details and what was tried: [NOTES.md](NOTES.md).", ""]
    lines += _speed_table(data)
    lines += _rows_table(data)
    lines += _memory_table(data)
    lines += _live_table(data)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _speed_table(data: dict[str, Any]) -> list[str]:
    ask = data.get("ask") or {}
    crisp = data.get("crispasr") or {}
    if "error" in ask or not ask:
        return ["## Speed", "", f"edge-moss rows missing: {ask.get('error', 'section not run')}", ""]
    default = ask.get("default")
    best_t, best = _best(ask)
    c_t, c_best = (None, None)
    crisp_note = crisp.get("skipped") or crisp.get("error") or (None if crisp else "section not run")
    if not crisp_note:
        c_t, c_best = _best(crisp)
    roof = data.get("roofline") or {}
    bw = None
    if "read_all" in roof:
        bw = max(roof["read_all"]["best_gbps"], roof["read_1t"]["best_gbps"])
    roof_tok = bw * 1e9 / roof["decoder_bytes"] if bw else None
    d_threads = ask.get("default_threads")
    cols = [("edge-moss default (no flags)" + (f", {d_threads} threads" if d_threads else ""), default),
            (f"edge-moss best (`--threads {best_t}`)", best),
            (f"CrispASR best (`-t {c_t}`)" if c_t else "CrispASR", c_best)]
    head = "| 4B, 30 s clip + %d tokens | " % data.get("new_tokens", 100) + " | ".join(c for c, _ in cols) + \
        " | default vs CrispASR | best vs CrispASR | target |"
    out = ["## Speed and memory, side by side", "", head, "|" + "---|" * (len(cols) + 4)]

    def row(label: str, key: str, unit: str, higher: bool, target: str, fn=None, digits: int = 2):
        vals = [(fn(r) if fn else _med(r, key)) if r else None for _, r in cols]
        r1 = _ratio(vals[0], vals[2], higher)
        r2 = _ratio(vals[1], vals[2], higher)
        cells = [_fmt(v, unit, digits) for v in vals]
        out.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(r1, '×')} | {_fmt(r2, '×')} | {target} |")

    row("load", "load_s", " s", False, "≤ 2 s")
    row("audio encoder + adapter + DeepStack", "encode_s", " s", False, "≥ 4× CrispASR")
    row("prefill", "prefill_s", " s", False, "≥ 3× CrispASR")
    row("prefill rate", "", " tok/s", True, "", fn=_rate, digits=1)
    row("decode", "decode_tok_s", " tok/s", True, "≥ 1.75× CrispASR, ≥ 90 % roofline")
    row("total after load", "after_load_s", " s", False, "")
    row("whole command (load included)", "command_s", " s", False, "≤ 33 s (RTF 1.1)")
    row("RTF, whole command", "", "", False, "≤ 1.1", fn=lambda r: _med(r, "command_s") / 30.0)
    row("peak RSS", "peak_rss_gib", " GiB", False, "≤ 3.8 GiB")
    out.append("")
    if crisp_note:
        out += [f"CrispASR row: {crisp_note}.", ""]
    out.append("Ratios are speed-ups (CrispASR time / edge-moss time; rate / rate) and, for "
               "memory and load, CrispASR / edge-moss; above 1× edge-moss is ahead.")
    if roof_tok:
        dec = [_med(r, "decode_tok_s") for _, r in cols[:2]]
        out.append(f"Decode roofline: {bw:.1f} GB/s read bandwidth (best of 1 thread and all CPUs, "
                   f"this run) / {roof['decoder_bytes'] / 1e9:.2f} GB of decoder weights a token = "
                   f"{roof_tok:.2f} tok/s; default reaches {_fmt(100 * dec[0] / roof_tok if dec[0] else None, ' %', 0)}, "
                   f"best {_fmt(100 * dec[1] / roof_tok if dec[1] else None, ' %', 0)}.")
        held = decoder_held_bytes(data)
        if held and dec[0]:
            out.append(f"Against the decoder as ONNX Runtime holds it ({held / 1e9:.2f} GB: the prepacked "
                       f"layout adds an fp32 block sum per block, memory section's decoder step), the "
                       f"roofline is {bw * 1e9 / held:.2f} tok/s and the default reaches "
                       f"{100 * dec[0] * held / (bw * 1e9):.0f} %.")
    if c_best and c_best.get("median", {}).get("prompt_tokens"):
        out.append(f"Prompt tokens: edge-moss {_med(default, 'prompt_tokens'):.0f}, CrispASR "
                   f"{_med(c_best, 'prompt_tokens'):.0f} (CrispASR pads every clip to 30 s; this clip is 30 s).")
    threads = sorted(k for k in ask if k.startswith("threads_"))
    if threads:
        out += ["", "Thread counts (edge-moss `ask`, medians of the runs counted):", "",
                "| threads | runs | encode s | prefill s | decode tok/s | after load s | peak RSS GiB |",
                "|---|---|---|---|---|---|---|"]
        for k in ["default"] + threads:
            r = ask[k]
            out.append(f"| {k.replace('threads_', '')} | {r['median']['n']} | {_fmt(_med(r, 'encode_s'))} | "
                       f"{_fmt(_med(r, 'prefill_s'))} | {_fmt(_med(r, 'decode_tok_s'))} | "
                       f"{_fmt(_med(r, 'after_load_s'))} | {_fmt(_med(r, 'peak_rss_gib'))} |")
    if not crisp_note:
        ct = sorted(k for k in crisp if k.startswith("threads_"))
        out += ["", "| CrispASR threads | runs | audio s | prefill s | decode tok/s | after load s | peak RSS GiB |",
                "|---|---|---|---|---|---|---|"]
        for k in ct:
            r = crisp[k]
            out.append(f"| {k.replace('threads_', '')} | {r['median']['n']} | {_fmt(_med(r, 'encode_s'))} | "
                       f"{_fmt(_med(r, 'prefill_s'))} | {_fmt(_med(r, 'decode_tok_s'))} | "
                       f"{_fmt(_med(r, 'after_load_s'))} | {_fmt(_med(r, 'peak_rss_gib'))} |")
    if "compact" in ask:
        r = ask["compact"]
        out += ["", f"`--compact` bundle, default threads, one run: peak RSS {_fmt(_med(r, 'peak_rss_gib'), ' GiB')} "
                    f"(target ≤ 3.2 GiB), after load {_fmt(_med(r, 'after_load_s'), ' s')}."]
    return out + [""]


def decoder_held_bytes(data: dict[str, Any]) -> float | None:
    """Resident bytes the decoder session added in the memory section (None if not run)."""
    rows = {r["step"]: r for r in (data.get("memory") or {}).get("rows", [])}
    before, after = rows.get("audio graph session"), rows.get("decoder session")
    if not before or not after:
        return None
    return (after.get("rss", 0) - before.get("rss", 0)) * (1 << 20)


def _rows_table(data: dict[str, Any]) -> list[str]:
    """Other bundles (--row-bundle: the 8B shape, other recipes), `ask` at default threads."""
    rows = {k: v for k, v in (data.get("rows") or {}).items() if isinstance(v, dict) and k != "section_s"}
    if not rows:
        return []
    out = ["## Other bundles (same clip and prompt, default threads)", "",
           "| bundle | runs | GB on disk | load s | audio path s | prefill s | prefill tok/s | decode tok/s | "
           "after load s | whole command s | peak RSS GiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in rows.items():
        if "median" not in r:
            out.append(f"| {label} | failed: {str(r.get('error', '?'))[:120]} |" + " |" * 9)
            continue
        rate = _rate(r)
        out.append(f"| {label} | {r['median'].get('n')} | {r.get('bundle_bytes', 0) / 1e9:.2f} | {_fmt(_med(r, 'load_s'))} | "
                   f"{_fmt(_med(r, 'encode_s'))} | {_fmt(_med(r, 'prefill_s'))} | {_fmt(rate, digits=1)} | "
                   f"{_fmt(_med(r, 'decode_tok_s'))} | {_fmt(_med(r, 'after_load_s'))} | "
                   f"{_fmt(_med(r, 'command_s'))} | {_fmt(_med(r, 'peak_rss_gib'))} |")
    return out + [""]


def _memory_table(data: dict[str, Any]) -> list[str]:
    mem = data.get("memory") or {}
    if "rows" not in mem:
        return ["## Memory breakdown", "", f"not measured: {mem.get('error', 'section not run')}", ""]
    out = ["## Where the memory goes (one `ask`, 30 s clip, default bundle)", "",
           "Resident memory after each step in one process (MiB): anonymous pages (heap: weights "
           "as ONNX Runtime repacks them, arenas, activations, KV cache) and file-backed pages "
           "(memory-mapped weights and libraries); peak = highest resident set inside the step.", "",
           "| step | RSS | anonymous | file-backed | peak in step | step s |", "|---|---|---|---|---|---|"]
    if mem.get("measured_by"):
        out[4:4] = [f"Measured by `{mem['measured_by']}`.", ""]
    prev = None
    for r in mem["rows"]:
        out.append(f"| {r['step']} | {r.get('rss', 0):.0f} | {r.get('anon', 0):.0f} | {r.get('file', 0):.0f} | "
                   f"{r['peak_mb']:.0f} | {r['seconds']:.1f} |")
        prev = r
    kv = mem.get("kv_cache", {})
    files = mem.get("bundle_files_mb", {})
    out += ["", f"KV cache: {kv.get('length')} positions used, {kv.get('capacity')} allocated "
                f"({kv.get('allocated_mb')} MiB {kv.get('dtype')}; it grows in steps of 256 instead of "
                f"holding max_context positions). Bundle files (MiB): " +
            ", ".join(f"{k} {v:.0f}" for k, v in files.items() if v >= 1) +
            f". Process peak: {mem.get('process_peak_rss_mb', prev['peak_mb'] if prev else 0):.0f} MiB.", ""]
    return out


def _live_table(data: dict[str, Any]) -> list[str]:
    live = data.get("live") or {}
    if "error" in live or not live:
        return ["## Live latency", "", f"not measured: {live.get('error', 'section not run')}", ""]
    dec = live.get("decode_tok_s")
    out = ["## Live: end of speech → final text", "",
           "Two short utterances fed in 0.1 s blocks paced in real time through `listen`'s "
           "LiveTranscriber, plain transcription, token cap " + str(data.get("live_tokens", 40)) +
           ". Latency = wall time of the final text minus the time the endpoint's audio arrived "
           f"(the endpointer's 0.7 s of trailing silence is not counted). Decode rate {_fmt(dec, ' tok/s')}. "
           "Queued = the part before the final's own compute began (the endpoint's audio waited behind "
           "the speculative tail or the previous utterance's decode); the model is loaded and its "
           "prompt prefix prefilled before the audio starts (`LiveTranscriber.warm_up`, as `listen` "
           "does).", "",
           "| mode | utterance | tail speculated | end of speech → final s | of which queued s | tokens | decode s | rest s | target rest |",
           "|---|---|---|---|---|---|---|---|---|"]
    for mode in ("speculative", "plain"):
        for f in (live.get(mode) or {}).get("finals", []):
            ntok = f.get("n_tokens")
            # the final's own decode loop, timed in the run; else estimated from the decode rate
            dsec = f.get("decode_s") or (ntok / dec if (ntok and dec) else None)
            rest = f["end_to_final_s"] - dsec if dsec is not None else None
            queued = f["end_to_final_s"] - f["latency_s"] if "latency_s" in f else None
            out.append(f"| {mode} | {f['utterance']} | {f.get('speculated')} | {f['end_to_final_s']:.2f} | "
                       f"{_fmt(queued)} | {ntok} | {_fmt(dsec)} | {_fmt(rest)} | ≤ 1.0 s |")
    out += ["", f"Peak RSS of that process: {live.get('process_peak_rss_mb', 0) / 1024:.2f} GiB "
                "(model + live path; target ≤ 3.8 GiB).", ""]
    return out
