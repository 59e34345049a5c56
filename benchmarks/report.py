"""RESULTS.md from results.json: headline table with ratios, then the details behind each figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .stats import fmt

GB = 1e9


def _ok(d: Any) -> bool:
    return isinstance(d, dict) and "error" not in d


def _measured(results: dict[str, Any], key: str):
    """(quant, section) for each bundle whose `key` section was measured without error."""
    for q, r in results["quants"].items():
        if _ok(r.get(key)):
            yield q, r[key]


def _med(d: Any, *keys: str) -> float | None:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d.get("median") if isinstance(d, dict) else d if isinstance(d, (int, float)) else None


def _num(v: float | None, digits: int = 2, unit: str = "") -> str:
    return "—" if v is None else f"{v:.{digits}f}{unit}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}×"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(r) + " |" for r in rows]


def _error_lines(name: str, d: Any) -> list[str]:
    return [f"- **{name}**: not measured: `{str(d.get('error'))[:700]}`"] if isinstance(d, dict) and "error" in d else []


def _ctxs(results: dict[str, Any]) -> list[str]:
    return [str(c) for c in results.get("plan", {}).get("contexts", [100, 2000])]


def _genai(results: dict[str, Any]) -> tuple[dict | None, str]:
    """The builder peer: measured on the whole backbone, else the extrapolated estimate."""
    peers = results.get("peers", {})
    if _ok(peers.get("genai_int4")):
        return peers["genai_int4"], "onnxruntime-genai int4 (builder)"
    if _ok(peers.get("genai_int4_scaled")):
        return peers["genai_int4_scaled"], "onnxruntime-genai int4 (builder; extrapolated from shallower builds)"
    return None, ""


def headline(results: dict[str, Any]) -> list[str]:
    ctxs = _ctxs(results)
    lo, hi = ctxs[0], ctxs[-1]
    header = ["", "bundle size", f"decode tok/s @{lo}", f"decode tok/s @{hi}", f"% roofline @{lo}",
              "prefill tok/s", "time to first token (30 s clip)", "RTF (30 s, 100 tok)",
              "live end→text", "peak RSS (ask)"]
    rows = []
    for q, r in results["quants"].items():
        dec, e2e, live = r.get("decoder"), r.get("e2e"), r.get("live")
        sizes = r.get("sizes") or {}
        prefill = None
        if _ok(dec) and dec.get("prefill"):
            planned = [str(n) for n in results.get("plan", {}).get("prefill_tokens", [])]
            first = next((n for n in planned if n in dec["prefill"]), sorted(dec["prefill"], key=int)[0])
            prefill = dec["prefill"][first]["tokens_per_s"]
        roof = r.get("roofline", {}).get("decode", {}).get(lo, {})
        rows.append([
            f"**edge-moss {q}**", _num(sizes.get("total", 0) / GB, 2, " GB") if sizes else "—",
            fmt(_ok(dec) and dec["decode"].get(lo, {}).get("tokens_per_s")),
            fmt(_ok(dec) and dec["decode"].get(hi, {}).get("tokens_per_s")),
            _pct(roof.get("fraction")), fmt(prefill),
            fmt(_ok(e2e) and e2e["ttft_s"], " s"), fmt(_ok(e2e) and e2e["rtf"], "", 3),
            fmt(_ok(live) and live["latency_s"], " s"),
            _num(e2e.get("process_peak_rss_mb") / 1024, 2, " GB") if _ok(e2e) else "—",
        ])
    peers = results.get("peers", {})
    g, label = _genai(results)
    if g is not None:
        pf = g.get("prefill", {}).get(lo, {}).get("tokens_per_s")
        size = _num(g["model_bytes"] / GB, 2, " GB") + " (LM only)" if "model_bytes" in g else "—"
        rss = _num(g["process_peak_rss_mb"] / 1024, 2, " GB") + " (decode run)" if "process_peak_rss_mb" in g else "—"
        rows.append([label, size, fmt(g["decode"].get(lo, {}).get("tokens_per_s")),
                     fmt(g["decode"].get(hi, {}).get("tokens_per_s")), "—", fmt(pf), "—", "—", "—", rss])
    for key in ("torch_bf16", "torch_bf16_default"):
        t = peers.get(key)
        if not _ok(t):
            continue
        pf = next(iter(t["prefill"].values()), {}).get("tokens_per_s")
        ckpt_gb = results.get("params", {}).get("checkpoint_bytes", 0) / GB
        rows.append([f"torch reference bf16 ({t['threads']} thread{'s' if t['threads'] > 1 else ''})",
                     _num(ckpt_gb, 2, " GB") + " (checkpoint)",
                     fmt(t["decode"].get(lo, {}).get("tokens_per_s")),
                     fmt(t["decode"].get(hi, {}).get("tokens_per_s")), "—", fmt(pf), "—", "—", "—",
                     _num(t["process_peak_rss_mb"] / 1024, 2, " GB")])
    lines = _table(header, rows)
    lines += ["", "Cells: median (min–max) over the repeats. Decode at a context of N tokens; prefill "
              f"over {results.get('plan', {}).get('prefill_tokens', ['?'])[0]} prompt tokens; RTF = wall time / audio duration (lower is faster)."]
    return lines


def ratios(results: dict[str, Any]) -> list[str]:
    """edge-moss against the peers at the same context lengths."""
    peers = results.get("peers", {})
    lines = []
    rows = []
    for q, dec in _measured(results, "decoder"):
        for ctx in _ctxs(results):
            ours = _med(dec, "decode", ctx, "tokens_per_s")
            g = _med(_genai(results)[0], "decode", ctx, "tokens_per_s") if _genai(results)[0] else None
            t = _med(peers.get("torch_bf16"), "decode", ctx, "tokens_per_s") if _ok(peers.get("torch_bf16")) else None
            t2 = _med(peers.get("torch_bf16_default"), "decode", ctx, "tokens_per_s") \
                if _ok(peers.get("torch_bf16_default")) else None
            rows.append([q, ctx, _num(ours), _ratio(ours, g), _ratio(ours, t), _ratio(ours, t2)])
    if rows:
        lines += _table(["edge-moss (1 thread)", "context", "decode tok/s", "÷ genai int4 (1 thread)",
                         "÷ torch bf16 (1 thread)", "÷ torch bf16 (default threads)"], rows)
    for key in ("torch_bf16", "torch_bf16_default"):
        t = peers.get(key)
        if not _ok(t):
            continue
        n = next(iter(t["prefill"]), None)
        tp = _med(t, "prefill", n, "tokens_per_s") if n else None
        prow = []
        for q, r in results["quants"].items():
            dec = r.get("decoder")
            if _ok(dec) and n in dec.get("prefill", {}):
                prow.append(f"{q} {_ratio(_med(dec, 'prefill', n, 'tokens_per_s'), tp)}")
        if prow:
            lines += ["", f"Prefill of {n} tokens against torch bf16 on {t['threads']} thread(s) "
                      f"({_num(tp)} tok/s): " + ", ".join(prow) + f". torch load time: {t['load_s']} s."]
    return lines


def verdict(results: dict[str, Any]) -> list[str]:
    """The issue's bar: int4 decode >= the builder graph and >= 70 % of the roofline."""
    r = results["quants"].get("int4")
    if not r or not _ok(r.get("decoder")):
        return ["- int4 was not measured in this run."]
    g, _ = _genai(results)
    lines = []
    for ctx, d in r["decoder"]["decode"].items():
        ours = d["tokens_per_s"]["median"]
        frac = r.get("roofline", {}).get("decode", {}).get(ctx, {}).get("fraction")
        peer = _med(g, "decode", ctx, "tokens_per_s") if g else None
        vs_peer = "no builder figure" if peer is None else (
            f"{'≥' if ours >= peer else '<'} builder graph ({_num(ours)} vs {_num(peer)} tok/s)")
        vs_roof = "—" if frac is None else f"{'≥' if frac >= 0.7 else '<'} 70 % of roofline ({_pct(frac)})"
        lines.append(f"- context {ctx}: {vs_peer}; {vs_roof}")
    sweep = results.get("thread_sweep")
    rows = [row for row in (sweep or {}).get("rows", []) if "error" not in row] if _ok(sweep) else []
    if rows:
        best = max(rows, key=lambda row: next(iter(row["decode"].values()))["tokens_per_s"]["median"])
        ctx, d = next(iter(best["decode"].items()))
        roof = r.get("roofline", {}).get("decode", {}).get(ctx, {})
        limit = roof.get("limit_tokens_per_s")
        tps = d["tokens_per_s"]["median"]
        lines.append(f"- best setting in the thread sweep ({best['threads']} intra-op threads, spinning "
                     f"{'on' if best['spinning'] else 'off'}): {_num(tps)} tok/s at context {ctx}"
                     + (f" = {_pct(tps / limit)} of the roofline" if limit else "")
                     + (f", {_ratio(tps, _med(g, 'decode', ctx, 'tokens_per_s'))} the builder estimate (1 thread)"
                        if g else ""))
    dq = (r.get("bundle") or {}).get("decoder_quant")
    if dq:
        lines.append(f"- edge-moss int4 decoder as exported: `{json.dumps(dq)[:300]}`")
    return lines


