"""enforce_offline and the network guard other tests use."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest

from edge_runtime.offline import enforce_offline
from netguard import NetworkBlocked, no_network, no_network_fixture  # noqa: F401 (fixture)


def closed_port() -> int:
    """A local TCP port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_closed_port_is_really_closed_without_the_guard():
    # the control: without the guard the attempt reaches the OS and is refused
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port()), timeout=2).close()


def test_guard_blocks_connect_with_its_own_error():
    port = closed_port()
    with no_network():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            with pytest.raises(NetworkBlocked):
                sock.connect(("127.0.0.1", port))
            with pytest.raises(NetworkBlocked):
                sock.connect_ex(("127.0.0.1", port))
        with pytest.raises(NetworkBlocked):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        with pytest.raises(NetworkBlocked):
            socket.getaddrinfo("example.com", 443)
        with pytest.raises(NetworkBlocked):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_guard_restores_sockets_afterwards():
    originals = (socket.socket.connect, socket.create_connection, socket.getaddrinfo)
    with pytest.raises(KeyError):
        with no_network():
            raise KeyError("leave the block by an exception")
    assert (socket.socket.connect, socket.create_connection, socket.getaddrinfo) == originals


def test_fixture_form(no_network_fixture):  # noqa: F811
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("127.0.0.1", closed_port()), timeout=2)


def test_enforce_offline_sets_switches_and_disables_ort_telemetry(monkeypatch):
    import onnxruntime

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []
    monkeypatch.setattr(onnxruntime, "disable_telemetry_events", lambda: calls.append(1))
    before = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    enforce_offline()
    enforce_offline()  # idempotent
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert calls == [1, 1]
    after = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    assert after == before  # nothing else in the environment changed


def test_enforce_offline_without_telemetry_function(monkeypatch):
    import onnxruntime

    monkeypatch.delattr(onnxruntime, "disable_telemetry_events", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    enforce_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
