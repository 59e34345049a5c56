"""What a test needs from outside pip: Debian packages and the CI-installed Python packages.

A test that needs a missing package is skipped with a reason naming what to install, so that a
fresh machine with only the README's two commands passes the suite with its skips named. Under CI
(`CI=true`, as .ci/run and most CI services set) the same absence is a failure instead: CI
installs everything, so there a skip would hide a test that stopped running.
"""

from __future__ import annotations

import ctypes.util
import glob
import importlib
import os
import shutil

import pytest

# Debian package -> how to tell that it is installed.
_PROGRAMS = {
    "espeak-ng": ("espeak-ng",),
    "sox": ("sox",),
    "pulseaudio": ("pulseaudio",),
    "pulseaudio-utils": ("pactl", "paplay"),
}
_ALSA_PULSE_PLUGIN = "/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _present(package: str) -> bool:
    if package in _PROGRAMS:
        return all(shutil.which(program) for program in _PROGRAMS[package])
    if package == "libportaudio2":
        return ctypes.util.find_library("portaudio") is not None
    if package == "libasound2-plugins":
        return bool(glob.glob(_ALSA_PULSE_PLUGIN))
    raise ValueError(f"unknown system package {package!r}")


def missing_packages(*packages: str) -> list[str]:
    """The Debian packages among `packages` that this machine lacks."""
    return [package for package in packages if not _present(package)]


def _skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing dependency fails instead of skipping)",
                    pytrace=False)
    pytest.skip(reason)


def require(*packages: str) -> None:
    """Skip the calling test (fail under CI) unless every Debian package named is installed."""
    missing = missing_packages(*packages)
    if missing:
        _skip_or_fail(f"needs the system package{'s' if len(missing) > 1 else ''} "
                      f"{', '.join(missing)}: apt-get install {' '.join(missing)}")


def importorskip(module: str, extra: str):
    """pytest.importorskip that fails under CI, where the `extra` providing `module` is installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        _skip_or_fail(f"needs the Python package {module}: pip install '.[{extra}]'")
    except OSError as exc:  # installed, but its system library is missing (sounddevice: PortAudio)
        _skip_or_fail(f"the Python package {module} cannot load its system library ({exc})")


PULSE_RIG = ("pulseaudio", "pulseaudio-utils", "libasound2-plugins", "libportaudio2")
SPEECH = ("espeak-ng", "sox")