def machine_section(results: dict[str, Any]) -> list[str]:
    m, lim = results.get("machine", {}), results.get("limits", {})
    lines = [f"- CPU: {m.get('cpu')} ({', '.join(m.get('cpu_flags', []))}), {m.get('logical_cpus')} logical "
             f"cores, {m.get('memory_gb')} GB memory, {m.get('os')}",
             f"- ONNX Runtime {m.get('onnxruntime')}, onnxruntime-genai {m.get('onnxruntime_genai')}, "
             f"numpy {m.get('numpy')}, torch {m.get('torch')}, transformers {m.get('transformers')}, "
             f"Python {m.get('python')}",
             f"- Date: {m.get('date')}; load average when the run started: {m.get('load_average_at_start')} "
             "(the machine is shared: other jobs may have run at the same time)"]
    if _ok(lim):
        lines += [
            f"- Memory read bandwidth (1 GiB float32 arrays, best of 5): numpy sum "
            f"{lim['read_bandwidth_1t']['best_gbps']} GB/s on 1 thread, "
            f"{lim['read_bandwidth_all']['best_gbps']} GB/s in {lim['read_bandwidth_all'].get('processes', 1)} "
            f"processes; ONNX Runtime ReduceMax {lim.get('ort_read_1t', {}).get('best_gbps', '—')} GB/s on 1 thread, "
            f"{lim.get('ort_read_all', {}).get('best_gbps', '—')} GB/s on {lim.get('ort_read_all', {}).get('threads', '—')}; "
            f"copy {lim['copy_bandwidth']['best_gbps']} GB/s (read + write). The decode roofline uses the "
            f"highest: **{lim['read_bandwidth_gbps']} GB/s**.",
            "- float32 matmul (GFLOP/s, best of 5): "
            + ", ".join(f"{'numpy GEMM' if k.startswith('numpy') else 'ONNX Runtime MatMul'} "
                        f"{k.split('_')[-1][:-1]} thread(s) {v['best_gflops']}" for k, v in lim.items()
                        if k.startswith(("numpy_gemm_", "ort_matmul_")) and isinstance(v, dict)
                        and "best_gflops" in v) + ". "
            f"Prefill roofline uses **{lim['matmul_gflops_1t']} GFLOP/s** at 1 thread.",
        ]
    return lines


