"""Speed of the MatMulNBits weight formats on one decoder layer (benchmarks.quant_speed --kernels).

Each format is a small ONNX graph holding one Qwen3 layer's linears at the fixture's widths
(q/k/v, o, gate/up, down; random weights, round-to-nearest: speed does not depend on how the
scales were chosen), with q/k/v and gate/up either fused (one node each, as
export.decoder_graph builds by default) or separate. Timings are interleaved across formats in
every round, so a noisy (shared) machine slows them alike; medians are reported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edge_moss_quant.blockwise import quantize_blockwise

from .machine import probe_session

FORMATS = (  # (label, bits, block, symmetric)
    ("int4 b32 asym", 4, 32, False), ("int4 b32 sym", 4, 32, True),
    ("int4 b64 asym", 4, 64, False), ("int4 b64 sym", 4, 64, True),
    ("int4 b128 asym", 4, 128, False), ("int4 b128 sym", 4, 128, True),
    ("int8 b128 sym", 8, 128, True),
)


def _layer_graph(widths, bits: int, block: int, symmetric: bool, fused: bool, seed: int = 0):
    from onnx import TensorProto, helper, numpy_helper

    hidden, inter, q_out, kv_out = widths
    rng = np.random.default_rng(seed)
    groups = {"qkv": [q_out, kv_out, kv_out], "o": [hidden], "gate_up": [inter, inter], "down": [hidden]}
    k_of = {"qkv": hidden, "o": q_out, "gate_up": hidden, "down": inter}
    inputs = {"qkv": "x", "o": "a", "gate_up": "x", "down": "h"}
    nodes, inits, outs = [], [], []
    for group, rows in groups.items():
        parts = [sum(rows)] if fused else rows
        for j, n in enumerate(parts):
            k = k_of[group]
            w = (rng.standard_normal((n, k), dtype=np.float32) / np.sqrt(k)).astype(np.float32)
            q = quantize_blockwise(w, bits, block, symmetric, "rtn")
            name = f"{group}{j}"
            ins = [inputs[group], f"{name}.B", f"{name}.S"]
            inits += [numpy_helper.from_array(q.packed, ins[1]), numpy_helper.from_array(q.scales, ins[2])]
            if q.zero_points is not None:
                inits.append(numpy_helper.from_array(q.zero_points, f"{name}.Z"))
                ins.append(f"{name}.Z")
            nodes.append(helper.make_node("MatMulNBits", ins, [f"{name}.y"], domain="com.microsoft",
                                          K=k, N=n, bits=bits, block_size=block, accuracy_level=4))
            outs.append(helper.make_tensor_value_info(f"{name}.y", TensorProto.FLOAT, None))
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", f32, ["M", hidden]),
                                               helper.make_tensor_value_info("a", f32, ["M", q_out]),
                                               helper.make_tensor_value_info("h", f32, ["M", inter])],
                              outs, inits)
    return probe_session(graph, 1, opsets=(("", 21), ("com.microsoft", 1)), ir_version=10)


def _feeds(widths, rows: int):
    hidden, inter, q_out, _ = widths
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((rows, hidden), dtype=np.float32),
            "a": rng.standard_normal((rows, q_out), dtype=np.float32),
            "h": rng.standard_normal((rows, inter), dtype=np.float32)}


def run_kernels(size: str, rounds: int, out: Path, command: str) -> int:
    from benchmarks.machine import describe_machine
    from edge_moss_export.fixture import fixture_config

    lang = fixture_config(size)["language_config"]
    widths = (lang["hidden_size"], lang["intermediate_size"],
              lang["num_attention_heads"] * lang["head_dim"], lang["num_key_value_heads"] * lang["head_dim"])
    sessions = {(label, fused): _layer_graph(widths, bits, block, sym, fused)
                for label, bits, block, sym in FORMATS for fused in (True, False)}
    prefill, decode = _feeds(widths, 128), _feeds(widths, 1)
    times: dict = {key: {"prefill": [], "decode": []} for key in sessions}
    for s in sessions.values():  # warm up (prepacking happens on the first run)
        s.run(None, prefill)
        s.run(None, decode)
    for _ in range(rounds):
        for key, s in sessions.items():
            t = time.perf_counter()
            s.run(None, prefill)
            times[key]["prefill"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(10):
                s.run(None, decode)
            times[key]["decode"].append((time.perf_counter() - t) / 10)
    rows = []
    for (label, fused), t in times.items():
        rows.append({"format": label, "fused": fused,
                     "prefill_rows_per_s": 128 / float(np.median(t["prefill"])),
                     "decode_ms": 1e3 * float(np.median(t["decode"]))})
    base = next(r for r in rows if r["format"] == "int8 b128 sym" and r["fused"])
    lines = [f"One {size} decoder layer's linears, 1 thread, medians of {rounds} interleaved rounds",
             "", "| format | q/k/v, gate/up | prefill rows/s (128) | vs int8 fused | decode ms/layer |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['format']} | {'fused' if r['fused'] else 'separate'} | "
                     f"{r['prefill_rows_per_s']:.0f} | {r['prefill_rows_per_s'] / base['prefill_rows_per_s']:.2f} | "
                     f"{r['decode_ms']:.2f} |")
    text = "\n".join(lines)
    out.write_text(json.dumps({"rows": rows, "size": size, "rounds": rounds, "command": command,
                               "machine": describe_machine(),
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                              indent=2) + "\n", encoding="utf-8")
    print(text)
    return 0
