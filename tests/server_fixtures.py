"""One edge-moss server for all server tests: a tiny bundle, 127.0.0.1, free ports, an API key.

The server runs in this process (uvicorn on a background thread), so that a test can hold the
worker with a job of its own to fill the queue; every client talks to it over real sockets.
"""

from __future__ import annotations

import pytest

from speech_fixture import make_speech_wav

KEY = "test-key-0123456789"
MAX_QUEUE = 2
MAX_UPLOAD_MB = 1.0
TOKENS = 24  # per transcription window: keeps the tiny model quick
# One long sentence (> 8 s: partials and several 4 s chunks prefilled live), then a short one.
SSML = ("<speak>Hello there, this is a long sentence for the server test, and it keeps going on "
        "and on for quite a while, so that the live session prefills several four second chunks "
        "before the speaker finally pauses."
        '<break time="1500ms"/>The weather is nice today.</speak>')

_started: dict = {}


@pytest.fixture(scope="session")
def server_bundle(tiny_checkpoint, bundle_factory):
    return bundle_factory(tiny_checkpoint, "fp32", "chunked")


@pytest.fixture(scope="session")
def served(server_bundle):
    """The running server (edge_runtime.server.runner.Server), started once per session."""
    if "server" not in _started:
        from edge_runtime.api import EdgeMoss
        from edge_runtime.server.runner import Server

        model = EdgeMoss(server_bundle, threads=1)
        _started["server"] = Server(model, server_bundle.name, port=0, wyoming_port=0,
                                    api_key=KEY, max_queue=MAX_QUEUE, max_upload_mb=MAX_UPLOAD_MB,
                                    log_level="warning", max_new_tokens=TOKENS).start_in_thread()
    yield _started["server"]


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory):
    return make_speech_wav(tmp_path_factory.mktemp("server") / "speech.wav", SSML, lead_s=0.6,
                           tail_s=1.2)


@pytest.fixture
def client(served):
    from openai import OpenAI

    return OpenAI(base_url=f"http://127.0.0.1:{served.port}/v1", api_key=KEY, timeout=120,
                  max_retries=0)
