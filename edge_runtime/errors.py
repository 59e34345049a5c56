"""Errors the CLI turns into one clear line and a non-zero exit code."""

from __future__ import annotations


class EdgeMossError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2


class AudioError(EdgeMossError):
    """Audio that cannot be read or used (unreadable, empty, non-finite, too short)."""


class BundleError(EdgeMossError):
    """A bundle that is missing, truncated, edited or of an unknown format version."""


class CheckpointError(EdgeMossError):
    """A checkpoint directory that is not a complete MOSS-Audio checkpoint."""


class DeviceError(EdgeMossError):
    """No usable audio input device or execution provider."""


class MissingExtraError(EdgeMossError):
    """A build-side command run without the optional dependencies it needs."""


class InputError(EdgeMossError):
    """Command-line inputs that name no audio: a missing path, an empty folder or glob, a bad list."""


class BusyError(EdgeMossError, RuntimeError):
    """One EdgeMoss object asked for a second generation while its KV cache is in use."""


class OutputError(EdgeMossError):
    """An output that cannot be written, or that would overwrite an input or another output."""


class OptionError(EdgeMossError, ValueError):
    """An option value outside its accepted range. A ValueError too, so API callers that catch
    ValueError keep working; the message names the CLI flag and the API argument alike."""
