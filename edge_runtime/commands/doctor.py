"""`edge-moss doctor`: what this machine offers the runtime (providers, GPU, memory, devices).

With --model BUNDLE it also estimates the memory the bundle needs: its files (graphs, weights,
embedding table; loaded into memory) plus the KV cache at --max-context
(layers x kv_heads x head_dim x 2 (K and V) x bytes per value x tokens).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

JETSON_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
MEMINFO = Path("/proc/meminfo")
GIB = 1024 ** 3


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="report execution providers, GPU, memory and audio devices")
    p.add_argument("--json", action="store_true")
    p.add_argument("--model", "-m", default=os.environ.get("EDGE_MOSS_MODEL"),
                   help="also estimate the memory this bundle needs")
    p.add_argument("--max-context", type=int, default=None,
                   help="KV-cache length for the estimate (default: the bundle's)")
    p.set_defaults(func=run)


def memory_gib(meminfo: Path = MEMINFO) -> dict[str, float]:
    """MemTotal / MemAvailable in GiB (empty where /proc/meminfo is unreadable)."""
    info = {}
    try:
        for line in meminfo.read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                info[key] = round(int(value.split()[0]) * 1024 / GIB, 2)
    except (OSError, ValueError, IndexError):
        pass
    return info


def jetson_info(release: Path = JETSON_RELEASE, model: Path = DEVICE_TREE_MODEL) -> dict[str, Any]:
    """Whether this is an NVIDIA Jetson (L4T release file or a Jetson device-tree model)."""
    def read(path: Path) -> str:
        try:
            return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
        except OSError:
            return ""

    board, l4t = read(model), read(release).splitlines()
    detected = bool(l4t) or "jetson" in board.lower()
    out: dict[str, Any] = {"detected": detected}
    if board:
        out["board"] = board
    if l4t:
        out["l4t"] = l4t[0].lstrip("# ").strip()
    return out


def gpu_info() -> list[dict[str, Any]] | str:
    """GPUs as nvidia-smi sees them (name, memory MiB), or why none are listed."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "nvidia-smi not found"
    try:
        done = subprocess.run([exe, "--query-gpu=name,memory.total,memory.used",
                               "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    if done.returncode != 0:
        return f"nvidia-smi failed: {(done.stderr or done.stdout).strip()[:200]}"
    gpus = []
    for line in done.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        entry: dict[str, Any] = {"name": parts[0]}
        for key, value in zip(("memory_total_mib", "memory_used_mib"), parts[1:]):
            try:
                entry[key] = int(float(value))
            except ValueError:  # Jetson's nvidia-smi prints [N/A]
                entry[key] = value
        gpus.append(entry)
    return gpus


def probe_provider(device: str) -> dict[str, Any]:
    """Start a tiny session (the bundled VAD graph) on `device`: does the provider really work?"""
    import onnxruntime as ort

    from ..providers import PROVIDER_OF, provider_chain
    from ..vad import MODEL_PATH

    name = PROVIDER_OF[device]
    if name not in ort.get_available_providers():
        return {"usable": False, "detail": f"onnxruntime lacks {name}"}
    chain = provider_chain(device)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(MODEL_PATH), sess_options=so,
                                       providers=[n for n, _ in chain],
                                       provider_options=[o for _, o in chain])
    except Exception as exc:  # report, never fail
        return {"usable": False, "detail": f"session failed: {str(exc).strip()[:200]}"}
    if name not in session.get_providers():
        return {"usable": False, "detail": f"{name} could not be loaded (libraries or GPU missing)"}
    return {"usable": True, "detail": "a test session started"}


def bundle_estimate(model: str | Path, max_context: int | None = None) -> dict[str, Any]:
    """Memory a bundle needs: its files plus the KV cache at `max_context` tokens."""
    from ..bundle import config_from_manifest, read_manifest

    manifest = read_manifest(Path(model))
    lang = config_from_manifest(manifest).language
    decoder = manifest.get("quantization", {}).get("decoder", {})
    io_dtype = decoder.get("io_dtype", "fp32") if isinstance(decoder, dict) else "fp32"
    value_bytes = 2 if io_dtype == "fp16" else 4
    context = int(max_context or manifest.get("max_context", 4096))
    per_token = lang.num_hidden_layers * lang.num_key_value_heads * lang.head_dim * 2 * value_bytes
    files = sum(int(f.get("bytes", 0)) for f in manifest["files"].values())
    return {
        "bundle": str(model),
        "files_gib": round(files / GIB, 3),
        "kv_cache_dtype": "float16" if value_bytes == 2 else "float32",
        "kv_bytes_per_token": per_token,
        "max_context": context,
        "kv_cache_gib": round(per_token * context / GIB, 3),
        "total_gib": round((files + per_token * context) / GIB, 3),
        "note": "plus ONNX Runtime working memory (activations, arenas), roughly a few hundred MB",
    }


def report(model: str | Path | None = None, max_context: int | None = None) -> dict[str, Any]:
    import onnxruntime as ort

    from ..providers import DEVICES

    out: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "usable": {d: probe_provider(d) for d in DEVICES if d != "cpu"},
        "gpus": gpu_info(),
        "jetson": jetson_info(),
    }
    try:
        from ..capture import list_input_devices

        out["input_devices"] = [d["name"] for d in list_input_devices()]
    except Exception as exc:  # doctor reports problems, it does not fail on them
        out["input_devices"] = f"unavailable: {exc}"
    if model:
        try:
            estimate = bundle_estimate(model, max_context)
        except Exception as exc:
            out["bundle"] = f"unreadable: {exc}"
        else:
            available = out["memory_gib"].get("MemAvailable")
            if available is not None:
                estimate["fits_available_memory"] = estimate["total_gib"] < available
            out["bundle"] = estimate
    return out