def decode_details(results: dict[str, Any]) -> list[str]:
    rows = []
    for q, dec in _measured(results, "decoder"):
        roof = results["quants"][q].get("roofline", {}).get("decode", {})
        for ctx, d in dec["decode"].items():
            rf = roof.get(ctx, {})
            b = rf.get("bytes_per_token", {})
            rows.append([q, ctx, fmt(d["tokens_per_s"]), fmt(d["step_ms"], " ms", 1), f"{d['p90_step_ms']} ms",
                         _num(b.get("weights", 0) / GB, 3, " GB"), _num(b.get("kv_cache", 0) / GB, 3, " GB"),
                         _num(rf.get("limit_tokens_per_s")), _pct(rf.get("fraction")),
                         _num(rf.get("achieved_gbps"), 1, " GB/s")])
    lines = _table(["quant", "context", "tokens/s", "step", "p90 step", "weights read", "KV read",
                    "roofline tok/s", "reached", "achieved read rate"], rows)
    lines += ["", "Bytes per step = decoder weights as loaded (fp16 weights are widened to fp32 at load, "
              "so they count 4 bytes) + one embedding row + the float32 KV cache up to the context. "
              "The cache for each context is filled by a real prefill of embedding rows of random "
              f"ids; each repeat rolls back to it and times single steps after a warm-up step "
              f"({results.get('plan', {}).get('decode_steps')} steps a repeat, the repeat's median step)."]
    prow = []
    for q, dec in _measured(results, "decoder"):
        roof = results["quants"][q].get("roofline", {}).get("prefill", {})
        for n, p in sorted(dec["prefill"].items(), key=lambda kv: int(kv[0])):
            rf = roof.get(n, {})
            prow.append([q, n, fmt(p["tokens_per_s"]), fmt(p["seconds"], " s"),
                         _num(rf.get("achieved_gflops"), 1), _num(rf.get("limit_tokens_per_s")),
                         _pct(rf.get("fraction"))])
    lines += ["", "Prefill (one forward over N prompt positions, 1 thread):", ""]
    lines += _table(["quant", "tokens", "tokens/s", "seconds", "GFLOP/s achieved", "roofline tok/s",
                     "reached"], prow)
    return lines


