"""What users see when something is wrong: one line, non-zero exit, no traceback; and silence."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import test_clip
from netguard import no_network


def run_cli(*args, env=None):
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True,
                          text=True, env=env, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def run_cli_code(script, *args):
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("edge-moss: error:")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, bundle_factory):
    return bundle_factory(tiny_checkpoint, "int8", "chunked")


def test_missing_bundle(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, test_clip(1.0), 16000)
    code, _, err = run_cli("ask", str(wav), "hi", "--model", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "no bundle at")


def test_no_model_given(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, test_clip(1.0), 16000)
    env = {k: v for k, v in __import__("os").environ.items() if k != "EDGE_MOSS_MODEL"}
    code, _, err = run_cli("transcribe", str(wav), env=env)
    assert_one_line_error(code, err, "--model")


@pytest.mark.parametrize("content, needle", [
    (b"this is a text file, not audio\n" * 20, "not"),
    (b"", "empty"),
])
def test_bad_audio_files(tmp_path, bundle, content, needle):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    code, _, err = run_cli("ask", str(path), "hi", "--model", str(bundle))
    assert_one_line_error(code, err, "bad.wav")


def test_missing_audio_and_wrong_file_type(tmp_path, bundle):
    code, _, err = run_cli("ask", str(tmp_path / "missing.wav"), "hi", "--model", str(bundle))
    assert_one_line_error(code, err, "missing.wav")
    code, _, err = run_cli("transcribe", str(bundle / "manifest.json"), "--model", str(bundle))
    assert_one_line_error(code, err, "manifest.json")


def test_zero_length_wav(tmp_path, bundle):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    code, _, err = run_cli("ask", str(path), "hi", "--model", str(bundle))
    assert_one_line_error(code, err, "zero.wav")


def test_silence_is_an_empty_transcript_not_an_error(tmp_path, bundle):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000 * 5, dtype=np.float32), 16000)
    code, out, err = run_cli("transcribe", str(path), "--model", str(bundle), "--timestamps",
                             "-f", "srt")
    assert code == 0, err
    assert out.strip() == ""


def test_no_socket_during_ask_and_transcribe(tmp_path, bundle):
    from edge_runtime.api import EdgeMoss

    wav = tmp_path / "a.wav"
    sf.write(wav, test_clip(3.0), 16000)
    with no_network():
        model = EdgeMoss(bundle, threads=1)
        model.ask(wav, "What is this?", max_new_tokens=4)
        model.transcribe(wav, timestamps=True, vad=True, max_new_tokens=4)
        model.transcribe(wav, timestamps=False, vad=False, max_new_tokens=4)


def test_pull_fails_clearly_offline(tmp_path):
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    code, _, err = run_cli("pull", "OpenMOSS-Team/MOSS-Audio-4B-Instruct", "-o",
                           str(tmp_path / "b"), env=env)
    assert_one_line_error(code, err, "cannot reach the model hub")


@pytest.mark.parametrize("flags, needle", [
    (["--top-p", "2"], "top_p"),
    (["--temperature", "-1"], "temperature"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
])
def test_bad_decoding_flags(tmp_path, bundle, flags, needle):
    wav = tmp_path / "a.wav"
    sf.write(wav, test_clip(1.0), 16000)
    code, _, err = run_cli("ask", str(wav), "hi", "--model", str(bundle), *flags)
    assert_one_line_error(code, err, needle)


def test_pull_exports_what_it_downloaded(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    # The hub is out of reach here: stand in for the download, keep the rest of the path real.
    import huggingface_hub

    from edge_runtime.bundle import verify_bundle
    from edge_runtime.cli import main

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: str(tiny_checkpoint))
    out = tmp_path / "pulled"
    assert main(["pull", "OpenMOSS-Team/MOSS-Audio-4B-Instruct", "-o", str(out),
                 "--quant", "int8", "--embeddings", "int4", "--max-context", "512"]) == 0
    manifest = verify_bundle(out)
    assert manifest.quantization["decoder"]["quant"] == "int8"  # export's options, through pull
    assert json.loads((out / "manifest.json").read_text())["embeddings"]["kind"] == "int4"
    assert json.loads((out / "manifest.json").read_text())["max_context"] == 512
    err = capsys.readouterr().err
    for stage in ("[1/4] audio graph (fp16", "[2/4] decoder graph (int8", "[3/4] embedding table (int4)",
                  "[4/4] tokenizer, manifest"):
        assert stage in err
    summary = next(line for line in err.splitlines() if line.startswith("bundle written to"))
    assert "decoder int8 (blocks of 128" in summary and "embeddings int4" in summary
    listed = {line.split()[-1] for line in err.splitlines() if line.startswith("  ")}
    assert {"audio.onnx", "decoder.onnx", "decoder.onnx.data", "manifest.json"} - listed == {"manifest.json"}


@pytest.mark.parametrize("blocked, command", [
    ("onnx_ir", ["export", "CKPT", "-o", "OUT"]), ("onnx_ir", ["demo", "--dir", "OUT"]),
    ("onnx_ir", ["pull", "OpenMOSS-Team/MOSS-Audio-4B-Instruct", "-o", "OUT"]),
    ("torch", ["eval-quant", "OUT", "--reference", "CKPT"]),
])
def test_build_commands_without_the_export_extra_name_it(tmp_path, tiny_checkpoint, blocked, command):
    # A base install (no [export]) lacks these modules: simulated by making their import fail.
    argv = [str(tiny_checkpoint) if a == "CKPT" else str(tmp_path / "b") if a == "OUT" else a
            for a in command]
    script = (f"import sys; sys.modules[{blocked!r}] = None\n"
              "from edge_runtime.cli import main\nsys.exit(main(sys.argv[1:]))")
    code, _, err = run_cli_code(script, *argv)
    assert_one_line_error(code, err, blocked, "pip install 'edge-moss[export]'", command[0])
    assert not (tmp_path / "b").exists()
