"""Bad requests get their status and OpenAI's error JSON; a full queue 503 with Retry-After; a
client killed mid-request is cancelled and the next request is served as before."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from server_fixtures import KEY, MAX_QUEUE, MAX_UPLOAD_MB, client, served, server_bundle, speech_wav  # noqa: F401


def url(served, path: str) -> str:
    return f"http://127.0.0.1:{served.port}{path}"


AUTH = {"Authorization": f"Bearer {KEY}"}


def assert_error(response: httpx.Response, status: int, param=None, code=None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


def post_audio(served, files=None, data=None, headers=AUTH, **kw) -> httpx.Response:
    return httpx.post(url(served, "/v1/audio/transcriptions"), files=files, data=data,
                      headers=headers, timeout=60, **kw)


def test_non_audio_upload_is_400_through_the_openai_client(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="m", file=("notes.wav", b"this is not audio"))
    assert caught.value.status_code == 400
    assert caught.value.body["code"] == "invalid_audio" and caught.value.body["param"] == "file"


def test_missing_file_field(served):
    assert_error(post_audio(served, data={"model": "whisper-1"}), 400, "file", "missing_file")
    # a JSON body is no form either
    assert_error(httpx.post(url(served, "/v1/audio/transcriptions"), json={"model": "m"},
                            headers=AUTH, timeout=30), 400, "file")


def test_unknown_response_format_and_bad_fields(served, speech_wav):
    audio = {"file": ("a.wav", speech_wav.read_bytes())}
    assert_error(post_audio(served, files=audio, data={"response_format": "xml"}), 400,
                 "response_format", "unsupported_response_format")
    assert_error(post_audio(served, files=audio, data={"temperature": "hot"}), 400, "temperature")
    assert_error(post_audio(served, files=audio, data={"timestamp_granularities[]": "word"}), 400,
                 "timestamp_granularities[]")
    assert_error(post_audio(served, files=audio, data={"stream": "true", "response_format": "srt"}),
                 400, "stream")


def _noise_wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    sf.write(buf, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000,
             format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_oversize_upload_is_413(served, client):
    big = _noise_wav(MAX_UPLOAD_MB * 1024 * 1024 / 32000 + 2)  # a bit over the 1 MB limit
    assert_error(post_audio(served, files={"file": ("big.wav", big)}), 413, code="request_too_large")
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="m", file=("big.wav", big))
    assert caught.value.status_code == 413

    form = httpx.Request("POST", url(served, "/v1/audio/transcriptions"),
                         files={"file": ("big.wav", big)})
    body = form.read()

    def chunked():  # no Content-Length: the limit is counted as the body arrives
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    response = httpx.post(url(served, "/v1/audio/transcriptions"), content=chunked(),
                          headers={**AUTH, "Content-Type": form.headers["Content-Type"]},
                          timeout=30)
    assert_error(response, 413, code="request_too_large")
    assert httpx.get(url(served, "/health"), timeout=10).status_code == 200


def test_wrong_or_missing_key_is_401(served, speech_wav):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        assert_error(httpx.get(url(served, "/v1/models"), headers=headers, timeout=10), 401,
                     code="invalid_api_key")
    bad = openai.OpenAI(base_url=url(served, "/v1"), api_key="nope", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.AuthenticationError):
        with open(speech_wav, "rb") as fh:
            bad.audio.transcriptions.create(model="m", file=fh)


def test_unknown_route_and_method(served):
    assert_error(httpx.get(url(served, "/v1/nothing"), headers=AUTH, timeout=10), 404,
                 code="unknown_url")
    assert_error(httpx.get(url(served, "/v1/audio/transcriptions"), headers=AUTH, timeout=10), 405)
    assert_error(httpx.get(url(served, "/v1/models/other"), headers=AUTH, timeout=10), 404,
                 "model", "model_not_found")


def test_bad_chat_requests(served, speech_wav):
    import base64

    audio = {"type": "input_audio", "input_audio": {
        "data": base64.b64encode(speech_wav.read_bytes()).decode(), "format": "wav"}}
    chat = url(served, "/v1/chat/completions")

    def post(body):
        return httpx.post(chat, json=body, headers=AUTH, timeout=60)

    text = {"type": "text", "text": "What is said?"}
    assert_error(httpx.post(chat, content=b"{not json", headers=AUTH, timeout=10), 400)
    assert_error(post({"messages": [{"role": "user", "content": [text]}]}), 400, "messages",
                 "audio_required")
    assert_error(post({"messages": [{"role": "user", "content": [audio, text]},
                                    {"role": "assistant", "content": "x"}]}), 400)
    bad_audio = {"type": "input_audio", "input_audio": {"data": "@@@", "format": "wav"}}
    assert_error(post({"messages": [{"role": "user", "content": [bad_audio, text]}]}), 400,
                 "input_audio.data")
    not_audio = {"type": "input_audio", "input_audio": {
        "data": base64.b64encode(b"hello").decode(), "format": "wav"}}
    assert_error(post({"messages": [{"role": "user", "content": [not_audio, text]}]}), 400,
                 code="invalid_audio")
    assert_error(post({"messages": [{"role": "user", "content": [audio, text]}],
                       "max_tokens": 0}), 400, "max_completion_tokens")


class Gate:
    """Jobs of the test's own that hold the worker (and the queue's places) until released."""

    def __init__(self, served, count: int):
        self.event = threading.Event()
        self.jobs = [served.engine.submit(lambda job: self.event.wait(60))]
        assert _wait_for(lambda: served.engine.queue.waiting == 0)  # the first one runs
        self.jobs += [served.engine.submit(lambda job: self.event.wait(60)) for _ in range(count - 1)]

    def release(self):
        self.event.set()
        for job in self.jobs:
            job.future.result(timeout=60)


def _wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_full_queue_is_503_with_retry_after(served, speech_wav):
    gate = Gate(served, 1 + MAX_QUEUE)  # one running, MAX_QUEUE waiting
    try:
        assert _wait_for(lambda: served.engine.queue.waiting == MAX_QUEUE)
        response = post_audio(served, files={"file": ("a.wav", speech_wav.read_bytes())})
        assert_error(response, 503, code="server_busy")
        assert int(response.headers["Retry-After"]) >= 1
    finally:
        gate.release()
    assert post_audio(served, files={"file": ("a.wav", speech_wav.read_bytes())}).status_code == 200


KILLED_CLIENT = textwrap.dedent("""
    import sys, httpx
    url, key, path = sys.argv[1:4]
    with open(path, "rb") as fh:
        httpx.post(url, files={"file": ("a.wav", fh.read())}, data={"stream": sys.argv[4]},
                   headers={"Authorization": "Bearer " + key}, timeout=120)
