"""Physical ceilings for the measured speeds.

Decode is memory bound: each step reads every decoder weight once (as loaded), one embedding row and
the whole KV cache so far, so tokens/s <= bandwidth / those bytes. Prefill is compute bound:
each prompt token costs about 2 * (backbone matmul parameters) FLOPs, so tokens/s <= matmul rate /
that (attention's own FLOPs and lm_head, computed for the last position only, are left out).
"""

from __future__ import annotations

from typing import Any

KV_BYTES = 4  # the runtime's KV cache is float32


def decode_bytes_per_token(weight_read_bytes: int, hidden: int, embedding_kind: str,
                           kv_values_per_token: int, context: int) -> dict[str, int]:
    emb_row = hidden * {"fp32": 4, "fp16": 2, "int8": 1}.get(embedding_kind, 4)
    kv = kv_values_per_token * KV_BYTES * context
    return {"weights": weight_read_bytes, "embedding_row": emb_row, "kv_cache": kv,
            "total": weight_read_bytes + emb_row + kv}


def decode_roofline(bandwidth_gbps: float, bytes_per_token: int) -> float:
    """Tokens/s a decode step cannot beat at this read bandwidth."""
    return bandwidth_gbps * 1e9 / bytes_per_token if bytes_per_token else float("nan")


def prefill_roofline(gflops: float, layer_params: int) -> float:
    """Prompt tokens/s a prefill cannot beat at this matmul rate."""
    return gflops * 1e9 / (2 * layer_params) if layer_params else float("nan")


def fraction(measured: float | None, limit: float) -> float | None:
    if measured is None or not limit or limit != limit:
        return None
    return round(measured / limit, 3)


def annotate(quant_result: dict[str, Any], limits: dict[str, Any], params: dict[str, int],
             embedding_kind: str) -> dict[str, Any]:
    """Roofline figures for one quantization's decoder results (added in place and returned)."""
    dec = quant_result.get("decoder", {})
    weights = quant_result.get("weight_bytes", {}).get("read_per_token", 0)
    bw_all = limits["read_bandwidth_gbps"]
    bw_1t = limits.get("read_bandwidth_1t_gbps", limits["read_bandwidth_1t"]["best_gbps"])
    roof: dict[str, Any] = {"decode": {}, "prefill": {}}
    for ctx, d in dec.get("decode", {}).items():
        b = decode_bytes_per_token(weights, params["hidden"], embedding_kind,
                                   params["kv_values_per_token"], int(ctx))
        limit = decode_roofline(bw_all, b["total"])
        measured = d["tokens_per_s"]["median"]
        roof["decode"][ctx] = {"bytes_per_token": b, "limit_tokens_per_s": round(limit, 2),
                               "limit_1t_tokens_per_s": round(decode_roofline(bw_1t, b["total"]), 2),
                               "fraction": fraction(measured, limit),
                               "fraction_of_1t": fraction(measured, decode_roofline(bw_1t, b["total"])),
                               "achieved_gbps": round(measured * b["total"] / 1e9, 2)}
    threads = dec.get("threads", 1)
    gflops = limits["matmul_gflops_1t"] if threads == 1 else limits["matmul_gflops_all"]
    for n, p in dec.get("prefill", {}).items():
        limit = prefill_roofline(gflops, params["layers"])
        measured = p["tokens_per_s"]["median"]
        roof["prefill"][n] = {"limit_tokens_per_s": round(limit, 2), "gflops_used": gflops,
                              "fraction": fraction(measured, limit),
                              "achieved_gflops": round(measured * 2 * params["layers"] / 1e9, 1)}
    quant_result["roofline"] = roof
    return roof
