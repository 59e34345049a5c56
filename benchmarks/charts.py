"""PNG charts of the results (matplotlib, a benchmark-only dependency).

- stage_breakdown.png: where the time of one 30 s clip + 100 output tokens goes, per quantization.
- decode_roofline.png: decode tokens/s against the memory-bandwidth roofline, per quantization and
  context length, with the peers beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _ok(d: Any) -> bool:
    return isinstance(d, dict) and "error" not in d


def _median(d: dict | None, *keys: str) -> float | None:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d.get("median") if isinstance(d, dict) else None


def stage_breakdown(results: dict[str, Any], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for q, r in results["quants"].items():
        e = r.get("e2e")
        if not _ok(e):
            continue
        parts = {"audio (mel + encoder)": _median(e, "encode_s"), "prefill": _median(e, "prefill_s"),
                 "decode": _median(e, "decode_s")}
        if None in parts.values():
            continue
        parts["other"] = max(0.0, (_median(e, "wall_s") or 0) - sum(parts.values()))
        rows.append((q, parts, e["clip_s"], e["new_tokens"]))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 1.8 + 0.6 * len(rows)))
    colors = ["#4C72B0", "#DD8452", "#55A868", "#BBBBBB"]
    for i, (q, parts, _, _) in enumerate(rows):
        left = 0.0
        for (name, value), color in zip(parts.items(), colors):
            ax.barh(i, value, left=left, color=color, label=name if i == 0 else None)
            if value > 0.04 * sum(parts.values()):
                ax.text(left + value / 2, i, f"{value:.1f}s", ha="center", va="center", fontsize=8)
            left += value
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    clip, tokens = rows[0][2], rows[0][3]
    ax.axvline(clip, color="black", linestyle="--", linewidth=1, label=f"real time ({clip:.0f} s of audio)")
    ax.set_xlabel("seconds (median)")
    ax.set_title(f"One {clip:.0f} s clip, {tokens} output tokens: time per stage")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=5, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def decode_roofline(results: dict[str, Any], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, measured, limits = [], [], []
    for q, r in results["quants"].items():
        roof = r.get("roofline", {}).get("decode", {})
        for ctx, d in r.get("decoder", {}).get("decode", {}).items() if _ok(r.get("decoder")) else []:
            labels.append(f"{q}\nctx {ctx}")
            measured.append(d["tokens_per_s"]["median"])
            limits.append(roof.get(ctx, {}).get("limit_tokens_per_s"))
    peers = results.get("peers", {})
    for name, peer in (("genai int4", peers.get("genai_int4")),
                       ("genai int4\n(extrapolated)", peers.get("genai_int4_scaled")),
                       ("torch bf16\n1 thread", peers.get("torch_bf16"))):
        if _ok(peer):
            for ctx, d in peer.get("decode", {}).items():
                labels.append(f"{name}\nctx {ctx}")
                measured.append(d["tokens_per_s"]["median"])
                limits.append(None)
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 4))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], measured, width=0.4, color="#4C72B0", label="measured (median)")
    ax.bar([x + 0.2 for x in xs], [v or 0 for v in limits], width=0.4, color="#CCCCCC",
           label="roofline: read bandwidth / bytes per token")
    for x, m, lim in zip(xs, measured, limits):
        text = f"{m:.1f}" + (f"\n{100 * m / lim:.0f}%" if lim else "")
        ax.text(x - 0.2, m, text, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("decode tokens/s (1 stream)")
    ax.set_title("Decode speed against the memory-bandwidth roofline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_charts(results: dict[str, Any], out: Path) -> dict[str, str]:
    """Write the charts into `out`; returns {name: file name} of those written."""
    written = {}
    try:
        for name, fn in (("stage_breakdown", stage_breakdown), ("decode_roofline", decode_roofline)):
            p = fn(results, out / f"{name}.png")
            if p:
                written[name] = p.name
    except ImportError as exc:  # matplotlib missing: the report says so instead of failing the run
        print(f"[bench] charts skipped: {exc}", flush=True)
    return written
