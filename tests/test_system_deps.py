"""tests/system_deps.py: a missing system package skips with its name, and fails under CI=true."""

from __future__ import annotations

import pytest

import system_deps


def test_missing_program_skips_naming_the_package(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(system_deps.shutil, "which", lambda name: None if name == "sox" else "/bin/x")
    assert system_deps.missing_packages("espeak-ng", "sox") == ["sox"]
    with pytest.raises(pytest.skip.Exception, match=r"system package sox: apt-get install sox"):
        system_deps.require(*system_deps.SPEECH)


def test_missing_package_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(system_deps.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match=r"libportaudio2.*CI=true"):
        system_deps.require("libportaudio2")
    with pytest.raises(pytest.fail.Exception, match=r"no_such_module.*\[export\]"):
        system_deps.importorskip("no_such_module", "export")


def test_present_packages_pass(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(system_deps.shutil, "which", lambda name: f"/usr/bin/{name}")
    system_deps.require("pulseaudio", "pulseaudio-utils", "espeak-ng", "sox")
    assert system_deps.importorskip("json", "test").dumps([]) == "[]"


def test_a_package_without_its_system_library_skips(monkeypatch, tmp_path):
    """sounddevice raises OSError (not ImportError) when libportaudio2 is absent."""
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "needs_a_library.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match=r"needs_a_library cannot load .*PortAudio"):
        system_deps.importorskip("needs_a_library", "live")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"PortAudio.*CI=true"):
        system_deps.importorskip("needs_a_library", "live")
