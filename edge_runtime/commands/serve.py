"""`edge-moss serve -m BUNDLE`: the OpenAI-compatible local server (+ live WebSocket, Wyoming)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import EdgeMossError, MissingExtraError
from ._common import add_model_args, load_model

KEY_ENV = "EDGE_MOSS_API_KEY"
SERVER_MODULES = ("starlette", "uvicorn", "multipart", "wyoming")


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI audio API, a live WebSocket and Wyoming",
                       description="Serve one bundle over HTTP on this machine: OpenAI's "
                                   "/v1/audio/transcriptions and /v1/chat/completions (input_audio), "
                                   "a live stream at /v1/listen and, with --wyoming-port, the "
                                   "Wyoming ASR service Home Assistant uses. Requests run one at a "
                                   "time in arrival order.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' on every route but /health "
                        f"(default: ${KEY_ENV}; none)")
    p.add_argument("--wyoming-port", type=int, default=None,
                   help="also serve Wyoming ASR (Home Assistant) on this TCP port, e.g. 10300")
    p.add_argument("--wyoming-language", action="append", default=None, metavar="LANG",
                   help="language code offered to Home Assistant (repeatable; default en, zh)")
    p.add_argument("--max-queue", type=int, default=8,
                   help="requests that may wait behind the running one; more get 503 (default 8)")
    p.add_argument("--max-upload-mb", type=float, default=25.0,
                   help="largest request body in MB; larger get 413 (default 25)")
    p.add_argument("--max-live", type=int, default=2,
                   help="live WebSocket streams at once, each with its own KV cache (default 2)")
    p.add_argument("--max-new-tokens", type=int, default=448,
                   help="longest transcript of one window, in tokens (default 448)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info",
                                                          "debug"])
    add_model_args(p, backend_flag=False)
    p.set_defaults(func=run)


def _check_extra() -> None:
    import importlib

    missing = []
    for name in SERVER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(f"edge-moss serve needs the server extra ({', '.join(missing)} "
                                "missing): pip install 'edge-moss[server]'")


def run(args) -> int:
    _check_extra()
    for name in ("port", "wyoming_port"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 65535:
            raise EdgeMossError(f"--{name.replace('_', '-')} must be a TCP port (0-65535)")
    if args.max_new_tokens < 1:
        raise EdgeMossError("--max-new-tokens must be at least 1")
    if args.max_queue < 0 or args.max_live < 0 or args.max_upload_mb <= 0:
        raise EdgeMossError("--max-queue and --max-live must be >= 0, --max-upload-mb > 0")
    api_key = args.api_key or os.environ.get(KEY_ENV) or None
    from ..loopback import is_loopback
    from ..server.runner import Server

    if not is_loopback(args.host):
        if api_key is None:
            print(f"edge-moss: warning: listening on {args.host} without an API key: anyone who can "
                  f"reach this machine can use the model (set --api-key or ${KEY_ENV})",
                  file=sys.stderr)
        if args.wyoming_port is not None:
            print("edge-moss: warning: the Wyoming protocol has no authentication; its port is "
                  f"open to anyone who can reach {args.host}", file=sys.stderr)
    model = load_model(args)
    model_id = Path(args.model).resolve().name
    server = Server(model, model_id, host=args.host, port=args.port, api_key=api_key,
                    wyoming_port=args.wyoming_port, max_queue=args.max_queue,
                    max_upload_mb=args.max_upload_mb, max_live=args.max_live,
                    wyoming_languages=args.wyoming_language, log_level=args.log_level,
                    max_new_tokens=args.max_new_tokens)
    where = f"http://{args.host}:{server.port}"
    extra = f", Wyoming on tcp://{args.host}:{server.wyoming_port}" if server.wyoming_port else ""
    print(f"edge-moss: serving {model_id} at {where}/v1 (live: ws://{args.host}:{server.port}"
          f"/v1/listen{extra}); Ctrl-C stops", file=sys.stderr, flush=True)
    server.run()
    return 0
