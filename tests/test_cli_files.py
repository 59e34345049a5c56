"""What edge-moss does with a user's files, tried as a user would: no output is ever an input, every
input gets its own outputs, writes are whole or absent, failures are one line and spare the rest.

Each refusal asserts the exit code, the single error line, and that no input or earlier output
changed (sha256 before and after). Random weights: transcripts here are meaningless (mostly
empty), so outputs are told apart by what they record about their input (JSON info.duration).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import soundfile as sf

from conftest import test_clip

REPO = Path(__file__).resolve().parents[1]
TOKENS = ["--max-new-tokens", "4", "--threads", "1"]


def run_cli(*args, stdin: bytes | None = None, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", *map(os.fsencode, args)],
                          input=stdin, capture_output=True, env=env, cwd=cwd, timeout=300)
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"))


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("edge-moss: error:")]


def assert_refused(code: int, err: str, *needles: str) -> None:
    """Refused up front: exit 2 and stderr is exactly one error line holding every needle."""
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines == error_lines(err), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def digests(*roots: Path) -> dict[str, str]:
    """sha256 of every file under (or at) each root, by path: what must not change."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def wav(path: Path, seconds: float = 1.5, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, test_clip(seconds, seed), 16000, format="WAV")
    return path


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, bundle_factory):
    return bundle_factory(tiny_checkpoint, "int8", "chunked")


# ------------------------------------------------------------------ outputs that are inputs

def _alias(kind: str, target: Path, alias: Path) -> Path:
    if kind == "same":
        return target
    if kind == "symlink":
        alias.symlink_to(target)
    else:
        os.link(target, alias)
    return alias


@pytest.mark.parametrize("flag", ["--save-audio", "--transcript"])
@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink"])
def test_listen_never_writes_onto_its_input(tmp_path, bundle, flag, kind):
    rec = wav(tmp_path / "rec.wav", 2.0)
    out = _alias(kind, rec, tmp_path / "alias.wav")
    before = digests(tmp_path)
    code, _, err = run_cli("listen", "--input", str(rec), flag, str(out), "-m", str(bundle))
    assert_refused(code, err, flag, "is the input", "refusing to overwrite")
    assert digests(tmp_path) == before


def test_listen_transcript_and_saved_audio_must_differ(tmp_path, bundle):
    code, _, err = run_cli("listen", "--mic", "--transcript", str(tmp_path / "a.wav"),
                           "--save-audio", str(tmp_path / "a.wav"), "-m", str(bundle))
    assert_refused(code, err, "same file")
    assert not (tmp_path / "a.wav").exists()


@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink"])
def test_transcribe_never_writes_onto_its_input(tmp_path, bundle, kind):
    if kind == "same":  # a WAV named .txt: its transcript talk.txt would be the input itself
        rec = tmp_path / "talk.txt"
        sf.write(rec, test_clip(1.5), 16000, format="WAV")
        out_dir, fmt = tmp_path, "txt"
    else:
        rec = wav(tmp_path / "talk.wav")
        out_dir, fmt = tmp_path / "out", "srt"
        out_dir.mkdir()
        _alias(kind, rec, out_dir / "talk.srt")
    before = digests(tmp_path)
    code, _, err = run_cli("transcribe", str(rec), "-o", str(out_dir), "-f", fmt, "-m", str(bundle))
    assert_refused(code, err, "is the input")
    assert digests(tmp_path) == before


def test_eval_quant_reference_through_a_symlink_is_the_bundle(tmp_path, bundle):
    link = tmp_path / "same-bundle"
    link.symlink_to(bundle, target_is_directory=True)
    before = digests(bundle / "manifest.json")
    code, _, err = run_cli("eval-quant", str(bundle), "--reference", str(link))
    assert_refused(code, err, "--reference is the bundle itself")
    assert digests(bundle / "manifest.json") == before


# ------------------------------------------------------------------ one name per input

def _durations(out_dir: Path) -> dict[str, float]:
    return {str(p.relative_to(out_dir)): json.loads(p.read_text())["info"]["duration"]
            for p in sorted(out_dir.rglob("*.json"))}


