"""`edge-moss serve` through the official OpenAI client: transcriptions in every format equal
`edge-moss transcribe`, streaming adds up, chat with input_audio gives `ask --json`'s token ids.

Random weights: every text here is meaningless; the tests compare paths, never content.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import httpx
import pytest
import srt
import webvtt

from server_fixtures import KEY, TOKENS, client, served, server_bundle, speech_wav  # noqa: F401

QUESTION = "What is said, and by whom?"
CHAT_TOKENS = 40


def cli(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def cli_transcripts(tmp_path_factory, server_bundle, speech_wav):
    """`edge-moss transcribe -f all` with and without --timestamps, as the server runs it."""
    out = {}
    for stamps in (False, True):
        folder = tmp_path_factory.mktemp("cli-ts" if stamps else "cli")
        cli("transcribe", str(speech_wav), "-f", "all", "-o", str(folder), "--model",
            str(server_bundle), "--max-new-tokens", str(TOKENS), "--threads", "1",
            *(["--timestamps"] if stamps else []))
        out[stamps] = {fmt: (folder / f"{speech_wav.stem}.{fmt}").read_text()
                       for fmt in ("txt", "srt", "vtt", "json")}
    return out


def test_health_needs_no_key_and_models_lists_the_bundle(served, client, server_bundle):
    health = httpx.get(f"http://127.0.0.1:{served.port}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert "server" not in health.headers  # no server banner
    ids = [m.id for m in client.models.list()]
    assert ids == [server_bundle.name]
    assert client.models.retrieve(server_bundle.name).id == server_bundle.name


def test_every_response_format_equals_the_cli(client, speech_wav, cli_transcripts):
    def ask(fmt):
        with open(speech_wav, "rb") as fh:
            return client.audio.transcriptions.create(model="whisper-1", file=fh,
                                                      response_format=fmt)

    plain, stamped = cli_transcripts[False], cli_transcripts[True]
    as_json = ask("json")
    assert as_json.text == " ".join(s["text"].strip() for s in json.loads(plain["json"])["segments"])
    assert as_json.text.strip()
    assert ask("text") == plain["txt"]
    srt_body = ask("srt")
    assert srt_body == stamped["srt"]
    cues = list(srt.parse(srt_body))
    assert cues and all(c.end >= c.start for c in cues)
    vtt_body = ask("vtt")
    assert vtt_body == stamped["vtt"]
    captions = list(webvtt.from_string(vtt_body))
    assert len(captions) == len(cues)
    verbose = ask("verbose_json")
    expected = json.loads(stamped["json"])
    assert verbose.duration == pytest.approx(expected["info"]["duration"], abs=1e-3)
    assert [(s.id, s.start, s.end, s.text) for s in verbose.segments] == \
        [(i, round(s["start"], 3), round(s["end"], 3), s["text"])
         for i, s in enumerate(expected["segments"])]
    # srt cues are the same segments, to the millisecond
    assert [(round(c.start.total_seconds(), 3), round(c.end.total_seconds(), 3)) for c in cues] == \
        [(s.start, s.end) for s in verbose.segments if s.text.strip()]


def test_streamed_transcription_adds_up_to_the_json_text(client, speech_wav):
    with open(speech_wav, "rb") as fh:
        whole = client.audio.transcriptions.create(model="m", file=fh).text
    with open(speech_wav, "rb") as fh:
        events = list(client.audio.transcriptions.create(model="m", file=fh, stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == events[-1].text == whole
    assert events[-1].usage.output_tokens > 0


def _audio_part(path) -> dict:
    return {"type": "input_audio",
            "input_audio": {"data": base64.b64encode(path.read_bytes()).decode(), "format": "wav"}}


@pytest.fixture(scope="module")
def ask_json(server_bundle, speech_wav):
    return json.loads(cli("ask", str(speech_wav), QUESTION, "--json", "--model", str(server_bundle),
                          "--max-new-tokens", str(CHAT_TOKENS), "--threads", "1"))


def test_chat_with_input_audio_gives_the_ids_of_ask_json(client, speech_wav, ask_json):
    messages = [{"role": "user", "content": [_audio_part(speech_wav),
                                             {"type": "text", "text": QUESTION}]}]
    done = client.chat.completions.create(model="m", messages=messages, max_tokens=CHAT_TOKENS,
                                          temperature=0)
    extra = done.model_extra["edge_moss"]
    assert extra["token_ids"] == ask_json["token_ids"] and ask_json["token_ids"]
    assert done.choices[0].message.content == ask_json["text"]
    assert done.usage.prompt_tokens == ask_json["prompt_tokens"]
    assert done.usage.completion_tokens == len(ask_json["token_ids"])
    assert done.choices[0].finish_reason == ("stop" if ask_json["stopped_by"] == "stop_token"
                                             else "length")
    # streamed: the content deltas add up to the same answer, the last chunk carries the ids
    chunks = list(client.chat.completions.create(model="m", messages=messages,
                                                 max_tokens=CHAT_TOKENS, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ask_json["text"]
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["edge_moss"]["token_ids"] == ask_json["token_ids"]
    assert chunks[-1].usage.prompt_tokens == ask_json["prompt_tokens"]


def test_a_stop_string_ends_the_answer_there(client, speech_wav, ask_json):
    answer = ask_json["text"]
    stop = next((answer[i:i + 3] for i in range(len(answer) // 3, len(answer) - 3)
                 if answer[i:i + 3].strip() and answer.find(answer[i:i + 3]) == i), None)
    assert stop, f"no stop string to cut at in {answer!r}"
    messages = [{"role": "user", "content": [_audio_part(speech_wav),
                                             {"type": "text", "text": QUESTION}]}]
    for stream in (False, True):
        if stream:
            chunks = list(client.chat.completions.create(model="m", messages=messages, stop=[stop],
                                                         max_tokens=CHAT_TOKENS, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            reason = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            done = client.chat.completions.create(model="m", messages=messages, stop=stop,
                                                  max_tokens=CHAT_TOKENS)
            text, reason = done.choices[0].message.content, done.choices[0].finish_reason
            assert len(done.model_extra["edge_moss"]["token_ids"]) < len(ask_json["token_ids"])
        assert text == answer[:answer.find(stop)] and reason == "stop"
