"""POST /v1/audio/transcriptions: OpenAI's multipart request, answered by `EdgeMoss.transcribe`.

json/text use the authors' plain instruction; srt, vtt and verbose_json ask for the model's own
sentence timestamps. Both go through the same VAD windows and timestamp parser as `transcribe`,
so the body equals `edge-moss transcribe -f FORMAT` on the same file.
"""

from __future__ import annotations

import anyio
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..subtitles import render
from .audio_input import decode_audio
from .openai_schema import bad, parse_transcription_form
from .streaming import sse, sse_response

MEDIA = {"text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
         "vtt": "text/vtt; charset=utf-8"}


def joined_text(segments) -> str:
    return " ".join(seg.text.strip() for seg in segments if seg.text.strip())


def verbose(segments, info, req) -> dict:
    return {
        "task": "transcribe",
        "language": req.language or info.language or "unknown",
        "duration": round(info.duration, 3),
        "text": joined_text(segments),
        # avg_logprob, compression_ratio and no_speech_prob are Whisper's; this model gives none.
        "segments": [{"id": i, "start": round(seg.start, 3), "end": round(seg.end, 3),
                      "text": seg.text, "temperature": req.temperature}
                     for i, seg in enumerate(segments)],
        "usage": {"type": "duration", "seconds": round(info.duration, 3)},
    }


async def transcriptions(request: Request) -> Response:
    engine = request.app.state.engine
    async with request.form(max_files=1, max_fields=32) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise bad("'file' is required: the audio as a multipart file field", "file",
                      "missing_file" if upload is None else "invalid_file")
        req = parse_transcription_form(form)
        data = await upload.read()
        name = upload.filename or "file"
    samples = await anyio.to_thread.run_sync(decode_audio, data, name)
    del data
    if req.stream:
        return _stream(request, engine, samples, req)
    segments, info = await engine.run(lambda job: engine.transcribe(samples, req, None, job),
                                      gone=request.is_disconnected)
    fmt = req.response_format
    if fmt == "json":
        return JSONResponse({"text": joined_text(segments),
                             "usage": {"type": "duration", "seconds": round(info.duration, 3)}})
    if fmt == "verbose_json":
        return JSONResponse(verbose(segments, info, req))
    return Response(render(segments, "txt" if fmt == "text" else fmt, info), media_type=MEDIA[fmt])


def _stream(request: Request, engine, samples, req) -> Response:
    events = engine.stream(lambda job, emit: engine.transcribe(samples, req, emit, job))

    async def lines():
        async for item in events:
            if isinstance(item, str):
                yield sse({"type": "transcript.text.delta", "delta": item})
                continue
            segments, info = item
            yield sse({"type": "transcript.text.done", "text": joined_text(segments),
                       "usage": {"type": "tokens", "input_tokens": info.audio_tokens,
                                 "output_tokens": info.generated_tokens,
                                 "total_tokens": info.audio_tokens + info.generated_tokens,
                                 "input_token_details": {"audio_tokens": info.audio_tokens}}})

    return sse_response(events, lines())
