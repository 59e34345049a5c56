"""edge-moss: offline, on-device runtime for MOSS-Audio (numpy + ONNX Runtime, no torch)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "EdgeMoss", "Segment"]


def __getattr__(name: str):
    # Lazy, so `import edge_runtime` (the CLI's start-up) does not load ONNX Runtime.
    if name == "EdgeMoss":
        from .api import EdgeMoss

        return EdgeMoss
    if name == "Segment":
        from .segments import Segment

        return Segment
    raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
