"""Flags shared by the commands that run a bundle."""

from __future__ import annotations

import argparse
import os

from ..errors import BundleError, EdgeMossError, MissingExtraError

MODEL_ENV = "EDGE_MOSS_MODEL"


def add_model_args(parser: argparse.ArgumentParser, device_flag: bool = True,
                   backend_flag: bool | None = None) -> None:
    """--model/--device/--threads/--max-context (+ --backend/--bnb). `listen` uses --device for the
    microphone, so there the execution provider is only spelled --provider (accepted everywhere).
    backend_flag (default: device_flag) adds --backend onnx|torch and --bnb; `listen` needs the
    ONNX encoder's chunk interface, so it gets neither."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", default=os.environ.get(MODEL_ENV),
                       help=f"bundle folder made by `edge-moss export` (default: ${MODEL_ENV})")
    flags = ["--device", "--provider"] if device_flag else ["--provider"]
    group.add_argument(*flags, dest="provider", default="cpu", choices=["cpu", "cuda", "tensorrt"],
                       help="execution provider (default: cpu; cuda falls back to cpu with a message)")
    group.add_argument("--threads", type=int, default=None,
                       help="ONNX Runtime intra-op threads (default: one per physical core, measured "
                            "fastest; listen uses the same, as capture needs little CPU)")
    group.add_argument("--max-context", type=int, default=None,
                       help="KV-cache length in tokens (bounds memory; default from the bundle)")
    if device_flag if backend_flag is None else backend_flag:
        group.add_argument("--backend", default="onnx", choices=["onnx", "torch"],
                           help="onnx (default): an exported bundle on ONNX Runtime; torch: the "
                                "checkpoint directory on torch (+ bitsandbytes, see --bnb)")
        group.add_argument("--bnb", default=None, choices=["4bit", "8bit", "none"],
                           help="with --backend torch: bitsandbytes NF4 (4bit, default), "
                                "LLM.int8 (8bit) or no quantization")


def add_decode_args(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    group.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    group.add_argument("--top-k", type=int, default=0, help="0 = off")
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--seed", type=int, default=None)


def decode_settings(args: argparse.Namespace) -> dict:
    """The decoding flags, checked before any model loads (a bad value is one line, not a traceback)."""
    from ..sampling import SamplerConfig

    if args.max_new_tokens < 1:
        raise EdgeMossError("--max-new-tokens must be at least 1")
    try:
        SamplerConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                      seed=args.seed)
    except ValueError as exc:
        raise EdgeMossError(f"sampling settings: {exc}") from None
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
            "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}


def load_model(args: argparse.Namespace, **kwargs):
    """Open the bundle named by --model (imports the runtime only when a command needs it).

    With --backend torch, --model names a checkpoint directory, loaded by quant.bnb_backend
    (imported here only: the runtime itself never needs torch)."""
    backend = getattr(args, "backend", "onnx")
    bnb = getattr(args, "bnb", None)
    if backend != "torch" and bnb is not None:
        raise BundleError("--bnb applies to --backend torch only")
    if backend == "torch":
        if not args.model:
            raise BundleError(f"no checkpoint given: with --backend torch pass --model CHECKPOINT_DIR "
                              f"(or set ${MODEL_ENV})")
        try:
            from quant.bnb_backend import load_torch_model
        except ImportError as exc:
            raise MissingExtraError(f"--backend torch needs the build tools ({exc.name} is missing): "
                                    "pip install 'edge-moss[gpu,export]'") from None
        return load_torch_model(args.model, bnb=bnb, device=args.provider, threads=args.threads,
                                max_context=args.max_context, **kwargs)
    from ..api import EdgeMoss

    if not args.model:
        raise BundleError(f"no bundle given: pass --model BUNDLE or set ${MODEL_ENV} "
                          "(make one with `edge-moss export CHECKPOINT -o BUNDLE`)")
    return EdgeMoss(args.model, device=args.provider, threads=args.threads,
                    max_context=args.max_context, **kwargs)
