"""OpenAI's request fields and error shape: parsing and checking, no model work.

Every refusal is an ApiError, rendered as {"error": {"message", "type", "param", "code"}} with a
4xx status, so that OpenAI clients report it as they would one of OpenAI's own.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field
from typing import Any

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAMABLE_FORMATS = ("json", "text")


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _float(value: Any, param: str, lo: float, hi: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad(f"'{param}' must be a number, got {value!r}", param) from None
    if not (math.isfinite(number) and lo <= number <= hi):
        raise bad(f"'{param}' must be between {lo:g} and {hi:g}, got {value!r}", param)
    return number


def _int(value: Any, param: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise bad(f"'{param}' must be an integer, got {value!r}", param)
    try:
        number = int(value)
    except ValueError:
        raise bad(f"'{param}' must be an integer, got {value!r}", param) from None
    if number < lo or (hi is not None and number > hi):
        span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise bad(f"'{param}' must be {span}, got {number}", param)
    return number


def _bool(value: Any, param: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise bad(f"'{param}' must be true or false, got {value!r}", param)


# ----- /v1/audio/transcriptions (multipart form) -------------------------------------------------

@dataclass
class TranscriptionRequest:
    response_format: str = "json"
    prompt: str = ""
    language: str | None = None
    temperature: float = 0.0
    stream: bool = False


def parse_transcription_form(form) -> TranscriptionRequest:
    """The form's fields other than `file` (checked by the route), as OpenAI defines them."""
    req = TranscriptionRequest()
    fmt = str(form.get("response_format") or "json")
    if fmt not in RESPONSE_FORMATS:
        raise bad(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}; got {fmt!r}",
                  "response_format", "unsupported_response_format")
    req.response_format = fmt
    req.prompt = str(form.get("prompt") or "")
    req.language = str(form.get("language")) if form.get("language") else None
    if form.get("temperature") not in (None, ""):
        req.temperature = _float(form.get("temperature"), "temperature", 0.0, 2.0)
    req.stream = _bool(form.get("stream", False), "stream")
    if req.stream and fmt not in STREAMABLE_FORMATS:
        raise bad(f"stream=true needs response_format json or text, not {fmt}", "stream")
    granularities = (form.getlist("timestamp_granularities[]")
                     + form.getlist("timestamp_granularities"))
    for item in granularities:
        if item != "segment":
            raise bad(f"timestamp_granularities: only 'segment' is available (the model gives "
                      f"sentence-level times), not {item!r}", "timestamp_granularities[]",
                      "unsupported_value")
    return req


# ----- /v1/chat/completions (JSON) ---------------------------------------------------------------

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "opus", "aiff", "webm", "m4a")


@dataclass
class ChatRequest:
    system: str | None
    question: str
    audio: bytes
    audio_format: str
    stream: bool = False
    include_usage: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)


def _content_parts(content: Any, index: int) -> tuple[list[str], list[dict]]:
    """(texts, input_audio dicts) of one message's content (a string or a list of parts)."""
    param = f"messages[{index}].content"
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        raise bad("message content must be a string or a list of content parts", param)
    texts, audios = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            audios.append(part["input_audio"])
        else:
            raise bad(f"content part {j}: only 'text' and 'input_audio' parts are supported",
                      f"{param}[{j}]", "unsupported_content")
    return texts, audios


def parse_chat(body: Any, max_context: int) -> ChatRequest:
    """One question about one clip: optional system/developer messages, then one user message
    holding one input_audio part and the question as text (the model's single-turn prompt)."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list", "messages")
    system_parts: list[str] = []
    user: tuple[list[str], list[dict]] | None = None
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            if user is not None:
                raise bad("system messages must come before the user message", f"messages[{i}]")
            texts, audios = _content_parts(message.get("content"), i)
            if audios:
                raise bad("audio belongs in the user message", f"messages[{i}].content")
            system_parts.extend(texts)
        elif role == "user":
            if user is not None:
                raise bad("edge-moss answers one question about one clip per request: send a "
                          "single user message (no conversation history)", f"messages[{i}]",
                          "unsupported_conversation")
            user = _content_parts(message.get("content"), i)
        else:
            raise bad(f"message role {role!r} is not supported here (system, developer, user)",
                      f"messages[{i}].role", "unsupported_conversation")
    if user is None:
        raise bad("a user message is needed", "messages")
    texts, audios = user
    if len(audios) != 1:
        raise bad(f"the user message needs exactly one input_audio part (got {len(audios)})",
                  "messages", "audio_required")
    audio = audios[0]
    fmt = str(audio.get("format") or "wav").lower()
    if fmt not in AUDIO_FORMATS:
        raise bad(f"input_audio.format must be one of {', '.join(AUDIO_FORMATS)}; got {fmt!r}",
                  "input_audio.format")
    data = audio.get("data")
    if not isinstance(data, str) or not data:
        raise bad("input_audio.data must be base64-encoded audio", "input_audio.data")
    if data.startswith("data:") and "," in data:  # a data URL is accepted too
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad("input_audio.data is not valid base64", "input_audio.data") from None
    question = "\n".join(t for t in texts if t)
    if not question.strip():
        raise bad("the user message needs a text part with the question", "messages")
    settings: dict[str, Any] = {}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    settings["max_new_tokens"] = 512 if limit is None else _int(limit, "max_completion_tokens", 1,
                                                                max_context)
    if body.get("temperature") is not None:
        settings["temperature"] = _float(body["temperature"], "temperature", 0.0, 2.0)
    if body.get("top_p") is not None:
        settings["top_p"] = _float(body["top_p"], "top_p", 0.0, 1.0)
        if settings["top_p"] == 0.0:
            raise bad("'top_p' must be above 0", "top_p")
    if body.get("seed") is not None:
        settings["seed"] = _int(body["seed"], "seed", 0)
    n = body.get("n", 1)
    if n not in (1, None):
        raise bad("only n=1 is supported", "n", "unsupported_value")
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not (isinstance(stops, list) and len(stops) <= 4
            and all(isinstance(s, str) and s for s in stops)):
        raise bad("'stop' must be a string or a list of up to 4 non-empty strings", "stop")
    stream = _bool(body.get("stream", False), "stream")
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    return ChatRequest(system="\n".join(system_parts) or None, question=question, audio=raw,
                       audio_format=fmt, stream=stream, include_usage=include_usage,
                       settings=settings, stop=stops)
