"""A bundle that differs from another only in its decoder: the quickest way to compare decoder
recipes at 4B (no audio graph export, no embedding table).

    python -m benchmarks.variant_bundle CHECKPOINT BASE_BUNDLE OUT [--method lsq] [--block-size 32]
        [--symmetric | --asymmetric] [--lm-head-bits 8] [--no-fuse] [--accuracy-level 4]

OUT holds hard links to BASE_BUNDLE's audio graph, embeddings and tokenizer, and a decoder built
from CHECKPOINT with the given options (the others as `edge-moss export` defaults them), so it
is what `edge-moss export` would write for the same options whenever BASE_BUNDLE was exported
from CHECKPOINT with that export's defaults for the other parts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from benchmarks.bundles import link_bundle_except
from edge_runtime.bundle import DECODER_GRAPH, describe_files, read_manifest, write_manifest


def build_variant(checkpoint: Path, base: Path, out: Path, **decoder_options) -> Path:
    from edge_moss_export.checkpoint import open_checkpoint
    from edge_moss_export.decoder_graph import build_decoder

    manifest = read_manifest(base)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        link_bundle_except(base, staging, DECODER_GRAPH)
        ckpt = open_checkpoint(checkpoint)
        info = build_decoder(ckpt.numpy, ckpt.config, staging / DECODER_GRAPH, quant="int4",
                             max_context=int(manifest.get("max_context", 4096)),
                             progress=sys.stderr.isatty(), **decoder_options)
        manifest.pop("eval_quant", None)
        manifest["quantization"]["decoder"] = info
        manifest["variant_of"] = str(base.resolve())
        names = [p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()]
        manifest["files"] = describe_files(staging, names)
        write_manifest(staging, manifest)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("base", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--method", default=None)
    p.add_argument("--block-size", type=int, default=None)
    sym = p.add_mutually_exclusive_group()
    sym.add_argument("--symmetric", dest="symmetric", action="store_true", default=None)
    sym.add_argument("--asymmetric", dest="symmetric", action="store_false")
    p.add_argument("--lm-head-bits", type=int, default=None)
    p.add_argument("--no-fuse", dest="fuse", action="store_false", default=None)
    p.add_argument("--accuracy-level", type=int, default=None)
    args = p.parse_args(argv)
    if args.out.exists():
        p.error(f"{args.out} exists")
    out = build_variant(args.checkpoint, args.base, args.out, method=args.method,
                        block_size=args.block_size, symmetric=args.symmetric,
                        lm_head_bits=args.lm_head_bits, fuse=args.fuse,
                        accuracy_level=args.accuracy_level)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
