"""The loaded model behind the routes: request jobs on the work queue, and their results.

Routes parse and check; this module turns a checked request into one call of the Python API
(`EdgeMoss.transcribe` / `.ask`, or a live session on a KV cache of its own) run on the worker.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Awaitable, Callable

from ..errors import EdgeMossError
from ..prompts import instruction_for
from .openai_schema import ApiError, ChatRequest, TranscriptionRequest
from .queue import Cancelled, Job, QueueFull, WorkQueue
from .streaming import ChatText, TranscriptJoiner

_DONE = object()
# A live utterance is at most ~30 s: ~400 audio tokens, the prompt and 448 new tokens.
LIVE_CONTEXT = 2048


def busy_error(exc: QueueFull) -> ApiError:
    return ApiError(503, f"the server is busy (the queue is full); retry in {exc.retry_after} s",
                    type="server_error", code="server_busy",
                    headers={"Retry-After": str(exc.retry_after)})


def model_error(exc: EdgeMossError) -> ApiError:
    from ..decoder import ContextLengthError

    code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else "invalid_audio"
    return ApiError(400, str(exc), code=code)


class Engine:
    def __init__(self, model, model_id: str, max_waiting: int = 8, max_live: int = 2,
                 max_new_tokens: int = 448):
        self.model = model
        self.max_new_tokens = max_new_tokens  # per transcription window (OpenAI has no field)
        self.model_id = model_id
        self.queue = WorkQueue(max_waiting)
        self.live_slots = threading.BoundedSemaphore(max_live) if max_live > 0 else None
        self.live_context = min(LIVE_CONTEXT, model.decoder.max_context)

    # ----- running jobs from the event loop -----

    def submit(self, fn: Callable[[Job], Any], bounded: bool = True) -> Job:
        try:
            return self.queue.submit(fn, bounded)
        except QueueFull as exc:
            raise busy_error(exc) from None

    async def run(self, fn: Callable[[Job], Any], bounded: bool = True,
                  gone: Callable[[], Awaitable[bool]] | None = None) -> Any:
        """Run `fn` on the worker and wait; `gone()` (polled) says the client left: cancel."""
        job = self.submit(fn, bounded)
        future = asyncio.wrap_future(job.future)
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=0.2)
                if done:
                    return _result(future)
                if gone is not None and await gone():
                    job.cancel()
                    raise Cancelled()
        except asyncio.CancelledError:
            job.cancel()
            raise

    def stream(self, fn: Callable[[Job, Callable[[Any], None]], Any]) -> AsyncIterator[Any]:
        """Run `fn(job, emit)` on the worker; iterate what it emits, then its return value.

        The job is queued now (a full queue raises here, before any response is sent); closing
        the iterator early (the client went away) cancels it."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        job = self.submit(lambda j: fn(j, emit))
        job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(items.put_nowait, _DONE))

        async def events() -> AsyncIterator[Any]:
            try:
                while True:
                    item = await items.get()
                    if item is _DONE:
                        yield _result(job.future)
                        return
                    yield item
            finally:
                job.cancel()

        return events()

    # ----- the jobs -----

    def transcribe(self, samples, req: TranscriptionRequest, emit: Callable[[str], None] | None,
                   job: Job):
        timestamps = req.response_format in ("srt", "vtt", "verbose_json")
        base = instruction_for(None, timestamps=timestamps).text
        # OpenAI's `prompt` is context (names, terms), not an instruction: the user's plain text
        # goes after the authors' own instruction, which still decides how the answer is parsed.
        instruction = f"{base}\n{req.prompt}" if req.prompt.strip() else None
        joiner = TranscriptJoiner(self.model.tokenizer) if emit is not None else None

        def on_token(token: int) -> None:
            job.check()
            if joiner is not None and (piece := joiner.push(token)):
                emit(piece)

        def progress(done_s: float, total_s: float) -> None:
            if joiner is not None and (piece := joiner.end_window()):
                emit(piece)

        return self.model.transcribe(samples, timestamps=timestamps, prompt=instruction,
                                     on_token=on_token, progress=progress,
                                     max_new_tokens=self.max_new_tokens,
                                     temperature=req.temperature)

    def ask(self, samples, req: ChatRequest, emit: Callable[[tuple[str, str]], None] | None,
            job: Job):
        ids = self.model.bundle.special_ids
        text = ChatText(self.model.tokenizer, ids.get("think_start", -1), ids.get("think_end", -1),
                        req.stop)

        def on_token(token: int) -> bool:
            job.check()
            pieces = text.push(token)
            if emit is not None and any(pieces):
                emit(pieces)
            return text.stopped

        result = self.model.ask(samples, req.question, system=req.system, on_token=on_token,
                                **req.settings)
        tail = text.finish()
        if emit is not None and any(tail):
            emit(tail)
        return result, text


def _result(future) -> Any:
    exc = future.exception()
    if exc is None:
        return future.result()
    if isinstance(exc, EdgeMossError):
        raise model_error(exc)
    if isinstance(exc, ValueError):  # decoding settings the sampler refuses
        raise ApiError(400, str(exc), code="invalid_value")
    raise exc
