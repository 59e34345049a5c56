"""ONNX Runtime sessions with the settings edge-moss runs well with on small machines.

- intra-op threads: 1 on machines with <= 2 logical CPUs (2 threads on 2 vCPUs measured slower
  than 1: the second vCPU is usually busy with audio capture or a hyperthread sibling), else
  roughly the physical core count;
- inter-op 1 (the graphs are sequential), spin-waiting off (no 100 % CPU between tokens);
- full graph optimizations; telemetry off; nothing here touches the network.
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


def default_threads() -> int:
    """Intra-op threads: 1 on <= 2 logical CPUs, else about the physical core count."""
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        logical = os.cpu_count() or 1
    if logical <= 2:
        return 1
    # Without a portable physical-core query, assume 2-way SMT above 4 logical CPUs.
    return max(1, logical // 2) if logical > 4 else logical


def providers_for(device: str) -> list[str]:
    """Provider names tried for `device`, CPU last (availability is checked at session time)."""
    return [name for name, _ in provider_chain(device)]


def session_options(threads: int | None = None, **opts: Any) -> ort.SessionOptions:
    """SessionOptions with edge-moss defaults; `opts` are extra session config entries."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or default_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: no per-node warnings on stderr
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    for key, value in opts.items():
        so.add_session_config_entry(str(key), str(value))
    return so


def make_session(path: str | Path, device: str = "cpu", threads: int | None = None,
                 disabled_optimizers: list[str] | None = None, **opts: Any) -> ort.InferenceSession:
    """An InferenceSession for the graph at `path` on `device` (CPU fallback with a message).

    `opts` are ONNX Runtime session config entries (e.g. {"session.x": "1"}); pass them as a
    dict via **{...} since their keys contain dots.
    """
    _disable_telemetry()
    path = Path(path)
    if not path.is_file():
        raise DeviceError(f"model graph {path} does not exist")
    check_device(device)
    so = session_options(threads, **opts)
    kwargs: dict[str, Any] = {}
    if disabled_optimizers:
        kwargs["disabled_optimizers"] = list(disabled_optimizers)
    # GPU unavailable or failing: CPU with one message on stderr (see providers.create_session).
    return create_session(path, device, so, **kwargs)
