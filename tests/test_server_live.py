"""WebSocket /v1/listen gives `listen --input`'s final events; Wyoming transcribes like the API.

Random weights: the texts are meaningless; the tests compare the paths, never the content.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
from websockets.sync.client import connect

from server_fixtures import KEY, client, served, server_bundle, speech_wav  # noqa: F401

LIVE_TOKENS = 24
FRAME = 1600  # 100 ms at 16 kHz


# How fast the answer came, and whether the tail was prefilled while the endpointer waited
# (that depends on pacing), are not part of what the stream must equal.
TIMING_FIELDS = {"latency_s", "speculated"}


def without_timing(event: dict) -> dict:
    return {k: v for k, v in event.items() if k not in TIMING_FIELDS}


@pytest.fixture(scope="module")
def listen_finals(server_bundle, speech_wav):
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "listen", "--input",
                           str(speech_wav), "--json", "--model", str(server_bundle),
                           "--max-new-tokens", str(LIVE_TOKENS), "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    finals = [without_timing(e) for e in events if e["type"] == "final"]
    assert len({e["utterance"] for e in finals}) == 2
    return finals


def stream_file(served, path, config: dict, during=None) -> list[dict]:
    """Send the file as PCM16 frames (10x real time at most), then stop; all events received."""
    pcm = sf.read(path, dtype="int16")[0]
    uri = f"ws://127.0.0.1:{served.port}/v1/listen"
    events: list[dict] = []
    with connect(uri, additional_headers={"Authorization": f"Bearer {KEY}"}, open_timeout=10,
                 close_timeout=10, max_size=2**20) as ws:
        received = threading.Thread(target=lambda: events.extend(_receive(ws)), daemon=True)
        received.start()
        ws.send(json.dumps(config))
        for i in range(0, pcm.size, FRAME):
            ws.send(pcm[i:i + FRAME].tobytes())
            if during is not None and i == 60 * FRAME:
                during()
            threading.Event().wait(0.01)
        ws.send(json.dumps({"type": "stop"}))
        received.join(timeout=300)
        assert not received.is_alive(), "no 'done' event"
    return events


def _receive(ws):
    for _ in range(10_000):
        event = json.loads(ws.recv(timeout=120))
        yield event
        if event["type"] in ("done", "error"):
            return


def test_websocket_finals_equal_listen_input(served, client, speech_wav, listen_finals):
    texts = []

    def file_request_in_between():  # served on the same worker, with the other KV cache
        with open(speech_wav, "rb") as fh:
            texts.append(client.audio.transcriptions.create(model="m", file=fh).text)

    events = stream_file(served, speech_wav, {"max_new_tokens": LIVE_TOKENS, "partial_every": 1.0},
                         during=file_request_in_between)
    assert texts and texts[0]
    assert events[-1]["type"] == "done" and events[-1]["utterances"] == 2
    finals = [without_timing(e) for e in events if e["type"] == "final"]
    assert finals == listen_finals
    partials = [e for e in events if e["type"] == "partial"]
    assert partials, "no partial events"
    assert {"type", "start", "end", "text", "utterance"} <= set(partials[0])
    # a partial of an utterance comes before its final
    first_final = next(i for i, e in enumerate(events) if e["type"] == "final")
    assert any(e["type"] == "partial" and e["utterance"] == 0 for e in events[:first_final])


def test_websocket_at_another_rate_and_bad_config(served, speech_wav, tmp_path):
    import soxr

    audio = sf.read(speech_wav, dtype="float32")[0]
    wav48 = tmp_path / "speech48k.wav"
    sf.write(wav48, soxr.resample(audio, 16000, 48000), 48000, subtype="PCM_16")
    events = stream_file(served, wav48, {"sample_rate": 48000, "max_new_tokens": LIVE_TOKENS,
                                         "partials": False})
    assert events[-1]["type"] == "done" and events[-1]["utterances"] == 2
    assert not [e for e in events if e["type"] == "partial"]
    uri = f"ws://127.0.0.1:{served.port}/v1/listen"
    with connect(uri, additional_headers={"Authorization": f"Bearer {KEY}"}, open_timeout=10) as ws:
        ws.send(json.dumps({"sample_rate": "fast"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "error"


def test_websocket_needs_the_key(served):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as caught:
        with connect(f"ws://127.0.0.1:{served.port}/v1/listen", open_timeout=10):
            pass
    assert caught.value.response.status_code == 403


def test_wyoming_transcribes_a_file(served, client, speech_wav):
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info

    pcm, rate = sf.read(speech_wav, dtype="int16")

    async def run():
        async with AsyncTcpClient("127.0.0.1", served.wyoming_port) as wy:
            await wy.write_event(Describe().event())
            info = Info.from_event(await asyncio.wait_for(wy.read_event(), 30))
            await wy.write_event(Transcribe(language="en").event())
            await wy.write_event(AudioStart(rate=rate, width=2, channels=1).event())
            for i in range(0, pcm.size, 1024):
                await wy.write_event(AudioChunk(rate=rate, width=2, channels=1,
                                                audio=pcm[i:i + 1024].tobytes()).event())
            await wy.write_event(AudioStop().event())
            while True:
                event = await asyncio.wait_for(wy.read_event(), 120)
                if Transcript.is_type(event.type):
                    return info, Transcript.from_event(event)

    info, transcript = asyncio.run(asyncio.wait_for(run(), 180))
    assert info.asr and info.asr[0].models[0].name == served.engine.model_id
    with open(speech_wav, "rb") as fh:
        expected = client.audio.transcriptions.create(model="m", file=fh).text
    assert transcript.text == expected and expected
    assert transcript.language == "en"