def test_each_input_gets_its_own_outputs(tmp_path, bundle):
    wav(tmp_path / "a" / "x.wav", 1.5, 1)
    wav(tmp_path / "b" / "x.wav", 2.0, 2)
    sf.write(tmp_path / "a" / "x.flac", test_clip(2.5, 3), 16000)
    wav(tmp_path / "solo.wav", 1.0, 4)
    out = tmp_path / "out"
    inputs = [tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", tmp_path / "a" / "x.flac",
              tmp_path / "solo.wav"]
    code, _, err = run_cli("transcribe", *map(str, inputs), "-o", str(out), "-f", "json,srt",
                           "-m", str(bundle), *TOKENS)
    assert code == 0, err
    # x.wav twice (other folders) and x.flac share the name "x": each keeps folder and extension
    assert _durations(out) == {"a/x.flac.json": 2.5, "a/x.wav.json": 1.5, "b/x.wav.json": 2.0,
                               "solo.json": 1.0}
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.srt")) == [
        "a/x.flac.srt", "a/x.wav.srt", "b/x.wav.srt", "solo.srt"]


def test_same_stem_in_one_folder_keeps_the_extensions(tmp_path, bundle):
    wav(tmp_path / "x.wav", 1.5)
    sf.write(tmp_path / "x.flac", test_clip(2.0, 1), 16000)
    out = tmp_path / "out"
    code, _, err = run_cli("transcribe", str(tmp_path / "x.wav"), str(tmp_path / "x.flac"), "-o",
                           str(out), "-f", "json", "-m", str(bundle), *TOKENS)
    assert code == 0, err
    assert _durations(out) == {"x.wav.json": 1.5, "x.flac.json": 2.0}


def test_a_clash_the_rule_cannot_resolve_is_refused_before_anything_is_written(tmp_path, bundle):
    for name in ("x.wav", "x.flac", "x.wav.mp3"):  # x.wav.mp3's own name is "x.wav" too
        sf.write(tmp_path / name, test_clip(1.0), 16000, format="WAV")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.wav.txt").write_text("an earlier transcript\n")
    before = digests(tmp_path)
    code, _, err = run_cli("transcribe", str(tmp_path / "x.wav"), str(tmp_path / "x.flac"),
                           str(tmp_path / "x.wav.mp3"), "-o", str(out), "-m", str(bundle))
    assert_refused(code, err, "same name")
    assert digests(tmp_path) == before


def test_a_folder_input_names_outputs_by_the_same_rule(tmp_path, bundle):
    wav(tmp_path / "in" / "one.wav", 1.0)
    wav(tmp_path / "in" / "deep" / "one.wav", 1.5, 1)
    out = tmp_path / "out"
    code, _, err = run_cli("transcribe", str(tmp_path / "in"), "-o", str(out), "-f", "json",
                           "-m", str(bundle), *TOKENS)
    assert code == 0, err
    assert _durations(out) == {"one.wav.json": 1.0, "deep/one.wav.json": 1.5}


# ------------------------------------------------------------------ write failures

def test_write_failures_are_one_line_each_and_the_others_still_run(tmp_path, bundle):
    good = wav(tmp_path / "good.wav", 1.0)
    long_name = tmp_path / ("y" * 251 + ".a")  # its transcript y...y.json is 256 bytes long
    sf.write(long_name, test_clip(1.0, 1), 16000, format="WAV")
    folder = wav(tmp_path / "folder.wav", 1.0, 2)
    out = tmp_path / "out"
    (out / "folder.json").mkdir(parents=True)  # where folder.wav's transcript would go
    (out / "good.json").write_text("the previous run\n")
    before = digests(good, long_name, folder)
    code, _, err = run_cli("transcribe", str(good), str(long_name), str(folder), "-o", str(out),
                           "-f", "json", "-m", str(bundle), *TOKENS)
    assert code == 2
    errors = error_lines(err)
    assert len(errors) == 2, err
    assert "file name too long" in errors[0] and "y" * 251 in errors[0]
    assert "folder.json" in errors[1] and "is a folder" in errors[1]
    assert json.loads((out / "good.json").read_text())["info"]["duration"] == 1.0
    assert (out / "folder.json").is_dir() and not any((out / "folder.json").iterdir())
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary left
    assert digests(good, long_name, folder) == before


