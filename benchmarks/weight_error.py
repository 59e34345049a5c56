"""Weight error of the 4-bit formats on the same checkpoint matrices, ggml's Q4_K included:

    python -m benchmarks.weight_error CHECKPOINT --gguf MOSS_Q4_K.gguf [--bundle BUNDLE]
        [--layers 0 35] [--out FILE.json]

For each linear of the chosen decoder layers: ||W_q - W|| / ||W|| for Q4_K (dequantized from the
GGUF), the bundle's own weights (dequantized from its decoder graph) and quant.blockwise's
methods and block sizes, computed here. Summed over the matrices (squared errors weighted by
size), it ranks the quantizers on exactly the weights the quality benchmark uses, in minutes and
a few hundred MB, without a 4B forward pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_moss_quant.blockwise import dequantize_blockwise, quantize_blockwise

VARIANTS = (  # (label, block, symmetric, method)
    ("b32 asym mse", 32, False, "mse"), ("b32 asym lsq", 32, False, "lsq"),
    ("b32 sym lsq", 32, True, "lsq"), ("b64 asym lsq", 64, False, "lsq"),
    ("b128 asym mse", 128, False, "mse"), ("b128 asym lsq", 128, False, "lsq"),
)
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _bits_per_value(block: int, symmetric: bool) -> float:
    return 4 + 32 / block + (0 if symmetric else 4 / block)  # codes + fp32 scale + 4-bit zero point


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--gguf", required=True)
    p.add_argument("--bundle", default=None, help="also its own (dequantized) decoder weights")
    p.add_argument("--layers", type=int, nargs="+", default=[0, 35])
    p.add_argument("--out", default="benchmarks/weight_error.json")
    args = p.parse_args(argv)

    from edge_moss_export.checkpoint import open_checkpoint
    from edge_moss_quant.gguf_weights import GGUFWeights

    ckpt = open_checkpoint(args.checkpoint)
    names = [f"language_model.layers.{i}.{proj}.weight" for i in args.layers for proj in PROJECTIONS]
    gguf = GGUFWeights(args.gguf, names)
    bundle = None
    if args.bundle:
        from edge_moss_quant.bundle_weights import BundleWeights

        bundle = BundleWeights(args.bundle)
    sq = {}  # label -> [sum of squared errors, sum of squared weights]
    per_matrix = []
    for name in names:
        w = ckpt.numpy(name)
        norm2 = float(np.square(w, dtype=np.float64).sum())
        got = {f"Q4_K ({gguf.type_name(name)}, GGUF)": gguf.numpy(name)}
        if bundle is not None:
            got["bundle"] = bundle.numpy(name)
        for label, block, sym, method in VARIANTS:
            got[label] = dequantize_blockwise(quantize_blockwise(w, 4, block, sym, method))
        errs = {}
        for label, approx in got.items():
            e2 = float(np.square(approx - w, dtype=np.float64).sum())
            acc = sq.setdefault(label, [0.0, 0.0])
            acc[0] += e2
            acc[1] += norm2
            errs[label] = (e2 / norm2) ** 0.5
        per_matrix.append({"name": name, "shape": list(w.shape), "rel": errs})
        print(json.dumps({"name": name, **{k: round(v, 5) for k, v in errs.items()}}), file=sys.stderr,
              flush=True)
    total = {label: (e2 / n2) ** 0.5 for label, (e2, n2) in sq.items()}
    bits = {label: _bits_per_value(block, sym) for label, block, sym, _ in VARIANTS}
    bits[next(k for k in total if k.startswith("Q4_K"))] = 4.5
    from benchmarks.machine import describe_machine

    out = {"total_rel": total, "bits_per_value": bits, "matrices": per_matrix, "layers": args.layers,
           "command": "python -m benchmarks.weight_error " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": describe_machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    lines = ["| weights | bits per value | relative weight error (all sampled matrices) |", "|---|---|---|"]
    for label, rel in sorted(total.items(), key=lambda kv: kv[1]):
        b = bits.get(label)
        lines.append(f"| {label} | {b:.3g} | {rel:.4f} |" if b else f"| {label} | as the bundle | {rel:.4f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