""")


@pytest.mark.parametrize("stream", ["false", "true"])
def test_a_killed_client_is_cancelled_and_the_next_request_is_right(served, client, speech_wav,
                                                                    stream):
    with open(speech_wav, "rb") as fh:
        before = client.audio.transcriptions.create(model="m", file=fh).text
    queue = served.engine.queue
    cancelled = queue.cancelled
    gate = Gate(served, 1)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT,
                             url(served, "/v1/audio/transcriptions"), KEY, str(speech_wav), stream])
    try:
        assert _wait_for(lambda: queue.waiting == 1), "the client's request never queued"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(1.0)  # the server notices the closed connection
    finally:
        gate.release()
    assert _wait_for(lambda: queue.cancelled == cancelled + 1 and queue.waiting == 0)
    with open(speech_wav, "rb") as fh:
        assert client.audio.transcriptions.create(model="m", file=fh).text == before


def test_a_stream_closed_mid_decode_stops_the_decode(served, client, speech_wav):
    import base64

    audio = {"type": "input_audio", "input_audio": {
        "data": base64.b64encode(speech_wav.read_bytes()).decode(), "format": "wav"}}
    messages = [{"role": "user", "content": [audio, {"type": "text", "text": "Describe it."}]}]
    long = 800
    whole = client.chat.completions.create(model="m", messages=messages, max_tokens=long)
    assert whole.choices[0].finish_reason == "length", "the random model stopped on its own"
    queue = served.engine.queue
    cancelled = queue.cancelled
    start = time.monotonic()
    stream = client.chat.completions.create(model="m", messages=messages, max_tokens=long,
                                            stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()  # the client goes away after the first piece of the answer
    assert _wait_for(lambda: queue.cancelled == cancelled + 1, timeout=60)
    took = time.monotonic() - start
    # the rest of the answer was not decoded: the next request is served at once and is right
    again = client.chat.completions.create(model="m", messages=messages, max_tokens=long)
    assert again.model_extra["edge_moss"]["token_ids"] == whole.model_extra["edge_moss"]["token_ids"]
    assert took < whole.model_extra["edge_moss"]["timings"]["decode_s"]