def test_output_dir_that_is_a_file(tmp_path, bundle):
    rec = wav(tmp_path / "a.wav")
    target = tmp_path / "notes"
    target.write_text("keep me\n")
    before = digests(tmp_path)
    code, _, err = run_cli("transcribe", str(rec), "-o", str(target), "-m", str(bundle))
    assert_refused(code, err, "notes", "not a folder")
    assert digests(tmp_path) == before


def test_read_only_output_folder_in_the_cli(tmp_path, bundle, monkeypatch, capsys):
    """A read-only file system cannot be mounted here (and root ignores 0500 folders), so the OS's
    answer is stood in for where the temporary file is created; the rest of the path is real."""
    import tempfile

    from edge_runtime.cli import main

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    rec, other = wav(tmp_path / "a.wav"), wav(tmp_path / "b.wav", 2.0, 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old\n")
    before = digests(tmp_path)
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    code = main(["transcribe", str(rec), str(other), "-o", str(out), "-m", str(bundle), *TOKENS])
    err = capsys.readouterr().err
    assert code == 2
    errors = error_lines(err)
    assert len(errors) == 2 and all("read-only file system" in line for line in errors), err
    assert str(out / "a.txt") in errors[0] and str(out / "b.txt") in errors[1]
    assert digests(tmp_path) == before


def test_eval_quant_on_a_read_only_bundle_shows_the_results_then_warns(
        tmp_path, tiny_checkpoint, bundle_factory, monkeypatch, capsys):
    import edge_moss_quant.eval

    from edge_runtime.cli import main

    bundle = bundle_factory(tiny_checkpoint, "int8", "chunked")
    reference = bundle_factory(tiny_checkpoint, "fp32", "chunked")

    def read_only(root, manifest):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(edge_moss_quant.eval, "write_manifest", read_only)
    before = digests(bundle)
    code = main(["eval-quant", str(bundle), "-r", str(reference), "--clips", "1", "--tokens", "2",
                 "--threads", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["summary"]["cases"] == 3  # the evaluation is not lost
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "read-only file system" in warning[0]
    assert "manifest.json" in warning[0] and "Traceback" not in captured.err
    assert digests(bundle) == before


# ------------------------------------------------------------------ inputs the CLI takes

def test_stdin_and_a_fifo(tmp_path, bundle):
    rec = wav(tmp_path / "a.wav", 2.0)
    data = rec.read_bytes()
    code, out, err = run_cli("transcribe", "-", "-o", str(tmp_path / "out"), "-f", "json",
                             "-m", str(bundle), *TOKENS, stdin=data)
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "stdin.json").read_text())["info"]["duration"] == 2.0

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(data), daemon=True)
    writer.start()
    code, out, err = run_cli("ask", str(fifo), "What is this?", "--json", "-m", str(bundle), *TOKENS)
    writer.join(timeout=30)
    assert code == 0, err
    assert json.loads(out)["audio"] == str(fifo)


def test_a_non_utf8_file_name_is_read(tmp_path, bundle):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.wav")  # Latin-1 bytes, not UTF-8
    with open(name, "wb") as handle:
        sf.write(handle, test_clip(1.0), 16000, format="WAV")
    code, _, err = run_cli("transcribe", name, "-m", str(bundle), *TOKENS)
    assert code == 0, err
    assert "caf\\xe9.wav: 1.0 s of audio" in err


def test_several_files_on_the_terminal_are_headed_by_their_names(tmp_path, bundle):
    a, b = wav(tmp_path / "a.wav"), wav(tmp_path / "b.wav", 1.0, 1)
    missing = tmp_path / "gone.wav"
    code, out, err = run_cli("transcribe", str(a), str(b), "-m", str(bundle), *TOKENS)
    assert code == 0, err
    assert out.index(f"==> {a} <==") < out.index(f"==> {b} <==")
    summaries = [line for line in err.splitlines() if "real-time factor" in line]
    assert len(summaries) == 2 and "1.5 s of audio" in summaries[0]
    # a broken file among good ones: one line for it, the others still run, exit code 2
    missing.write_bytes(b"not audio at all" * 10)
    code, out, err = run_cli("ask", str(a), str(missing), str(b), "hello?", "-m", str(bundle),
                             *TOKENS)
    assert code == 2
    assert len(error_lines(err)) == 1 and "gone.wav" in error_lines(err)[0]
    assert f"==> {b} <==" in out


