"""edge-moss: offline, on-device runtime for MOSS-Audio (numpy + ONNX Runtime, no torch)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