def run(args) -> int:
    info = report(getattr(args, "model", None), getattr(args, "max_context", None))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for line in format_report(info):
        print(line)
    return 0


def _gib(value: float) -> str:
    return f"{value:.2f} GiB"


def format_report(info: dict[str, Any]) -> list[str]:
    """The report in words and units, one fact a line (--json keeps the raw structure)."""
    lines = [f"python          {info['python']} on {info['machine']}, {info['cpus']} logical CPUs"]
    memory = info["memory_gib"]
    if memory:
        lines.append(f"memory          {_gib(memory['MemTotal'])} total, "
                     f"{_gib(memory['MemAvailable'])} available now")
    else:
        lines.append("memory          unknown (/proc/meminfo unreadable)")
    lines.append(f"onnxruntime     {info['onnxruntime']}, providers: {', '.join(info['providers'])}")
    for device, probe in info["usable"].items():
        state = "usable" if probe["usable"] else "not usable"
        lines.append(f"{device:15s} {state}: {probe['detail']}")
    if not info["usable"]["cuda"]["usable"]:
        lines.append("                (for CUDA: pip install 'edge-moss[gpu]'; on Jetson use NVIDIA's "
                     "JetPack onnxruntime-gpu wheel, see docs/gpu-jetson.md)")
    gpus = info["gpus"]
    if isinstance(gpus, str):
        lines.append(f"GPUs            none listed ({gpus})")
    else:
        for gpu in gpus:
            total, used = gpu.get("memory_total_mib"), gpu.get("memory_used_mib")
            size = (f"{total} MiB total, {used} MiB used" if isinstance(total, int)
                    else "memory not reported (shared with the CPU on Jetson)")
            lines.append(f"GPU             {gpu['name']}: {size}")
    jetson = info["jetson"]
    lines.append("Jetson          " + (
        "yes: " + "; ".join(str(jetson[k]) for k in ("board", "l4t") if k in jetson)
        if jetson["detected"] else "no"))
    devices = info["input_devices"]
    lines.append("input devices   " + (devices if isinstance(devices, str) else
                                       ", ".join(devices) if devices else "none found"))
    bundle = info.get("bundle")
    if isinstance(bundle, str):
        lines.append(f"bundle          {bundle}")
    elif bundle:
        lines.append(f"bundle          {bundle['bundle']} needs about {_gib(bundle['total_gib'])}:")
        lines.append(f"  files         {_gib(bundle['files_gib'])} (graphs, weights, embedding table; "
                     "held in memory)")
        lines.append(f"  KV cache      {_gib(bundle['kv_cache_gib'])} for {bundle['max_context']} tokens "
                     f"({bundle['kv_cache_dtype']}, {bundle['kv_bytes_per_token']:,} bytes a token)")
        lines.append(f"  plus          {bundle['note'].removeprefix('plus ')}")
        if "fits_available_memory" in bundle:
            lines.append("  fits          " + ("yes, in the memory available now" if
                                             bundle["fits_available_memory"] else
                                             "NO: more than the memory available now"))
    return lines