def audio_details(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, a in results.get("audio", {}).items():
        if not _ok(a):
            rows.append([name, "error", "", "", "", ""])
            continue
        for mode, m in a["modes"].items():
            rows.append([name, mode, fmt(m["seconds_per_30s"], " s"), f"{m['first_run_s']} s",
                         str(m["audio_tokens"]), f"{a['process_peak_rss_mb'] / 1024:.2f} GB"])
    lines = _table(["audio graph", "encoder mode", "seconds per 30 s", "first run", "audio tokens",
                    "peak RSS"], rows)
    g = results.get("audio_int8_graph")
    if _ok(g):
        lines += ["", f"The int8 audio graph is derived from the fp32 one with {g['method']}."]
    mel = next((a.get("mel_s_per_30s") for a in results.get("audio", {}).values() if _ok(a)), None)
    if mel is not None:
        lines += [f"Log-mel front end (numpy): {mel} s per 30 s."]
    return lines


def e2e_details(results: dict[str, Any]) -> list[str]:
    rows = []
    for q, e in _measured(results, "e2e"):
        rows.append([q, f"{e['load_s']} s", fmt(e["wall_s"], " s"), fmt(e["rtf"], "", 3), fmt(e["ttft_s"], " s"),
                     fmt(e["encode_s"], " s"), fmt(e["prefill_s"], " s"), fmt(e["decode_s"], " s"),
                     fmt(e["decode_tokens_per_s"]), f"{e['prompt_tokens']} ({e['audio_tokens']} audio)"])
    lines = _table(["quant", "load", "wall", "RTF", "TTFT", "mel + audio graph", "prefill",
                    "decode", "decode tok/s", "prompt tokens"], rows)
    lines += ["", "`EdgeMoss(bundle).ask(clip, question, max_new_tokens=100, ignore_eos=True)` on a 30 s "
              "clip, repeated in one process (the first request also prefills the shared system prefix). "
              "TTFT = request wall time minus the decode loop."]
    lrows = []
    for q, lv in _measured(results, "live"):
        lrows.append([q, fmt(lv["latency_s"], " s"), fmt(lv["tail_encode_s"], " s"),
                          fmt(lv["tail_prefill_s"], " s"), fmt(lv["decode_s"], " s"), str(lv["new_tokens"])])
    if lrows:
        lines += ["", "Live end-of-speech → final text (10 s utterance; its two full 4 s chunks already in "
                  "the cache; timed: the 2 s tail chunk's encoder pass, its span + closing tokens, and "
                  f"{results.get('plan', {}).get('live_new_tokens')} decoded tokens):", ""]
        lines += _table(["quant", "latency", "tail encode", "tail prefill", "decode", "tokens"], lrows)
    return lines


def memory_and_size(results: dict[str, Any]) -> list[str]:
    rows = []
    for q, r in results["quants"].items():
        s = r.get("sizes")
        if not s:
            continue
        rows.append([q] + [_num(s[k] / GB, 3, " GB") for k in ("audio", "decoder", "embeddings", "tokenizer",
                                                                 "total")])
    lines = _table(["bundle", "audio graph", "decoder", "embeddings", "tokenizer", "total"], rows)
    mrows = []
    for q, r in results["quants"].items():
        dec, e2e, ex = r.get("decoder"), r.get("e2e"), r.get("export") or {}
        cells = [q]
        cells.append(_num(dec["peaks_mb"].get("decoder_load", 0) / 1024, 2, " GB") if _ok(dec) else "—")
        cells.append(_num(dec["peaks_mb"].get("prefill", 0) / 1024, 2, " GB") if _ok(dec) else "—")
        cells.append(_num(dec["peaks_mb"].get("decode", 0) / 1024, 2, " GB") if _ok(dec) else "—")
        cells.append(_num(e2e["process_peak_rss_mb"] / 1024, 2, " GB") if _ok(e2e) else "—")
        cells.append(_num(ex.get("wall_s"), 0, " s") if ex else "—")
        cells.append(_num(ex.get("peak_rss_mb", 0) / 1024, 2, " GB") if ex else "—")
        mrows.append(cells)
    lines += ["", "Peak resident memory (decoder stages from the decoder benchmark process, peak reset "
              "before each stage; total = the whole `ask` process) and export cost:", ""]
    lines += _table(["quant", "decoder load", "decoder prefill", "decoder decode", "total (ask)",
                     "export time", "export peak RSS"], mrows)
    arow = [f"{n}: {a['process_peak_rss_mb'] / 1024:.2f} GB" for n, a in results.get("audio", {}).items()
            if _ok(a)]
    if arow:
        lines += ["", "Audio graph process peak RSS: " + ", ".join(arow) + "."]
    return lines


def sweep_section(results: dict[str, Any]) -> list[str]:
    sweep = results.get("thread_sweep")
    if not _ok(sweep):
        return _error_lines("thread sweep", sweep)
    rows, best_dec, best_pre = [], None, None
    for row in sweep["rows"]:
        if "error" in row:
            rows.append([str(row["threads"]), str(row["spinning"]), "error", "", ""])
            continue
        ctx = next(iter(row["decode"]))
        n = next(iter(row["prefill"]))
        d, p = row["decode"][ctx]["tokens_per_s"], row["prefill"][n]["tokens_per_s"]
        rows.append([str(row["threads"]), "on" if row["spinning"] else "off", fmt(d), f"{row['decode'][ctx]['p90_step_ms']} ms",
                     fmt(p)])
        if best_dec is None or d["median"] > best_dec[0]:
            best_dec = (d["median"], row["threads"], row["spinning"])
        if best_pre is None or p["median"] > best_pre[0]:
            best_pre = (p["median"], row["threads"], row["spinning"])
    lines = _table(["intra-op threads", "spinning", "decode tok/s", "p90 step", "prefill tok/s"], rows)
    if best_dec and best_pre:
        lines += ["", f"Fastest decode: {best_dec[1]} thread(s), spinning {'on' if best_dec[2] else 'off'}; "
                  f"fastest prefill: {best_pre[1]} thread(s), spinning {'on' if best_pre[2] else 'off'} "
                  "(on this shared 2-vCPU machine; differences within the min–max spread are noise)."]
    return lines


def profile_section(results: dict[str, Any]) -> list[str]:
    prof = results.get("profile")
    if not _ok(prof):
        return _error_lines("profile", prof)
    wall, kern = prof["wall_s"], prof["kernel_s"]
    total = sum(wall.values()) or 1
    rows = [[s, f"{wall[s]:.3f} s", f"{100 * wall[s] / total:.0f}%",
             f"{kern[s]:.3f} s" if s in kern else "—"] for s in wall]
    lines = [f"One profiled request ({prof['seconds']:.0f} s clip, {prof['prompt_tokens']} prompt tokens, "
             f"{prof['new_tokens']} decoded tokens, ONNX Runtime profiler on both graph sessions):", ""]
    lines += _table(["stage", "wall", "share", "time in ORT kernels"], rows)
    lines += ["", "Top operators by kernel time, all stages:", ""]
    lines += _table(["op", "ms", "calls", "share"],
                    [[o["op"], f"{o['ms']:.1f}", str(o["calls"]), f"{100 * o['share']:.1f}%"]
                     for o in prof["top_ops"]])
    lines += ["", "Per stage (top 6): " + "; ".join(
        f"**{s}**: " + ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in ops)
        for s, ops in prof["top_ops_by_stage"].items())]
    return lines


