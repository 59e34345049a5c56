"""The ASGI app: routes, OpenAI-style errors, and the guards in front (key, size limit)."""

from __future__ import annotations

import logging
import os
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from .auth import ApiKeyGuard, BodyLimit
from .chat import chat_completions
from .engine import Engine
from .listen_ws import listen
from .openai_schema import ApiError, error_body
from .queue import Cancelled
from .transcriptions import transcriptions

log = logging.getLogger("edge_moss.server")


async def health(request: Request) -> JSONResponse:
    engine = request.app.state.engine
    return JSONResponse({"status": "ok", "model": engine.model_id,
                         "queue": {"waiting": engine.queue.waiting,
                                   "max_waiting": engine.queue.max_waiting}})


def _model_card(engine: Engine) -> dict:
    bundle = engine.model.bundle
    return {"id": engine.model_id, "object": "model", "owned_by": "edge-moss",
            "created": int(os.path.getmtime(bundle.path)),
            "edge_moss": {"quantization": bundle.manifest.get("quantization"),
                          "encoder_mode": bundle.encoder_mode,
                          "max_context": engine.model.decoder.max_context}}


async def models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [_model_card(request.app.state.engine)]})


async def model(request: Request) -> JSONResponse:
    engine = request.app.state.engine
    if request.path_params["name"] != engine.model_id:
        raise ApiError(404, f"the model '{request.path_params['name']}' does not exist; this "
                            f"server has '{engine.model_id}'", param="model",
                       code="model_not_found")
    return JSONResponse(_model_card(engine))


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 404:
        message, code = f"no route {request.method} {request.url.path}", "unknown_url"
    elif exc.status_code == 405:
        message, code = f"{request.method} is not allowed on {request.url.path}", "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    return JSONResponse(error_body(message, "invalid_request_error", None, code),
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def cancelled(request: Request, exc: Cancelled) -> JSONResponse:
    # The client left; nobody reads this. 499 is nginx's "client closed request".
    return JSONResponse(error_body("the client closed the request"), status_code=499)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal server error (see the server log)", "server_error"),
                        status_code=500)


def build_app(engine: Engine, api_key: str | None = None, max_upload_mb: float = 25.0):
    max_bytes = int(max_upload_mb * 1024 * 1024)
    # Multipart uploads up to the limit stay in memory: nothing is spooled to a temporary file.
    MultiPartParser.spool_max_size = max_bytes + 1
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", model, methods=["GET"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        WebSocketRoute("/v1/listen", listen),
    ]
    app = Starlette(routes=routes, exception_handlers={
        ApiError: api_error, HTTPException: http_error, Cancelled: cancelled,
        Exception: internal_error})
    app.state.engine = engine
    app.state.started = time.time()
    return ApiKeyGuard(BodyLimit(app, max_bytes), api_key)
