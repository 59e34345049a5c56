"""Synthetic speech for audio tests: espeak-ng speaks SSML with pauses, sox makes it 16 kHz mono s16.

Needs the apt packages espeak-ng and sox.  Missing programs raise (tests must fail, not skip).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DEFAULT_SSML = (
    "<speak>Hello there, this is a test of the voice detector."
    '<break time="1500ms"/>The weather is nice today.'
    '<break time="1200ms"/>Goodbye.</speak>'
)


def make_speech_wav(
    path: str | Path, ssml: str = DEFAULT_SSML, lead_s: float = 0.5, tail_s: float = 0.5
) -> Path:
    """Write `ssml` spoken by espeak-ng to `path` as 16 kHz mono 16-bit wav with silent padding."""
    missing = [name for name in ("espeak-ng", "sox") if shutil.which(name) is None]
    if missing:
        raise RuntimeError(f"speech fixture needs {', '.join(missing)}: apt-get install espeak-ng sox")
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
