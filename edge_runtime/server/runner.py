"""Start the HTTP server (uvicorn) and the optional Wyoming service on one event loop.

The listening sockets are bound here first, so that a port in use is one clear error before the
model work starts, and so that port 0 (tests) gives a known free port.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn

from ..errors import EdgeMossError
from .app import build_app
from .engine import Engine
from .wyoming_service import start_wyoming



def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EdgeMossError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Server:
    """The server of one loaded model; `run()` blocks, `start_in_thread()` (tests) does not."""

    def __init__(self, model, model_id: str, host: str = "127.0.0.1", port: int = 8000,
                 api_key: str | None = None, wyoming_port: int | None = None,
                 max_queue: int = 8, max_upload_mb: float = 25.0, max_live: int = 2,
                 wyoming_languages: list[str] | None = None, log_level: str = "info",
                 max_new_tokens: int = 448):
        self.engine = Engine(model, model_id, max_waiting=max_queue, max_live=max_live,
                             max_new_tokens=max_new_tokens)
        self.app = build_app(self.engine, api_key=api_key, max_upload_mb=max_upload_mb)
        self.host = host
        self.sock = bind(host, port)
        self.port = self.sock.getsockname()[1]
        self.wyoming_sock = bind(host, wyoming_port) if wyoming_port is not None else None
        self.wyoming_port = self.wyoming_sock.getsockname()[1] if self.wyoming_sock else None
        self.wyoming_languages = wyoming_languages
        config = uvicorn.Config(self.app, log_level=log_level, server_header=False,
                                lifespan="off", access_log=log_level == "debug",
                                timeout_graceful_shutdown=5)
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    async def serve(self) -> None:
        wyoming = None
        if self.wyoming_sock is not None:
            wyoming = await start_wyoming(self.engine, self.host, self.wyoming_port,
                                          self.wyoming_languages, sock=self.wyoming_sock)
        try:
            await self.uvicorn.serve(sockets=[self.sock])
        finally:
            if wyoming is not None:
                await wyoming.stop()
            self.engine.queue.close()

    def run(self) -> None:
        asyncio.run(self.serve())

    def start_in_thread(self, timeout: float = 30.0) -> "Server":
        self._thread = threading.Thread(target=self.run, name="edge-moss-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.uvicorn.started:
            raise RuntimeError("the server did not start")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
