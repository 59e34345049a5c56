"""Make sure the runtime never reaches the network on its own.

The runtime reads only local files; these switches also stop libraries it may load from phoning
home (Hugging Face hub look-ups, ONNX Runtime's telemetry on Windows).
"""

from __future__ import annotations

import os

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def enforce_offline() -> None:
    """Call once at runtime start: set the offline environment switches, disable ORT telemetry.

    Changes nothing else global.  Safe to call more than once.
    """
    os.environ.update(OFFLINE_ENV)
    try:
        import onnxruntime
    except ImportError:  # telemetry cannot be sent by a library that is not there
        return
    disable = getattr(onnxruntime, "disable_telemetry_events", None)
    if callable(disable):
        disable()
