"""`edge-moss eval-quant BUNDLE --reference CHECKPOINT_OR_BUNDLE`: quantization quality report.

Teacher-forced comparison of a (quantized) bundle with an fp32 reference on fixed generated clips
and questions; prints a table (or JSON) and records the result in the bundle's manifest. Against
a reference bundle nothing here needs torch; a checkpoint reference loads the torch reference
(the build tools) inside quant.eval, never in this module.
"""

from __future__ import annotations

import sys

from ..errors import BundleError
from ..options import check_number
from ._common import HelpFormatter
from ._extras import require_build_tools


def add_parser(sub) -> None:
    p = sub.add_parser("eval-quant", help="measure a quantized bundle against an fp32 reference",
                       formatter_class=HelpFormatter,
                       description="Teacher-forced comparison of BUNDLE with an fp32 reference "
                                   "(a checkpoint, run by the torch reference, or an fp32 bundle): "
                                   "top-1 agreement, KL divergence, relative logit error and the "
                                   "first greedy divergence, on fixed generated clips. The result "
                                   "is also written into the bundle's manifest.")
    p.add_argument("bundle", help="bundle folder to evaluate")
    p.add_argument("--reference", "-r", required=True,
                   help="checkpoint directory or fp32 bundle folder to compare with")
    p.add_argument("--clips", type=int, default=3,
                   help="number of generated clips, 1-6; each is asked 3 questions")
    p.add_argument("--tokens", type=int, default=32,
                   help="answer tokens teacher-forced and greedily decoded per case, 1-4096")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads, 1-1024 (default: tuned for this machine)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-record", action="store_true",
                   help="do not write the result into the bundle's manifest")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    check_number(args.clips, "--clips", "clips", 1, 6, integer=True)
    check_number(args.tokens, "--tokens", "answer_tokens", 1, 4096, integer=True)
    check_number(args.threads, "--threads", "threads", 1, 1024, integer=True, none_ok=True)
    if _same_folder(args.bundle, args.reference):
        raise BundleError("--reference is the bundle itself: pass the fp32 checkpoint or bundle")
    if not (Path(args.reference) / "manifest.json").is_file():  # a checkpoint: the torch reference
        require_build_tools("eval-quant --reference CHECKPOINT", ("torch", "transformers"))

    from edge_moss_quant.eval import BundleModel, evaluate, format_table, open_reference, \
        record_in_manifest, to_json

    bundle = BundleModel(args.bundle, threads=args.threads)
    reference = open_reference(args.reference, bundle.encoder_mode, threads=args.threads)

    def progress(case) -> None:
        print(f"  {case.clip_seconds:.1f} s clip, question {case.question}: top1 {case.top1:.3f}",
              file=sys.stderr)

    result = evaluate(bundle, reference, clips=args.clips, answer_tokens=args.tokens,
                      progress=progress if sys.stderr.isatty() else None)
    # The results first: a bundle that cannot be written (read-only, full disk) loses nothing.
    print(to_json(result) if args.json else format_table(result), flush=True)
    if not args.no_record:
        manifest = Path(args.bundle) / "manifest.json"
        try:
            record_in_manifest(args.bundle, result)
        except OSError as exc:
            from ..output_files import reason

            Path(f"{manifest}.tmp").unlink(missing_ok=True)  # bundle.write_manifest's half-written copy
            print(f"edge-moss: warning: the result above was not recorded in {manifest}: "
                  f"{reason(exc)} (the bundle is unchanged)", file=sys.stderr)
    return 0


def _same_folder(a: str, b: str) -> bool:
    """The same folder by resolved path or by device and inode (symlinks, bind mounts)."""
    import os

    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
