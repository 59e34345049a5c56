"""Speed of several bundles side by side, in one run (so they are compared as ratios):

    python -m benchmarks.quant_speed NAME=BUNDLE [NAME=BUNDLE ...] [--repeats 3] [--out FILE]
    python -m benchmarks.quant_speed --kernels [--size 4b] [--rounds 5] [--out FILE]

For each bundle: decode tok/s at a 100-token context, prefill tok/s of 128 tokens, and the audio
graph's seconds per 30 s of audio (chunked), each in its own worker process (benchmarks.worker),
1 intra-op thread. Prints a Markdown table; the JSON goes to --out.

--kernels times the MatMulNBits formats themselves on one decoder layer's linears at the
fixture widths (random weights, no bundle needed): int4 in blocks of 32/64/128, asymmetric and
symmetric, against int8, each with q/k/v and gate/up fused or separate; 128-row prefill and
1-row decode, interleaved over --rounds rounds (medians), 1 thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.bundles import bundle_sizes
from benchmarks.measure import Plan, audio_graph, decoder
from benchmarks.stats import fmt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="*", help="NAME=BUNDLE pairs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/quant_speed.json")
    p.add_argument("--kernels", action="store_true", help="time the kernel formats (see above)")
    p.add_argument("--size", default="4b", help="fixture widths for --kernels")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    if args.kernels:
        from benchmarks.kernel_formats import run_kernels

        return run_kernels(args.size, args.rounds, Path(args.out),
                           "python -m benchmarks.quant_speed " + " ".join(argv or sys.argv[1:]))
    if not args.bundles:
        p.error("give NAME=BUNDLE pairs, or --kernels")
    plan = Plan(repeats=args.repeats, contexts=[100], prefill_tokens=[128])
    rows = []
    for item in args.bundles:
        name, _, path = item.partition("=")
        bundle = Path(path)
        dec = decoder(bundle, plan)
        aud = audio_graph(bundle / "audio.onnx", plan)
        rows.append({"name": name, "path": path, "gb": bundle_sizes(bundle)["total"] / 1e9,
                     # One context and one prefill length were asked for: take the only entry.
                     "decode_tok_s": next(iter(dec["decode"].values()))["tokens_per_s"],
                     "prefill_tok_s": next(iter(dec["prefill"].values()))["tokens_per_s"],
                     "audio_s_per_30s": aud["modes"]["chunked"]["seconds_per_30s"]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    from benchmarks.machine import describe_machine

    out = {"rows": rows, "machine": describe_machine(), "plan": plan.to_dict(),
           "command": "python -m benchmarks.quant_speed " + " ".join(argv or sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    lines = ["| bundle | GB on disk | decode tok/s @100 | prefill tok/s (128) | audio graph s per 30 s |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['gb']:.2f} | {fmt(r['decode_tok_s'])} | "
                     f"{fmt(r['prefill_tok_s'])} | {fmt(r['audio_s_per_30s'], ' s')} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