def peers_section(results: dict[str, Any]) -> list[str]:
    peers = results.get("peers", {})
    lines = []
    g = peers.get("genai_int4")
    if _ok(g):
        b = g["build"]
        lines += [f"- **onnxruntime-genai int4** ({results['machine'].get('onnxruntime_genai')}): the fixture's "
                  "`language_model.*` + `lm_head` written as a plain Qwen3ForCausalLM checkpoint, then "
                  "`python -m onnxruntime_genai.models.builder -i QWEN3_DIR -o OUT -p int4 -e cpu` "
                  f"(build {b.get('seconds', 'reused')} s, peak RSS {b.get('peak_rss_mb', '—')} MB); "
                  f"its graph: {g['model_bytes'] / GB:.2f} GB, MatMulNBits int4 block 32 with accuracy "
                  "level 4, lm_head int4 too, fused QKV. Session: intra_op_num_threads "
                  f"{g['threads']}. Decode timed with og.Generator after appending N random ids "
                  "(rewind_to between repeats). Prefill tok/s for it includes logits for every prompt position."]
        for ctx in g["decode"]:
            lines.append(f"  - context {ctx}: decode {fmt(g['decode'][ctx]['tokens_per_s'])} tok/s, "
                         f"prefill {fmt(g['prefill'][ctx]['tokens_per_s'])} tok/s")
    elif g is not None:
        lines += _error_lines("onnxruntime-genai peer on the whole backbone", g)
    gs = peers.get("genai_int4_scaled")
    if _ok(gs):
        lines += [f"- **onnxruntime-genai int4, extrapolated**: {gs['method']}; the same builder command on "
                  "checkpoints cut to those layer counts, decode timed the same way."]
        for n, pt in gs["points"].items():
            lines.append(f"  - {n} layers: step " + ", ".join(
                f"@{c} {fmt(st, ' ms', 1)}" for c, st in pt["step_ms"].items())
                + f"; build {pt['build'].get('seconds', 'reused')} s, peak RSS {pt['build'].get('peak_rss_mb', '—')} MB")
        for ctx, d in gs["decode"].items():
            lines.append(f"  - context {ctx}: {d['fixed_ms']} ms fixed + {d['per_layer_ms']} ms a layer → "
                         f"{d['step_ms_extrapolated']} ms a step = **{d['tokens_per_s']['median']} tok/s** (estimate)")
    elif gs is not None:
        lines += _error_lines("onnxruntime-genai extrapolated peer", gs)
    for key in ("torch_bf16", "torch_bf16_default"):
        t = peers.get(key)
        if _ok(t):
            lines += [f"- **torch reference, bf16** (`export.reference.MossAudioReference`, transformers' "
                      f"Qwen3Model, sdpa attention, {t['threads']} thread(s)): load {t['load_s']} s; "
                      + "; ".join(f"prefill {n} tokens {fmt(p['tokens_per_s'])} tok/s" for n, p in t["prefill"].items())
                      + "; " + "; ".join(f"decode @{c} {fmt(d['tokens_per_s'])} tok/s" for c, d in t["decode"].items())
                      + f"; peak RSS {t['process_peak_rss_mb'] / 1024:.2f} GB. Long-context cache filled "
                      "with random bf16 keys/values (the values do not change a step's work)."]
        elif t is not None:
            lines += _error_lines(f"torch peer ({key})", t)
    return lines or ["- peers skipped (--skip-peers)"]


