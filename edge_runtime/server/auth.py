"""ASGI guards in front of the routes: the API key and the request-size limit.

With a key set, every route but /health needs `Authorization: Bearer KEY` (compared in constant
time). Bodies over the limit get 413 before they are read (Content-Length) or as soon as the
count passes it (chunked uploads), so an oversize upload is never held in memory.
"""

from __future__ import annotations

import hmac
import json

from .openai_schema import ApiError, error_body

OPEN_PATHS = ("/health",)


async def send_json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class ApiKeyGuard:
    def __init__(self, app, api_key: str | None):
        self.app = app
        self.key = api_key.encode() if api_key else None

    def _allowed(self, scope) -> bool:
        given = _header(scope, b"authorization") or b""
        scheme, _, token = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    async def __call__(self, scope, receive, send):
        if (self.key is None or scope["type"] not in ("http", "websocket")
                or scope.get("path") in OPEN_PATHS or self._allowed(scope)):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":  # refused at the handshake (HTTP 403)
            await send({"type": "websocket.close", "code": 1008, "reason": "invalid API key"})
            return
        given = _header(scope, b"authorization")
        message = ("Incorrect API key provided." if given else
                   "Missing API key: send 'Authorization: Bearer KEY'.")
        await send_json(send, 401, error_body(message, "invalid_request_error", None,
                                              "invalid_api_key"),
                        {"WWW-Authenticate": "Bearer"})


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> ApiError:
        mb = self.max_bytes / (1024 * 1024)
        return ApiError(413, f"the request body is over the server's limit of {mb:g} MB "
                             "(--max-upload-mb)", code="request_too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            err = self._error()
            return await send_json(send, 413, err.body(), {"Connection": "close"})
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._error()
            return message

        return await self.app(scope, counted, send)
