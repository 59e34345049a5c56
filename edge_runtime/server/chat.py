"""POST /v1/chat/completions with OpenAI's input_audio content parts, answered by `EdgeMoss.ask`.

The answer's token ids are returned in a non-standard `edge_moss` field (they equal
`edge-moss ask --json` for greedy decoding); a thinking model's reasoning is `reasoning_content`.
"""

from __future__ import annotations

import json
import time
import uuid

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .audio_input import decode_audio
from .openai_schema import bad, parse_chat
from .streaming import sse, sse_response


def _finish_reason(stopped_by: str) -> str:
    return "stop" if stopped_by in ("stop_token", "stop_sequence") else "length"


def _usage(result) -> dict:
    done = len(result.token_ids)
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": done,
            "total_tokens": result.prompt_tokens + done}


def _extra(result) -> dict:
    return {"token_ids": result.token_ids, "audio_tokens": result.audio_tokens,
            "stopped_by": result.stopped_by, "timings": result.timings}


async def chat_completions(request: Request) -> Response:
    engine = request.app.state.engine
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad("the request body is not valid JSON") from None
    req = parse_chat(body, engine.model.decoder.max_context)
    samples = await anyio.to_thread.run_sync(decode_audio, req.audio, "input_audio",
                                             "messages")
    req.audio = b""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": engine.model_id}
    if req.stream:
        return _stream(engine, samples, req, head)
    result, text = await engine.run(lambda job: engine.ask(samples, req, None, job),
                                    gone=request.is_disconnected)
    message = {"role": "assistant", "content": text.content}
    if text.reasoning.strip():
        message["reasoning_content"] = text.reasoning.strip()
    return JSONResponse({**head, "object": "chat.completion",
                         "choices": [{"index": 0, "message": message, "logprobs": None,
                                      "finish_reason": _finish_reason(result.stopped_by)}],
                         "usage": _usage(result), "edge_moss": _extra(result)})


def _stream(engine, samples, req, head) -> Response:
    events = engine.stream(lambda job, emit: engine.ask(samples, req, emit, job))

    def chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
        return sse({**head, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}], **extra})

    async def lines():
        yield chunk({"role": "assistant", "content": ""})
        async for item in events:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                reasoning, content = item
                if reasoning:
                    yield chunk({"reasoning_content": reasoning})
                if content:
                    yield chunk({"content": content})
                continue
            result, _ = item
            yield chunk({}, _finish_reason(result.stopped_by), edge_moss=_extra(result))
            if req.include_usage:
                yield sse({**head, "object": "chat.completion.chunk", "choices": [],
                           "usage": _usage(result)})
        yield sse("[DONE]")

    return sse_response(events, lines())
