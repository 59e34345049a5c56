"""Synthetic speech for audio tests: espeak-ng speaks SSML with pauses, sox makes it 16 kHz mono s16.

Needs the Debian packages espeak-ng and sox: without them a test using this skips, naming them
(and fails under CI=true; see system_deps).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import system_deps

DEFAULT_SSML = (
    "<speak>Hello there, this is a test of the voice detector."
    '<break time="1500ms"/>The weather is nice today.'
    '<break time="1200ms"/>Goodbye.</speak>'
)


def make_speech_wav(
    path: str | Path, ssml: str = DEFAULT_SSML, lead_s: float = 0.5, tail_s: float = 0.5
) -> Path:
    """Write `ssml` spoken by espeak-ng to `path` as 16 kHz mono 16-bit wav with silent padding."""
    system_deps.require(*system_deps.SPEECH)
    path = Path(path)
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-m", "-w", str(raw), ssml], check=True, capture_output=True)
    subprocess.run(
        # -R -D: repeatable, no dither, so that the fixture is the same bytes on every run
        ["sox", "-R", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path),
         "vol", "0.8", "pad", str(lead_s), str(tail_s)],
        check=True, capture_output=True,
    )
    raw.unlink()
    return path
