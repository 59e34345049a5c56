"""ONNX Runtime sessions with the settings edge-moss runs well with on small machines.

- intra-op threads: one per physical core this process may run on (hyperthread siblings share a
  core's memory port and add nothing to a bandwidth-bound decode). On the 2-vCPU build VM, two
  threads decode and prefill about 2x faster than one (benchmarks/RESULTS.md, thread sweep);
- inter-op 1 (the graphs are sequential), spin-waiting off (no 100 % CPU between tokens);
- all graph optimizations by default (`optimization` picks another level: benchmarks only; an
  fp16-activation decoder computes garbage on the CPU below the last level, ORT 1.32);
- telemetry off; nothing here touches the network.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .errors import DeviceError
from .providers import (DEVICES, PROVIDER_OF, available_devices, check_device,  # noqa: F401
                        create_session, provider_chain)

log = logging.getLogger(__name__)

_telemetry_done = False


def _disable_telemetry() -> None:
    global _telemetry_done
    if not _telemetry_done:
        fn = getattr(ort, "disable_telemetry_events", None)
        if fn is not None:
            fn()
        _telemetry_done = True


def _usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int] | None = None, sysfs: str | Path = "/sys/devices/system/cpu") -> int:
    """Distinct physical cores among `cpus` (default: the CPUs this process may use).

    Read from Linux sysfs topology (package id, core id); where that is missing, the logical
    count, halved above 4 logical CPUs (assumed 2-way SMT).
    """
    cpus = _usable_cpus() if cpus is None else cpus
    cores = set()
    for cpu in cpus:
        topo = Path(sysfs) / f"cpu{cpu}" / "topology"
        try:
            package = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            n = len(cpus)
            return max(1, n // 2) if n > 4 else max(1, n)
        cores.add((package, core))
    return max(1, len(cores))


def default_threads() -> int:
    """Intra-op threads: one per physical core this process may use."""
    return physical_cores()


def providers_for(device: str) -> list[str]:
    """Provider names tried for `device`, CPU last (availability is checked at session time)."""
    return [name for name, _ in provider_chain(device)]


OPTIMIZATION_LEVELS = {
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
DEFAULT_OPTIMIZATION = "all"


def session_options(threads: int | None = None, cpu_arena: bool = True, mem_pattern: bool = True,
                    optimization: str = DEFAULT_OPTIMIZATION, **opts: Any) -> ort.SessionOptions:
    """SessionOptions with edge-moss defaults; `opts` are extra session config entries."""
    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = bool(cpu_arena)
    so.enable_mem_pattern = bool(mem_pattern)
    so.intra_op_num_threads = int(threads or default_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    so.log_severity_level = 3  # errors only: no per-node warnings on stderr
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    for key, value in opts.items():
        so.add_session_config_entry(str(key), str(value))
    return so


def make_session(path: str | Path, device: str = "cpu", threads: int | None = None,
                 disabled_optimizers: list[str] | None = None, cpu_arena: bool = True,
                 mem_pattern: bool = True, optimization: str = DEFAULT_OPTIMIZATION,
                 **opts: Any) -> ort.InferenceSession:
    """An InferenceSession for the graph at `path` on `device` (CPU fallback with a message).

    `opts` are ONNX Runtime session config entries (e.g. {"session.x": "1"}); pass them as a
    dict via **{...} since their keys contain dots.
    """
    _disable_telemetry()
    path = Path(path)
    if not path.is_file():
        raise DeviceError(f"model graph {path} does not exist")
    check_device(device)
    so = session_options(threads, cpu_arena=cpu_arena, mem_pattern=mem_pattern,
                         optimization=optimization, **opts)
    kwargs: dict[str, Any] = {}
    if disabled_optimizers:
        kwargs["disabled_optimizers"] = list(disabled_optimizers)
    # GPU unavailable or failing: CPU with one message on stderr (see providers.create_session).
    return create_session(path, device, so, **kwargs)
