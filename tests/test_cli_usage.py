"""Bad command-line usage is one line on stderr and exit 2 in every command, never argparse's
multi-line usage block or a traceback; --help keeps its full text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("argv, needles", [
    # unknown option: reported as the command's own, not the top parser's
    (["transcribe", "a.wav", "--bogus"],
     ["transcribe: unrecognized arguments: --bogus", "(see edge-moss transcribe --help)"]),
    (["serve", "--bogus", "1"], ["serve: unrecognized arguments: --bogus 1"]),
    # missing positional / missing option value
    (["transcribe"], ["transcribe: the following arguments are required: INPUT"]),
    (["ask", "a.wav"], ["ask: the following arguments are required"]),
    (["export", "ckpt"], ["export: the following arguments are required: -o/--output"]),
    (["serve", "--port"], ["serve: argument --port: expected one argument"]),
    # bad choice / bad type
    (["export", "ckpt", "-o", "out", "--quant", "int3"],
     ["export: argument --quant: invalid choice: 'int3'", "(see edge-moss export --help)"]),
    (["transcribe", "a.wav", "-f", "docx"], ["docx"]),  # checked after parsing, same line
    (["ask", "a.wav", "q", "--threads", "abc"], ["ask: argument --threads: invalid int value"]),
    (["listen", "--mic", "--device", "pulse"], ["listen:", "--mic-device"]),
    (["fixture", "out", "--size", "huge"], ["fixture: argument --size: invalid choice"]),
    # the top parser itself: unknown command, unknown global option
    (["frobnicate"], ["argument COMMAND: invalid choice: 'frobnicate'", "(see edge-moss --help)"]),
    (["--bogus"], ["edge-moss: error: unrecognized arguments: --bogus"]),
])
def test_usage_errors_are_one_line(argv, needles):
    proc = run_cli(*argv)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr
    assert lines[0].startswith("edge-moss: error:")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize("argv", [["--help"], ["transcribe", "--help"], ["export", "-h"]])
def test_help_keeps_its_full_text(argv):
    proc = run_cli(*argv)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: edge-moss")
    assert len(proc.stdout.splitlines()) > 10  # the whole option list, not one line
