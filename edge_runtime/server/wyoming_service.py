"""Wyoming ASR service for Home Assistant: describe -> info, transcribe + audio -> transcript.

Home Assistant's voice pipeline detects the end of the command itself and sends the audio as
audio-start, audio-chunk..., audio-stop; the clip is then transcribed as a file request on the
shared queue (plain text, VAD windows), in memory.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.server import AsyncEventHandler, AsyncTcpServer

from .. import __version__
from ..audio import to_mono_16k
from ..errors import AudioError
from .audio_input import pcm_to_float
from .openai_schema import ApiError, TranscriptionRequest
from .queue import Cancelled

log = logging.getLogger("edge_moss.wyoming")
MAX_SECONDS = 300  # a voice command is seconds long; this bounds the memory of one stream
# Home Assistant offers an ASR service only for the languages it lists; the model names none, so
# these are a default (English and Chinese) that `serve --wyoming-language` replaces.
LANGUAGES = ["en", "zh"]


def service_info(model_id: str, languages: list[str] | None = None) -> Info:
    attribution = Attribution(name="OpenMOSS", url="https://github.com/OpenMOSS/MOSS-Audio")
    model = AsrModel(name=model_id, attribution=attribution, installed=True,
                     description="MOSS-Audio on edge-moss (local)", version=__version__,
                     languages=languages or LANGUAGES)
    program = AsrProgram(name="edge-moss", attribution=attribution, installed=True,
                         description="edge-moss: MOSS-Audio offline speech to text",
                         version=__version__, models=[model])
    return Info(asr=[program])


class AsrHandler(AsyncEventHandler):
    def __init__(self, reader, writer, engine, languages: list[str] | None = None):
        super().__init__(reader, writer)
        self.engine = engine
        self.languages = languages
        self._reset()

    def _reset(self) -> None:
        self.rate = self.width = self.channels = None
        self.blocks: list[np.ndarray] = []
        self.frames = 0
        self.language: str | None = None

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(service_info(self.engine.model_id, self.languages).event())
        elif Transcribe.is_type(event.type):
            self.language = Transcribe.from_event(event).language
        elif AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            self.blocks, self.frames = [], 0
            self.rate, self.width, self.channels = start.rate, start.width, start.channels
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            if self.rate is None:
                self.rate, self.width, self.channels = chunk.rate, chunk.width, chunk.channels
            if (chunk.rate, chunk.width, chunk.channels) != (self.rate, self.width, self.channels):
                log.warning("audio format changed inside one stream; chunk ignored")
            elif self.frames < MAX_SECONDS * self.rate:
                try:
                    block = pcm_to_float(chunk.audio, chunk.width, chunk.channels)
                except AudioError as exc:
                    log.warning("%s", exc)
                else:
                    self.blocks.append(block)
                    self.frames += block.shape[0]
        elif AudioStop.is_type(event.type):
            text = await self._transcribe()
            await self.write_event(Transcript(text=text, language=self.language).event())
            self._reset()
        return True

    async def _transcribe(self) -> str:
        if not self.blocks:
            return ""
        try:
            samples = to_mono_16k(np.concatenate(self.blocks), int(self.rate))
        except AudioError as exc:  # too short, say: nothing was said
            log.info("no transcript: %s", exc)
            return ""
        self.blocks = []
        req = TranscriptionRequest(response_format="text", language=self.language)
        engine = self.engine

        async def gone() -> bool:
            return self.reader.at_eof()

        try:
            segments, _ = await engine.run(lambda job: engine.transcribe(samples, req, None, job),
                                           gone=gone)
        except ApiError as exc:  # a full queue: Home Assistant shows an empty result
            log.warning("wyoming request refused: %s", exc.message)
            return ""
        except Cancelled:
            return ""
        return " ".join(seg.text.strip() for seg in segments if seg.text.strip())


class _BoundTcpServer(AsyncTcpServer):
    """wyoming's TCP server on a socket bound beforehand (a port in use fails before loading)."""

    def __init__(self, sock):
        host, port = sock.getsockname()[:2]
        super().__init__(host, port)
        self._sock = sock

    async def start(self, handler_factory) -> None:
        self._server = await asyncio.start_server(
            lambda r, w: self._handler_callback(handler_factory, r, w), sock=self._sock)
        await self._server.start_serving()


async def start_wyoming(engine, host: str, port: int, languages: list[str] | None = None,
                        sock=None) -> AsyncTcpServer:
    server = _BoundTcpServer(sock) if sock is not None else AsyncTcpServer(host, port)
    await server.start(lambda reader, writer: AsrHandler(reader, writer, engine, languages))
    return server
