"""`edge-moss eval-quant BUNDLE --reference CHECKPOINT_OR_BUNDLE`: quantization quality report.

Teacher-forced comparison of a (quantized) bundle with an fp32 reference on fixed generated clips
and questions; prints a table (or JSON) and records the result in the bundle's manifest. Against
a reference bundle nothing here needs torch; a checkpoint reference loads the torch reference
(the build tools) inside quant.eval, never in this module.
"""

from __future__ import annotations

import sys

from ..errors import BundleError
from ._extras import require_build_tools


def add_parser(sub) -> None:
    p = sub.add_parser("eval-quant", help="measure a quantized bundle against an fp32 reference",
                       description="Teacher-forced comparison of BUNDLE with an fp32 reference "
                                   "(a checkpoint, run by the torch reference, or an fp32 bundle): "
                                   "top-1 agreement, KL divergence, relative logit error and the "
                                   "first greedy divergence, on fixed generated clips. The result "
                                   "is also written into the bundle's manifest.")
    p.add_argument("bundle", help="bundle folder to evaluate")
    p.add_argument("--reference", "-r", required=True,
                   help="checkpoint directory or fp32 bundle folder to compare with")
    p.add_argument("--clips", type=int, default=3,
                   help="number of generated clips (1-6; each is asked 3 questions; default 3)")
    p.add_argument("--tokens", type=int, default=32,
                   help="answer tokens teacher-forced and greedily decoded per case (default 32)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-record", action="store_true",
                   help="do not write the result into the bundle's manifest")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from quant.eval import BundleModel, evaluate, format_table, open_reference, \
        record_in_manifest, to_json

    if not (Path(args.reference) / "manifest.json").is_file():  # a checkpoint: the torch reference
        require_build_tools("eval-quant --reference CHECKPOINT", ("torch", "transformers"))
    if Path(args.bundle).resolve() == Path(args.reference).resolve():
        raise BundleError("--reference is the bundle itself: pass the fp32 checkpoint or bundle")
    bundle = BundleModel(args.bundle, threads=args.threads)
    reference = open_reference(args.reference, bundle.encoder_mode, threads=args.threads)

    def progress(case) -> None:
        print(f"  {case.clip_seconds:.1f} s clip, question {case.question}: top1 {case.top1:.3f}",
              file=sys.stderr)

    result = evaluate(bundle, reference, clips=args.clips, answer_tokens=args.tokens,
                      progress=progress if sys.stderr.isatty() else None)
    if not args.no_record:
        record_in_manifest(args.bundle, result)
    print(to_json(result) if args.json else format_table(result))
    return 0
