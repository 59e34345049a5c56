"""WebSocket /v1/listen: the live path of `edge-moss listen`, fed by the client's audio.

Protocol: binary frames of little-endian PCM16, 16 kHz mono unless a first text frame says
otherwise ({"sample_rate": 48000, "channels": 2, "partials": true, "timestamps": true, ...});
a text frame {"type": "stop"} (or closing the socket) ends the stream. The server sends the
events of `listen --json` as text frames as they happen, then {"type": "done", ...}.

Each stream has a KV cache of its own (`EdgeMoss.with_own_cache`), so file requests served in
between cannot disturb the utterance it has prefilled; its blocks still run on the one worker.
"""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import soxr
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..endpointing import EndpointConfig
from ..live import LiveTranscriber
from ..model_facts import SAMPLE_RATE
from .audio_input import pcm_to_float
from .openai_schema import ApiError
from .queue import Cancelled

log = logging.getLogger("edge_moss.listen")

MAX_SECONDS_PER_FRAME = 10  # a bigger frame is refused: bounded memory per message


class ConfigError(ValueError):
    pass


def parse_config(text: str) -> dict:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError("the first text frame must be a JSON object") from None
    if not isinstance(raw, dict):
        raise ConfigError("the first text frame must be a JSON object")
    known = {"type", "sample_rate", "channels", "partials", "partial_every", "timestamps",
             "min_silence", "max_utterance", "min_speech", "vad_threshold", "max_new_tokens"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)}")
    cfg = {"sample_rate": 16000, "channels": 1, "partials": True, "partial_every": 2.0,
           "timestamps": True, "min_silence": 0.7, "max_utterance": 30.0, "min_speech": 0.25,
           "vad_threshold": 0.5, "max_new_tokens": 448, **raw}
    if not (isinstance(cfg["sample_rate"], int) and 8000 <= cfg["sample_rate"] <= 192000):
        raise ConfigError("sample_rate must be an integer from 8000 to 192000")
    if cfg["channels"] not in (1, 2):
        raise ConfigError("channels must be 1 or 2")
    if not (isinstance(cfg["max_new_tokens"], int) and 1 <= cfg["max_new_tokens"] <= 1024):
        raise ConfigError("max_new_tokens must be an integer from 1 to 1024")
    try:
        cfg["endpoint"] = EndpointConfig(
            threshold=float(cfg["vad_threshold"]),
            neg_threshold=min(0.35, float(cfg["vad_threshold"])),
            min_silence_s=float(cfg["min_silence"]), min_speech_s=float(cfg["min_speech"]),
            max_utterance_s=float(cfg["max_utterance"]),
            cut_search_s=min(2.0, float(cfg["max_utterance"]) / 2))
        cfg["partial_every"] = float(cfg["partial_every"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"endpointing settings: {exc}") from None
    if cfg["partial_every"] <= 0:
        raise ConfigError("partial_every must be positive")
    return cfg


class _Stream:
    """The client's audio to 16 kHz mono float32, block by block."""

    def __init__(self, rate: int, channels: int):
        self.channels = channels
        self.resampler = (None if rate == SAMPLE_RATE else
                          soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"))
        self.max_bytes = MAX_SECONDS_PER_FRAME * rate * channels * 2

    def convert(self, data: bytes, last: bool = False) -> np.ndarray:
        frames = pcm_to_float(data, 2, self.channels)
        mono = frames[:, 0] if self.channels == 1 else frames.mean(axis=1, dtype=np.float32)
        if self.resampler is not None:
            mono = self.resampler.resample_chunk(mono, last=last)
        return np.ascontiguousarray(mono, dtype=np.float32)


async def listen(websocket: WebSocket) -> None:
    engine = websocket.app.state.engine
    slots = engine.live_slots
    if slots is None or not slots.acquire(blocking=False):
        await websocket.close(code=1013, reason="too many live streams; try again later")
        return
    try:
        await websocket.accept()
        await _session(websocket, engine)
    except (WebSocketDisconnect, Cancelled):
        pass  # the client left
    except asyncio.TimeoutError:
        await _error(websocket, "no audio within 60 s", 1008)
    except ApiError as exc:  # e.g. a bundle without the chunked encoder live input needs
        await _error(websocket, exc.message, 1011)
    except (RuntimeError, OSError) as exc:  # sending to a client that has just gone
        log.info("live stream ended: %s", exc)
    finally:
        slots.release()


async def _error(websocket: WebSocket, message: str, code: int = 1003) -> None:
    try:
        await websocket.send_text(json.dumps({"type": "error", "message": message}))
        await websocket.close(code=code, reason=message[:120])
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # already gone


async def _session(websocket: WebSocket, engine) -> None:
    first = await asyncio.wait_for(websocket.receive(), timeout=60)
    cfg_text = first.get("text")
    try:
        cfg = parse_config(cfg_text if cfg_text is not None else "{}")
    except ConfigError as exc:
        return await _error(websocket, str(exc))
    stream = _Stream(cfg["sample_rate"], cfg["channels"])
    events: list = []

    def start(job):
        lane = engine.model.with_own_cache(engine.live_context)
        live = LiveTranscriber(lane, events.append, endpoint=cfg["endpoint"],
                               timestamps=bool(cfg["timestamps"]),
                               partial_every_s=cfg["partial_every"] if cfg["partials"] else None,
                               max_new_tokens=cfg["max_new_tokens"])
        live.warm_up()  # the prompt prefix into the lane's cache before audio, not at speech start
        return live

    live = await engine.run(start, bounded=False)

    async def run_block(block: np.ndarray | None) -> None:
        def work(job):
            if block is None:
                live.close()
            elif block.size:
                live.process(block)
            out = list(events)
            events.clear()
            return out

        for event in await engine.run(work, bounded=False):
            await websocket.send_text(json.dumps(event.to_dict(), ensure_ascii=False))

    pending = [] if cfg_text is not None else [first]
    while True:
        message = pending.pop() if pending else await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return  # the client left: nothing to send the rest to
        if message.get("bytes") is not None:
            data = message["bytes"]
            if len(data) > stream.max_bytes:
                return await _error(websocket, f"binary frames must be at most "
                                               f"{MAX_SECONDS_PER_FRAME} s of audio", 1009)
            await run_block(stream.convert(data))
            continue
        try:
            command = json.loads(message.get("text") or "")
        except json.JSONDecodeError:
            command = None
        if not (isinstance(command, dict) and command.get("type") in ("stop", "end")):
            return await _error(websocket, 'text frames after the first must be {"type": "stop"}')
        break
    if stream.resampler is not None:
        await run_block(stream.convert(b"", last=True))
    await run_block(None)
    stats = live.stats
    await websocket.send_text(json.dumps({
        "type": "done", "utterances": stats.utterances, "audio_s": round(stats.audio_s, 3),
        "real_time_factor": round(stats.real_time_factor, 4)}))
    await websocket.close(code=1000)
