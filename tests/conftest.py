"""Shared test fixtures: random-weight checkpoints in the release layout, built once per session."""

from __future__ import annotations

import pytest


def _checkpoint(tmp_path_factory, size: str, seed: int = 0):
    from export.fixture import write_fixture

    out = tmp_path_factory.mktemp(f"ckpt-{size}") / f"moss-audio-{size}"
    write_fixture(out, size=size, seed=seed)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Path of a tiny random-weight MOSS-Audio checkpoint (every release tensor name)."""
    return _checkpoint(tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """Path of a small random-weight MOSS-Audio checkpoint."""
    return _checkpoint(tmp_path_factory, "small")
