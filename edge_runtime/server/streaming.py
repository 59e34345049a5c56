"""Generated ids -> the text pieces a client sees, for server-sent events.

TranscriptJoiner makes the deltas of a windowed transcription add up to the final text exactly
(each window's text stripped, windows joined by one space). ChatText routes a thinking model's
`<think>` block to `reasoning_content` and holds back text that may be the start of a stop string.
"""

from __future__ import annotations

import json

from starlette.responses import StreamingResponse

from ..tokenizer import IncrementalDetokenizer
from .openai_schema import ApiError


def sse(data: dict | str) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode("utf-8")


def sse_response(events, lines) -> StreamingResponse:
    """The event-stream response of `lines` (sse() bytes made from the engine's `events`): an
    ApiError raised while streaming becomes one error event, and the job's stream is closed (its
    work cancelled if the client went away) however the response ends."""

    async def body():
        try:
            async for line in lines:
                yield line
        except ApiError as exc:
            yield sse(exc.body())
        finally:
            await lines.aclose()
            await events.aclose()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


class TranscriptJoiner:
    def __init__(self, tokenizer):
        self._detok = IncrementalDetokenizer(tokenizer)
        self._open = False  # the current window has shown text
        self._any = False  # some window has shown text
        self._pending = ""  # trailing whitespace, shown only if more text follows

    def push(self, token_id: int) -> str:
        return self._text(self._detok.push(token_id))

    def end_window(self) -> str:
        out = self._text(self._detok.flush())
        self._open, self._pending = False, ""
        return out

    def _text(self, piece: str) -> str:
        text = self._pending + piece
        self._pending = ""
        if not self._open:
            text = text.lstrip()
            if not text:
                return ""
            text = (" " if self._any else "") + text
            self._open = True
        body = text.rstrip()
        self._pending = text[len(body):]
        if body:
            self._any = True
        return body


class ChatText:
    """Splits generated ids into (reasoning, content) pieces; `stop` strings end the content."""

    def __init__(self, tokenizer, think_start: int, think_end: int, stops: list[str]):
        self._detok = IncrementalDetokenizer(tokenizer)
        self._think_start, self._think_end = think_start, think_end
        self._stops = stops
        self._held = ""  # content not shown yet: it might be the start of a stop string
        self.thinking = False
        self.reasoning = ""
        self.content = ""  # shown content
        self.stopped = False
        self._after_think = False

    def push(self, token_id: int) -> tuple[str, str]:
        """(reasoning piece, content piece) that can be shown now."""
        if token_id == self._think_start:
            self.thinking = True
            return "", ""
        if token_id == self._think_end:
            self.thinking, self._after_think = False, True
            tail = self._detok.flush()
            self.reasoning += tail
            return tail, ""
        piece = self._detok.push(token_id)
        if self.thinking:
            self.reasoning += piece
            return piece, ""
        return "", self._content(piece)

    def finish(self) -> tuple[str, str]:
        tail = self._detok.flush()
        if self.thinking:
            self.reasoning += tail
            return tail, ""
        out = self._content(tail)
        if not self.stopped:
            out += self._held
            self.content += self._held
            self._held = ""
        return "", out

    def _content(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        if self._after_think and not self.content and not self._held:
            piece = piece.lstrip()  # the blank line a thinking block leaves (as split_thinking)
            if not piece:
                return ""
        text = self._held + piece
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            self.content += text[:cut]
            return text[:cut]
        keep = max((len(s) - 1 for s in self._stops), default=0)
        # hold back the longest tail that could still grow into a stop string
        hold = 0
        for n in range(min(keep, len(text)), 0, -1):
            if any(s.startswith(text[-n:]) for s in self._stops):
                hold = n
                break
        shown, self._held = text[:len(text) - hold], text[len(text) - hold:]
        self.content += shown
        return shown