def write_report(results: dict[str, Any], path: Path, charts: dict[str, str]) -> Path:
    m = results.get("machine", {})
    size = results.get("size")
    lines = [
        "# edge-moss benchmarks",
        "",
        "> **The weights are random** (a fixture with the release's exact tensor shapes"
        + (", 4B" if size == "4b" else f", size `{size}` — NOT the 4B shape") + "). Only speed, "
        "memory and size are meaningful here; the generated text is noise.",
        "",
        f"Produced by `{results.get('command')}` on **{m.get('cpu')}, {m.get('logical_cpus')} logical cores, "
        f"{m.get('memory_gb')} GB**, ONNX Runtime {m.get('onnxruntime')}, {m.get('date')} "
        f"(total run {results.get('total_s')} s). Every figure is the median of at least "
        f"{results.get('plan', {}).get('repeats')} repeats with (min–max); 1 intra-op thread unless stated.",
        "",
        "## Summary",
        "",
    ]
    lines += headline(results)
    lines += ["", "### Against the peers (same backbone, same machine, same run)", ""] + ratios(results)
    lines += ["", "### The bar (issue 8): int4 decode at least the builder graph's speed and ≥ 70 % of the "
              "roofline", ""] + verdict(results)
    notes = path.parent / "NOTES.md"
    if notes.is_file():  # hand-written reading of the numbers, kept beside the generated report
        lines += ["", "### What stands in the way, what was tried (hand-written: [NOTES.md](NOTES.md))", ""]
        lines += notes.read_text(encoding="utf-8").strip().splitlines()
    if charts:
        lines += ["", "## Charts", ""]
        if "stage_breakdown" in charts:
            lines += [f"![time per stage of a 30 s clip]({charts['stage_breakdown']})", ""]
        if "decode_roofline" in charts:
            lines += [f"![decode speed against the roofline]({charts['decode_roofline']})", ""]
    lines += ["", "## Machine and its limits", ""] + machine_section(results)
    lines += ["", "## Decode and prefill against the roofline", ""] + decode_details(results)
    lines += ["", "## Audio graph", ""] + audio_details(results)
    lines += ["", "## End to end: a 30 s clip, and live latency", ""] + e2e_details(results)
    lines += ["", "## Memory, bundle size, export", ""] + memory_and_size(results)
    lines += ["", "## Thread settings (int4 or first bundle: decode at the shortest context, prefill "
              "of a short prompt)", ""] + sweep_section(results)
    lines += ["", "## Where the time goes (profile)", ""] + profile_section(results)
    lines += ["", "## Peers", ""] + peers_section(results)
    errors = []
    for q, r in results["quants"].items():
        for k in ("decoder", "e2e", "live"):
            errors += _error_lines(f"{q} {k}", r.get(k))
        errors += _error_lines(f"{q} bundle", r.get("bundle"))
    for n, a in results.get("audio", {}).items():
        errors += _error_lines(f"audio {n}", a)
    if errors:
        lines += ["", "## Not measured", ""] + errors
    lines += ["", "Raw numbers: [results.json](results.json)."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":  # re-render from a results.json: python -m benchmarks.report [DIR]
    import sys

    from .charts import write_charts

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    data = json.loads((folder / "results.json").read_text())
    write_report(data, folder / "RESULTS.md", write_charts(data, folder))
