"""`edge-moss pull REPO_ID`: download a checkpoint from a model hub, then export it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import EdgeMossError, MissingExtraError


def add_parser(sub) -> None:
    p = sub.add_parser("pull", help="download a checkpoint and export it (needs network)",
                       description="Download a MOSS-Audio checkpoint (huggingface_hub) and export it "
                                   "to a bundle. The only command that uses the network.")
    p.add_argument("repo_id", help="e.g. OpenMOSS-Team/MOSS-Audio-4B-Instruct")
    p.add_argument("-o", "--output", default=None, help="bundle folder (default: ./NAME-QUANT)")
    p.add_argument("--quant", default="int4", choices=["fp32", "fp16", "int8", "int4"])
    p.add_argument("--revision", default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingExtraError("pull needs huggingface_hub: pip install huggingface_hub "
                                "(or download the checkpoint yourself and run `edge-moss export DIR`)"
                                ) from None
    name = args.repo_id.rstrip("/").split("/")[-1]
    out = Path(args.output or f"{name}-{args.quant}")
    try:
        local = snapshot_download(args.repo_id, revision=args.revision,
                                  allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"])
    except Exception as exc:  # the hub raises many kinds; all mean "could not download"
        offline = os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0")
        why = "HF_HUB_OFFLINE is set" if offline else f"{type(exc).__name__}"
        raise EdgeMossError(
            f"could not download {args.repo_id} ({why}): this machine cannot reach the model hub. "
            "Copy the checkpoint folder here another way and run `edge-moss export DIR -o BUNDLE`"
        ) from None
    import argparse

    from . import export as export_command

    # Export's own parser supplies every default, so pull never drifts from `edge-moss export`.
    parser = argparse.ArgumentParser(prog="edge-moss")
    export_command.add_parser(parser.add_subparsers())
    export_args = parser.parse_args(["export", local, "-o", str(out), "--quant", args.quant])
    print(f"downloaded {args.repo_id} to {local}; exporting", file=sys.stderr)
    return export_command.run(export_args)
