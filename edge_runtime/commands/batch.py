"""`edge-moss batch INPUTS... -m BUNDLE -o OUT_DIR`: a whole archive through Ray Data, resumable."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import EdgeMossError
from ._common import MODEL_ENV, add_decode_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "batch", help="transcribe or question many files on Ray (this machine or a cluster)",
        description="Run every input through the bundle on Ray Data, one actor per worker. "
                    "OUT_DIR gets results.jsonl (or .parquet): one record per file with path, "
                    "sha256, duration, text, segments, timings and error; ledger.jsonl makes a "
                    "rerun skip what is done and retry what failed. Per-file outputs (-f) go to "
                    "OUT_DIR/files/<the input's absolute path>.<fmt>. Exit status 1 when a file "
                    "failed (its record says why), 2 on bad arguments.")
    p.add_argument("inputs", nargs="+", metavar="INPUTS",
                   help="audio files, folders (searched recursively), glob patterns, or @LIST "
                        "(a text file with one input per line)")
    p.add_argument("--model", "-m", default=os.environ.get(MODEL_ENV),
                   help=f"bundle folder, the same path on every node (default: ${MODEL_ENV})")
    p.add_argument("-o", "--output-dir", required=True, help="where results and the ledger go")
    p.add_argument("--task", default="transcribe", choices=["transcribe", "ask"])
    p.add_argument("--question", default=None, help="the question for --task ask")
    p.add_argument("--timestamps", action="store_true",
                   help="ask for sentence-level timestamps (transcribe)")
    p.add_argument("--address", default="local",
                   help="'local' (default: start Ray on this machine, loopback only), 'auto' "
                        "(the running cluster), HOST:PORT or ray://HOST:PORT")
    p.add_argument("--workers", type=int, default=None,
                   help="actors, each with its own copy of the model (default: fill the CPUs, "
                        "as many as fit in memory locally)")
    p.add_argument("--threads-per-worker", type=int, default=None, dest="threads",
                   help="ONNX Runtime threads per actor, also its Ray CPUs "
                        "(default: CPUs / workers)")
    p.add_argument("--format", default="jsonl", choices=["jsonl", "parquet"], dest="results_format",
                   help="results file format (default: jsonl)")
    p.add_argument("-f", "--file-formats", default="",
                   help="per-file outputs, comma-separated: srt,vtt,json,txt (default: none)")
    p.add_argument("--window", type=float, default=30.0,
                   help="longest window fed to the model at once, in seconds (default 30)")
    p.add_argument("--no-vad", action="store_true", help="do not skip non-speech")
    p.add_argument("--rehash", action="store_true",
                   help="check finished files by their sha256 even when size and mtime match")
    p.add_argument("--max-context", type=int, default=None, help="KV-cache length in tokens")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    add_decode_args(p, max_new_tokens=None)
    p.set_defaults(func=run)


def _formats(text: str) -> tuple[str, ...]:
    out = []
    for name in (part.strip().lower().lstrip(".") for part in text.split(",")):
        if name and name not in out:
            out.append(name)
    return tuple(out)


def build_config(args: argparse.Namespace):
    """The checked BatchConfig (raises EdgeMossError on a bad flag; imports no Ray)."""
    from ..batch.options import TaskOptions
    from ..batch.runner import BatchConfig
    from ..errors import BundleError
    from ..inputs import expand_inputs

    if not args.model:
        raise BundleError(f"no bundle given: pass --model BUNDLE or set ${MODEL_ENV}")
    options = TaskOptions(task=args.task, question=args.question, timestamps=args.timestamps,
                          window_s=args.window, vad=not args.no_vad,
                          decode={"max_new_tokens": args.max_new_tokens,
                                  "temperature": args.temperature, "top_k": args.top_k,
                                  "top_p": args.top_p, "seed": args.seed})
    if args.max_context is not None and args.max_context < 1:
        raise EdgeMossError("--max-context must be at least 1")
    return BatchConfig(inputs=expand_inputs(args.inputs, allow_stdin=False),
                       out_dir=args.output_dir, bundle=args.model, options=options,
                       address=args.address, workers=args.workers, threads=args.threads,
                       results_format=args.results_format,
                       file_formats=_formats(args.file_formats), progress=not args.no_progress,
                       rehash=args.rehash, max_context=args.max_context)


def run(args) -> int:
    cfg = build_config(args)
    from ..batch.runner import run_batch

    summary = run_batch(cfg)
    print(f"edge-moss batch: {summary.line()}", file=sys.stderr)
    return 1 if summary.failed else 0
