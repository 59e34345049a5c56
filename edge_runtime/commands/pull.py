"""`edge-moss pull REPO_ID`: download a checkpoint from a model hub, then export it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import EdgeMossError, MissingExtraError
from . import export as export_command
from ._extras import require_build_tools


def add_parser(sub) -> None:
    p = sub.add_parser("pull", help="download a checkpoint and export it (needs network)",
                       description="Download a MOSS-Audio checkpoint (huggingface_hub) and export it "
                                   "to a bundle. The only command that uses the network.")
    p.add_argument("repo_id", help="e.g. OpenMOSS-Team/MOSS-Audio-4B-Instruct")
    p.add_argument("--revision", default=None, help="hub revision (default: the main branch)")
    export_command.add_export_options(p, output_required=False)  # every export option, same defaults
    p.set_defaults(func=run)


def run(args) -> int:
    require_build_tools("pull")  # before a download of gigabytes that could not be exported
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
    print(f"downloaded {args.repo_id} to {local}; exporting", file=sys.stderr)
    args.checkpoint, args.output = local, str(out)
    return export_command.run(args)
