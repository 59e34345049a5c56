"""Flags shared by the commands that run a bundle."""

from __future__ import annotations

import argparse
import os

from ..errors import BundleError, MissingExtraError
from ..options import DecodeOptions, ModelOptions

MODEL_ENV = "EDGE_MOSS_MODEL"


COMPUTE_DEVICES = ("cpu", "cuda", "tensorrt")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help states every option's default: "(default: X)" is added where the help text does not
    already say it; an on/off flag reads "(default: off)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None:
            return text
        return f"{text} (default: %(default)s)"


def _compute_device(value: str) -> str:
    if value not in COMPUTE_DEVICES:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a compute device (choose from {', '.join(COMPUTE_DEVICES)}); "
            "a microphone is chosen with `listen --mic-device` (see `edge-moss devices`)")
    return value


def add_model_args(parser: argparse.ArgumentParser, device_flag: bool = True,
                   backend_flag: bool | None = None) -> None:
    """--model/--device/--threads/--max-context (+ --backend/--bnb). --device is the compute
    device in every command (--provider is the same option); `listen` names its microphone
    --mic-device. backend_flag (default: device_flag, kept for older callers) adds --backend
    onnx|torch and --bnb; `listen` needs the ONNX encoder's chunk interface, so it gets neither."""
    if backend_flag is None:
        backend_flag = device_flag
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", default=os.environ.get(MODEL_ENV),
                       help=f"bundle folder made by `edge-moss export` (default: ${MODEL_ENV})")
    group.add_argument("--device", "--provider", dest="provider", default="cpu",
                       type=_compute_device, choices=COMPUTE_DEVICES,
                       help="compute device: the ONNX Runtime execution provider (default: cpu; "
                            "cuda falls back to cpu with a message)")
    group.add_argument("--threads", type=int, default=None,
                       help="ONNX Runtime intra-op threads, 1-1024 (default: one per physical core, "
                            "measured fastest; listen uses the same, as capture needs little CPU)")
    group.add_argument("--max-context", type=int, default=None,
                       help="KV-cache length in tokens, 64-1048576; bounds memory "
                            "(default: the bundle's own, usually 4096)")
    if backend_flag:
        group.add_argument("--backend", default="onnx", choices=["onnx", "torch"],
                           help="onnx (default): an exported bundle on ONNX Runtime; torch: the "
                                "checkpoint directory on torch (+ bitsandbytes, see --bnb)")
        group.add_argument("--bnb", default=None, choices=["4bit", "8bit", "none"],
                           help="with --backend torch: bitsandbytes NF4 (4bit, default), "
                                "LLM.int8 (8bit) or no quantization")


def add_decode_args(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                       help="most tokens generated per answer or window, 1-32768")
    group.add_argument("--temperature", type=float, default=0.0,
                       help="sampling temperature, 0-10; 0 = greedy")
    group.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest; 0 = off")
    group.add_argument("--top-p", type=float, default=1.0,
                       help="nucleus sampling mass, (0, 1]; 1 = off")
    group.add_argument("--seed", type=int, default=None,
                       help="random seed for sampling (default: fresh, not reproducible)")


def decode_options(args: argparse.Namespace, **extra) -> DecodeOptions:
    """The decoding flags, checked before any model loads (a bad value is one line, not a traceback)."""
    return DecodeOptions(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, seed=args.seed, **extra)


def decode_settings(args: argparse.Namespace) -> dict:
    """decode_options as keyword arguments for EdgeMoss.ask/transcribe."""
    opts = decode_options(args)
    return {"max_new_tokens": opts.max_new_tokens, "temperature": opts.temperature,
            "top_k": opts.top_k, "top_p": opts.top_p, "seed": opts.seed}


def model_options(args: argparse.Namespace) -> ModelOptions:
    """The model flags, checked with the others before any input is read."""
    if getattr(args, "backend", "onnx") != "torch" and getattr(args, "bnb", None) is not None:
        raise BundleError("--bnb applies to --backend torch only")
    return ModelOptions(threads=args.threads, max_context=args.max_context)


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
            from edge_moss_quant.bnb_backend import load_torch_model
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
