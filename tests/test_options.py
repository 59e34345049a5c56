"""Every option is checked before any work, with one line naming it and its range; the Python API
fails the same way (OptionError is a ValueError) with the same words. No model is needed for the
CLI checks: they run before the bundle is opened (--model names nothing here)."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys

import pytest
import soundfile as sf

from conftest import test_clip
from edge_runtime.cli import build_parser, main
from edge_runtime.errors import OptionError
from edge_runtime.options import DecodeOptions, LiveOptions, ModelOptions, WindowOptions, \
    output_formats

NO_BUNDLE = ["-m", "/nonexistent/bundle"]  # reaching the bundle would be a different error


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("opts") / "a.wav"
    sf.write(path, test_clip(1.0), 16000)
    return str(path)


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge-moss: error: "), captured.err
    assert captured.out == ""
    return lines[0]


TRANSCRIBE = [
    (["--window", "nan"], "--window (window_s) must be a number from 6 to 120 seconds, got nan"),
    (["--window", "inf"], "--window (window_s)"),
    (["--window", "2"], "from 6 to 120"),
    (["--window", "5.9"], "from 6 to 120"),
    (["--window", "-30"], "--window"),
    (["--window", "1e9"], "--window"),
    (["--max-new-tokens", "0"], "--max-new-tokens (max_new_tokens) must be an integer from 1"),
    (["--max-new-tokens", "99999999"], "--max-new-tokens"),
    (["--temperature", "nan"], "--temperature (temperature)"),
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "inf"], "--temperature"),
    (["--top-p", "0"], "--top-p (top_p) must be a number above 0 and at most 1"),
    (["--top-p", "nan"], "--top-p"),
    (["--top-p", "2"], "--top-p"),
    (["--top-k", "-1"], "--top-k (top_k)"),
    (["--seed", "-1"], "--seed (seed)"),
    (["--max-context", "-1"], "--max-context (max_context) must be an integer from 64"),
    (["--max-context", "0"], "--max-context"),
    (["--threads", "0"], "--threads (threads)"),
    (["--threads", "-4"], "--threads"),
    (["-f", "docx"], "unsupported format 'docx'"),
    (["-f", "srt,,vtt"], "empty format name"),
    (["-f", "srt,vtt"], "needs -o DIR"),
    (["-f", "all"], "needs -o DIR"),
]


@pytest.mark.parametrize("flags, needle", TRANSCRIBE)
def test_transcribe_options(clip, capsys, flags, needle):
    assert main(["transcribe", clip, *flags, *NO_BUNDLE]) == 2
    assert needle in one_error_line(capsys)


@pytest.mark.parametrize("flags, needle", [
    (["--top-p", "2"], "--top-p (top_p)"),
    (["--temperature", "nan"], "--temperature"),
    (["--max-context", "-1"], "--max-context"),
])
def test_ask_options(clip, capsys, flags, needle):
    assert main(["ask", clip, "hi", *flags, *NO_BUNDLE]) == 2
    assert needle in one_error_line(capsys)


@pytest.mark.parametrize("flags, needle", [
    (["--max-utterance", "nan"], "--max-utterance (max_utterance_s) must be a number from 1 to 120"),
    (["--max-utterance", "0"], "--max-utterance"),
    (["--min-speech", "nan"], "--min-speech (min_speech_s)"),
    (["--min-speech", "-1"], "--min-speech"),
    (["--min-speech", "5", "--max-utterance", "3"], "shorter than --max-utterance"),
    (["--min-silence", "0"], "--min-silence"),
    (["--min-silence", "inf"], "--min-silence"),
    (["--vad-threshold", "nan"], "--vad-threshold"),
    (["--vad-threshold", "1.5"], "--vad-threshold"),
    (["--partial-every", "0"], "--partial-every"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--max-context", "-1"], "--max-context"),
    (["--transcript", "notes.docx"], "unsupported extension '.docx'"),
    (["--transcript", "notes.json"], "use .jsonl"),
    (["--save-audio", "take.flac"], "ending in .wav"),
])
def test_listen_options(clip, capsys, flags, needle):
    assert main(["listen", "--input", clip, *flags, *NO_BUNDLE]) == 2
    assert needle in one_error_line(capsys)


@pytest.mark.parametrize("flags, needle", [
    (["--clips", "0"], "--clips (clips) must be an integer from 1 to 6"),
    (["--clips", "7"], "--clips"),
    (["--tokens", "0"], "--tokens"),
    (["--threads", "0"], "--threads"),
])
def test_eval_quant_options(tmp_path, capsys, flags, needle):
    assert main(["eval-quant", str(tmp_path / "b"), "-r", str(tmp_path / "r"), *flags]) == 2
    assert needle in one_error_line(capsys)


def test_the_real_entry_point_prints_one_line_and_no_traceback(clip):
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "transcribe", clip,
                           "--window", "nan", *NO_BUNDLE], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "edge-moss: error: --window (window_s) must be a number from 6 to 120 seconds, got nan"]


# ----------------------------------------------------------------- the dataclasses themselves

@pytest.mark.parametrize("make", [
    lambda: DecodeOptions(max_new_tokens=0), lambda: DecodeOptions(max_new_tokens=2.5),
    lambda: DecodeOptions(max_new_tokens=True), lambda: DecodeOptions(temperature=math.nan),
    lambda: DecodeOptions(top_p=0.0), lambda: DecodeOptions(top_k=-1),
    lambda: DecodeOptions(seed=-5), lambda: DecodeOptions(temperature="0.5"),
    lambda: ModelOptions(threads=0), lambda: ModelOptions(max_context=-1),
    lambda: WindowOptions(window_s=math.inf), lambda: WindowOptions(window_s=5.99),
    lambda: LiveOptions(partial_every_s=math.nan), lambda: LiveOptions(vad_threshold=0),
])
def test_bad_values_raise_option_error_which_is_a_value_error(make):
    with pytest.raises(OptionError) as info:
        make()
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value) and " must be " in str(info.value)


def test_good_values_pass():
    assert DecodeOptions(max_new_tokens=1, temperature=10, top_p=1e-9, seed=0).options().max_new_tokens == 1
    assert WindowOptions(6).window_s == 6 and WindowOptions(120.0).window_s == 120
    assert ModelOptions(threads=None, max_context=None) == ModelOptions()
    assert LiveOptions(partial_every_s=None).endpoint_config().threshold == 0.5


def test_output_formats():
    assert output_formats("srt,vtt,json") == ("srt", "vtt", "json")
    assert output_formats("all") == ("txt", "srt", "vtt", "json")
    assert output_formats("SRT, .vtt,srt") == ("srt", "vtt")
    for bad in ("docx", "srt,docx", "", "srt,"):
        with pytest.raises(OptionError):
            output_formats(bad)


def test_write_transcript_refuses_an_unknown_format_and_writes_nothing(tmp_path):
    from edge_runtime.segments import Segment
    from edge_runtime.subtitles import write_transcript

    with pytest.raises(OptionError):
        write_transcript([Segment(0.0, 1.0, "hi")], tmp_path / "talk", "docx")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- the API, with the same words

@pytest.fixture(scope="module")
def model(tiny_checkpoint, bundle_factory):
    from edge_runtime.api import EdgeMoss

    return EdgeMoss(bundle_factory(tiny_checkpoint, "int8", "chunked"), threads=1)


def _cli_message(capsys, argv) -> str:
    assert main(argv) == 2
    return one_error_line(capsys).removeprefix("edge-moss: error: ")


def test_api_checks_with_the_cli_words_before_reading_audio(model, capsys, clip):
    missing = "/nonexistent/audio.wav"  # reading it would raise AudioError instead
    cases = [
        (lambda: model.transcribe(missing, window_s=math.nan), ["transcribe", clip, "--window", "nan"]),
        (lambda: model.transcribe(missing, max_new_tokens=0), ["transcribe", clip, "--max-new-tokens", "0"]),
        (lambda: model.ask(missing, "hi", top_p=2.0), ["ask", clip, "hi", "--top-p", "2.0"]),
        (lambda: model.ask(missing, "hi", temperature=-1.0), ["ask", clip, "hi", "--temperature", "-1"]),
    ]
    for call, argv in cases:
        with pytest.raises(ValueError) as info:
            call()
        assert isinstance(info.value, OptionError)
        assert str(info.value) == _cli_message(capsys, [*argv, *NO_BUNDLE])


def test_api_model_and_live_options(model, tiny_checkpoint, bundle_factory):
    from edge_runtime.api import EdgeMoss
    from edge_runtime.endpointing import EndpointConfig
    from edge_runtime.live import LiveTranscriber

    with pytest.raises(OptionError, match=r"--max-context \(max_context\)"):
        EdgeMoss(bundle_factory(tiny_checkpoint, "int8", "chunked"), max_context=-1)
    with pytest.raises(OptionError, match="--partial-every"):
        LiveTranscriber(model, lambda event: None, partial_every_s=math.nan)
    with pytest.raises(OptionError, match="--min-silence"):
        LiveTranscriber(model, lambda event: None, endpoint=EndpointConfig(min_silence_s=math.nan))


# ----------------------------------------------------------------- option names and help

def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["transcribe", "ask", "listen", "eval-quant", "devices"])
def test_every_option_states_its_default(command):
    parser = _subparser(command)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.required:
            continue
        if isinstance(action, argparse._HelpAction) or action.dest in ("mic", "input"):
            continue  # --help; --mic/--input: one of them is required, neither has a default
        text = formatter._get_help_string(action)
        assert "default" in text, f"{command} {action.option_strings[0]}: {text!r}"


def test_transcribe_help_lists_the_audio_formats():
    text = _subparser("transcribe").format_help()
    for name in ("WAV", "FLAC", "OGG", "MP3", "ffmpeg"):
        assert name in text


def test_device_means_the_compute_device_everywhere(capsys):
    parser = build_parser()
    for argv in (["transcribe", "a.wav"], ["ask", "a.wav", "q"], ["listen", "--mic"]):
        assert parser.parse_args([*argv, "--device", "cuda"]).provider == "cuda"
    args = parser.parse_args(["listen", "--mic", "--mic-device", "3", "--device", "cpu"])
    assert (args.mic_device, args.provider) == ("3", "cpu")
    assert parser.parse_args(["listen", "--mic", "--input-device", "pulse"]).mic_device == "pulse"
    with pytest.raises(SystemExit):
        parser.parse_args(["listen", "--mic", "--device", "pulse"])
    assert "--mic-device" in capsys.readouterr().err  # the old spelling says where it went


def test_devices_output_names_the_microphone_flag():
    from edge_runtime.commands.devices import format_devices

    table = format_devices([{"default": True, "index": 0, "name": "pulse", "channels": 2,
                             "samplerate": 44100.0, "hostapi": "ALSA"}])
    assert "--mic-device" in table and "--device " not in table