def test_unreadable_file_says_permission_denied(tmp_path, monkeypatch):
    """As root every file is readable, so the OS's refusal is stood in for at os.open."""
    from edge_runtime import audio
    from edge_runtime.errors import AudioError

    rec = wav(tmp_path / "secret.wav")
    real_open = os.open

    def denied(path, flags, *args, **kwargs):
        if os.fspath(path) == str(rec):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(audio.os, "open", denied)
    with pytest.raises(AudioError, match="permission denied") as info:
        audio.load_audio(rec)
    assert "corrupt" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file; covered by the test above")
def test_unreadable_file_in_the_cli(tmp_path, bundle):
    rec = wav(tmp_path / "secret.wav")
    rec.chmod(0)
    code, _, err = run_cli("transcribe", str(rec), "-m", str(bundle))
    assert_refused(code, err, "permission denied")


# ------------------------------------------------------------------ formats and the terminal

def test_several_formats_in_one_run_each_parse(tmp_path, bundle):
    import srt
    import webvtt

    rec = wav(tmp_path / "talk.wav", 2.0)
    out = tmp_path / "out"
    code, _, err = run_cli("transcribe", str(rec), "-o", str(out), "-f", "srt,vtt,json",
                           "--timestamps", "-m", str(bundle), *TOKENS)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["talk.json", "talk.srt", "talk.vtt"]
    list(srt.parse((out / "talk.srt").read_text()))
    webvtt.read(str(out / "talk.vtt"))
    assert json.loads((out / "talk.json").read_text())["info"]["duration"] == 2.0
    assert len([line for line in err.splitlines() if line.startswith("wrote ")]) == 3
    summary = [line for line in err.splitlines() if "real-time factor" in line]
    assert len(summary) == 1 and "talk.wav: 2.0 s of audio in" in summary[0]


def test_timestamps_on_the_terminal_are_whisper_cpp_lines():
    import re

    from edge_runtime.commands.transcribe import terminal_text
    from edge_runtime.segments import Segment

    segments = [Segment(0.0, 4.12, "Hello there."), Segment(3725.5, 3727.25, "two\nlines"),
                Segment(5.0, 6.0, "   ")]
    text = terminal_text(segments, "txt", None, timestamps=True)
    assert text == ("[00:00:00.000 --> 00:00:04.120]  Hello there.\n"
                    "[01:02:05.500 --> 01:02:07.250]  two lines\n")
    assert all(re.fullmatch(r"\[\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\]  \S.*", line)
               for line in text.splitlines())
    assert terminal_text(segments, "txt", None, timestamps=False) == "Hello there.\ntwo lines\n"


def test_stdin_redirected_from_an_output_is_refused(tmp_path, bundle):
    rec = wav(tmp_path / "out" / "stdin.txt")  # a WAV where `-`'s transcript would go
    before = digests(tmp_path)
    with open(rec, "rb") as handle:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "transcribe", "-", "-o",
                               str(tmp_path / "out"), "-m", str(bundle)], stdin=handle,
                              capture_output=True, text=True, env=env, timeout=120)
    assert_refused(proc.returncode, proc.stderr, "is the input standard input")
    assert digests(tmp_path) == before


def test_the_api_reports_progress_in_seconds_of_audio(tmp_path, tiny_checkpoint, bundle_factory):
    from edge_runtime.api import EdgeMoss

    model = EdgeMoss(bundle_factory(tiny_checkpoint, "int8", "chunked"), threads=1)
    calls = []
    model.transcribe(test_clip(14.0), vad=False, window_s=6.0, max_new_tokens=2,
                     progress=lambda done, total: calls.append((done, total)))
    assert len(calls) >= 3 and all(total == 14.0 for _, total in calls)
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and dones[-1] == 14.0 and 0 < dones[0] < 14.0
