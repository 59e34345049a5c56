"""A guard that makes any network access in a test fail loudly with its own error.

Usage:
    with no_network():
        ...            # socket connects, create_connection and DNS look-ups raise NetworkBlocked
or the pytest fixture `no_network_fixture` (import it into a test module or conftest).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Iterator

import pytest


class NetworkBlocked(RuntimeError):
    """Raised instead of any network access while the guard is on."""


def _blocked(name: str):
    def refuse(*args, **kwargs):
        raise NetworkBlocked(f"network access attempted during an offline test: socket {name}{args!r}")
    return refuse


@contextlib.contextmanager
def no_network() -> Iterator[None]:
    """Block socket connect/connect_ex, create_connection and getaddrinfo until the block exits."""
    patches = [
        (socket.socket, "connect"),
        (socket.socket, "connect_ex"),
        (socket, "create_connection"),
        (socket, "getaddrinfo"),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name in patches]
    try:
        for owner, name in patches:
            setattr(owner, name, _blocked(name))
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


@pytest.fixture
def no_network_fixture() -> Iterator[None]:
    """pytest fixture form of no_network()."""
    with no_network():
        yield
