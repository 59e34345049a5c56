"""Execution providers: which ONNX Runtime providers a device needs, and falling back to the CPU.

`--device cuda|tensorrt` asks for onnxruntime-gpu's providers. When the installed onnxruntime
lacks them, or they are listed but a session cannot start on them (missing CUDA/cuDNN libraries,
no GPU, out of device memory), the graph runs on the CPU instead and ONE line on stderr says why.
A run never fails just because the GPU is unusable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .errors import DeviceError

DEVICES = ("cpu", "cuda", "tensorrt")
PROVIDER_OF = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
LABEL_OF = {"cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT"}
INSTALL_HINT = "install onnxruntime-gpu; on Jetson NVIDIA's JetPack wheel"

_warned: set[str] = set()


def check_device(device: str) -> str:
    """`device` itself if it is one edge-moss knows; DeviceError otherwise."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    return device


def available_devices() -> list[str]:
    """Devices whose execution provider this onnxruntime build lists ('cpu' always)."""
    have = set(ort.get_available_providers())
    return [d for d in DEVICES if d == "cpu" or PROVIDER_OF[d] in have]


def cuda_options(device_id: int = 0) -> dict[str, Any]:
    """CUDA EP options: grow the arena only by what is asked (a Jetson shares its one memory
    with the OS), heuristic conv algorithm search (no slow benchmarking of the audio stem)."""
    return {
        "device_id": int(device_id),
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": True,
    }


def tensorrt_options(device_id: int = 0, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """TensorRT EP options: fp16 engines cached on disk (building one takes minutes).

    GroupQueryAttention and MatMulNBits have no TensorRT implementation: those nodes run on the
    CUDA EP, which is why the chain for 'tensorrt' also lists CUDA.
    """
    cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "edge-moss" / "tensorrt"
    return {
        "device_id": int(device_id),
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
    }


def provider_chain(device: str, device_id: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """(provider, options) pairs for `device`, most preferred first, CPU always last."""
    check_device(device)
    cpu = (PROVIDER_OF["cpu"], {})
    if device == "cpu":
        return [cpu]
    chain = [(PROVIDER_OF["cuda"], cuda_options(device_id)), cpu]
    if device == "tensorrt":
        chain.insert(0, (PROVIDER_OF["tensorrt"], tensorrt_options(device_id)))
    return chain


def fallback_device(device: str) -> tuple[str, str | None]:
    """(device to use, why it differs from `device` or None) given the providers ORT lists."""
    check_device(device)
    if device == "cpu":
        return "cpu", None
    have = set(ort.get_available_providers())
    if PROVIDER_OF[device] in have:
        return device, None
    if device == "tensorrt" and PROVIDER_OF["cuda"] in have:
        return "cuda", (f"TensorRT requested but onnxruntime has no {PROVIDER_OF['tensorrt']}; "
                        "running on CUDA")
    return "cpu", (f"{LABEL_OF[device]} requested but onnxruntime has no {PROVIDER_OF[device]} "
                   f"({INSTALL_HINT}); running on CPU")


def warn_once(message: str) -> None:
    """Print `edge-moss: message` on stderr, once per process (two graphs fall back alike)."""
    if message not in _warned:
        _warned.add(message)
        print(f"edge-moss: {message}", file=sys.stderr, flush=True)


def session_device(session: ort.InferenceSession) -> str:
    """The device a session's first (preferred) provider runs on: 'cuda' for CUDA and TensorRT."""
    first = session.get_providers()[0]
    return "cuda" if first in (PROVIDER_OF["cuda"], PROVIDER_OF["tensorrt"]) else "cpu"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def create_session(path: str | Path, device: str, sess_options: ort.SessionOptions,
                   device_id: int = 0, **kwargs: Any) -> ort.InferenceSession:
    """An InferenceSession on `device`, or on the CPU (with one message) when that cannot work.

    kwargs go to InferenceSession (e.g. disabled_optimizers).
    """
    use, why = fallback_device(device)
    if why:
        warn_once(why)
    if use != "cpu":
        try:
            chain = provider_chain(use, device_id)
            session = ort.InferenceSession(str(path), sess_options=sess_options,
                                           providers=[name for name, _ in chain],
                                           provider_options=[opts for _, opts in chain], **kwargs)
        except Exception as exc:  # provider listed but unusable: say so, then run on the CPU
            warn_once(f"{LABEL_OF[use]} session failed to start ({_first_line(exc)}); running on CPU")
        else:
            if PROVIDER_OF[use] not in session.get_providers():
                # ORT drops a provider whose libraries fail to load and goes on with the rest.
                got = LABEL_OF[session_device(session)]
                warn_once(f"{LABEL_OF[use]} provider could not be loaded (CUDA/cuDNN/TensorRT "
                          f"libraries missing or no GPU); running on {got}")
            return session
    return ort.InferenceSession(str(path), sess_options=sess_options,
                                providers=[PROVIDER_OF["cpu"]], **kwargs)
