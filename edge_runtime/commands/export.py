"""`edge-moss export CHECKPOINT -o BUNDLE`: a MOSS-Audio checkpoint -> a runnable bundle."""

from __future__ import annotations

import sys
import time

from ._extras import require_build_tools


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="turn a checkpoint into a quantized bundle",
                       description="Export a Hugging Face MOSS-Audio checkpoint directory into an "
                                   "edge-moss bundle (ONNX graphs + embeddings + tokenizer).")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + safetensors + tokenizer)")
    add_export_options(p)
    p.set_defaults(func=run)


def add_export_options(p, output_required: bool = True) -> None:
    """Every option of `export` but the checkpoint (`pull` takes the same ones)."""
    p.add_argument("-o", "--output", required=output_required, default=None,
                   help="bundle folder to write" + ("" if output_required else
                                                    " (default: ./NAME-QUANT)"))
    p.add_argument("--quant", default="int4", choices=["fp32", "fp16", "int8", "int4"],
                   help="backbone weights (default: int4)")
    p.add_argument("--encoder-mode", default="chunked", choices=["chunked", "full"],
                   help="chunked (default; exact streaming, as the authors' server) or full "
                        "(one pass over the clip, as the Hugging Face reference)")
    p.add_argument("--audio-quant", default=None, choices=["fp32", "fp16", "int8", "int4"],
                   help="audio graph precision (default: int8 for --quant int4, fp32 for fp32, else "
                        "fp16; --target cuda: fp16); int8 and int4 (MatMulNBits weights) record "
                        "their measured error in the manifest")
    p.add_argument("--block-size", type=int, default=None,
                   help="quantization block size along K (default 128; at int4, 32 with "
                        "--lm-head-bits 8 is ~1/3 lower in KL but holds the 4B decoder in 3.5 GiB "
                        "instead of 2.3 and prefills ~0.8x as fast: see the README)")
    sym = p.add_mutually_exclusive_group()
    sym.add_argument("--symmetric", dest="symmetric", action="store_true", default=None,
                     help="symmetric quantization (default for int8)")
    sym.add_argument("--asymmetric", dest="symmetric", action="store_false",
                     help="asymmetric quantization with zero points (default for int4)")
    p.add_argument("--accuracy-level", type=int, default=None, choices=[0, 1, 2, 3, 4],
                   help="MatMulNBits accuracy level (4 = int8 activations, fastest on CPU)")
    p.add_argument("--lm-head-bits", type=int, default=None, choices=[4, 8],
                   help="lm_head bits for int4 (default 4; 8 costs 0.2 GB more memory at 4B)")
    p.add_argument("--method", default=None, choices=["rtn", "mse", "hqq", "lsq"],
                   help="int4/int8 scale search: rtn (round to nearest), mse (per-block clip "
                        "search), hqq (half-quadratic zero-point fit) or lsq (least-squares scale "
                        "and zero-point search, like ggml's k-quants; default for int4)")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", default=None,
                   help="keep q/k/v and gate/up as separate matmuls (default: fused for int4/int8)")
    p.add_argument("--embeddings", default=None, choices=["fp32", "fp16", "int8", "int4"],
                   help="embedding table rows (default: int8 for int8/int4, else the --quant type); "
                        "int4: blocks of 32 with fp16 scales, half the size of int8")
    p.add_argument("--max-context", type=int, default=4096, help="default KV-cache length")
    p.add_argument("--target", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: fp16 decoder activations and KV cache (needed by ONNX Runtime's CUDA "
                        "attention) and an fp16 audio graph; cpu (default): float32")
    p.add_argument("--compact", action="store_true",
                   help="with --quant int4: the smallest bundle (about 3.1 GB at 4B shape): int4 "
                        "audio graph and embeddings, blocks of 128; options given explicitly win. "
                        "Costs accuracy: see the README's quantization table")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")


def run(args) -> int:
    require_build_tools("export")
    from edge_moss_export.bundle_export import ExportOptions, export_bundle

    options = ExportOptions(quant=args.quant, encoder_mode=args.encoder_mode,
                            audio_quant=args.audio_quant, block_size=args.block_size,
                            symmetric=args.symmetric, accuracy_level=args.accuracy_level,
                            lm_head_bits=args.lm_head_bits, embeddings=args.embeddings,
                            max_context=args.max_context, method=args.method, target=args.target,
                            compact=args.compact, fuse=args.fuse, progress=sys.stderr.isatty())
    start = time.perf_counter()
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    out = export_bundle(args.checkpoint, args.output, options, force=args.force, on_stage=say)
    for line in summary_lines(out, time.perf_counter() - start):
        say(line)
    return 0


def summary_lines(bundle, seconds: float) -> list[str]:
    """The closing summary: where, how long, what precision each part has, and every file's size."""
    from ..bundle import read_manifest

    manifest = read_manifest(bundle)
    quant = manifest["quantization"]
    decoder = quant["decoder"]
    parts = [f"decoder {decoder.get('quant', '?')}"
             + (f" (blocks of {decoder['block_size']}, lm_head {decoder['lm_head_quant']})"
                if decoder.get("block_size") else ""),
             f"audio graph {quant['audio']}" + _audio_error(quant),
             f"embeddings {manifest['embeddings']['kind']}"]
    files = manifest["files"]
    total = sum(int(f["bytes"]) for f in files.values())
    lines = [f"bundle written to {bundle} in {seconds:.1f} s: {', '.join(parts)}; "
             f"{len(files)} files, {_size(total)}"]
    for name, info in sorted(files.items(), key=lambda item: -int(item[1]["bytes"])):
        lines.append(f"  {_size(int(info['bytes'])):>9}  {name}")
    return lines


def _audio_error(quant: dict) -> str:
    error = (quant.get(f"audio_{quant['audio']}") or {}).get("error") or {}
    rel = error.get("audio_embeds_rel")
    return f" ({rel:.1%} relative error against fp32, measured at export)" if rel is not None else ""


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count} B"
