"""`edge-moss doctor`: what this machine offers the runtime (providers, devices, memory)."""

from __future__ import annotations

import json
import os
import platform


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="report execution providers, audio devices and memory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _memory() -> dict:
    info = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                key, value = line.split(":", 1)
                if key in ("MemTotal", "MemAvailable"):
                    info[key] = round(int(value.split()[0]) / 1024 / 1024, 2)  # GiB
    except OSError:
        pass
    return info


def report() -> dict:
    import onnxruntime as ort

    out = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "jetson": os.path.exists("/etc/nv_tegra_release"),
    }
    try:
        from ..capture import list_input_devices

        out["input_devices"] = [d["name"] for d in list_input_devices()]
    except Exception as exc:  # doctor reports problems, it does not fail on them
        out["input_devices"] = f"unavailable: {exc}"
    return out


def run(args) -> int:
    info = report()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        print(f"{key:15s} {value}")
    if "CUDAExecutionProvider" not in info["providers"]:
        print("cuda           not available (pip install 'edge-moss[gpu]'; on Jetson use NVIDIA's "
              "JetPack onnxruntime-gpu wheel)")
    return 0
