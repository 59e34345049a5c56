"""`edge-moss demo`: the whole path on a machine with no weights.

Builds a tiny random-weight checkpoint in the release layout, exports it to an INT4 bundle and
transcribes a generated clip through the full runtime. The weights are random, so the text is
noise: the demo shows that every stage runs and how long each takes, nothing more.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ._extras import require_build_tools

BANNER = ("NOTE: random weights. The text below is noise, not a transcription; it only shows "
          "that every stage runs.")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="build a tiny random-weight bundle and run it end to end")
    p.add_argument("--dir", default=None,
                   help="work folder (default: ~/.cache/edge-moss/demo)")
    p.add_argument("--quant", default="int4", choices=["fp32", "fp16", "int8", "int4"])
    p.add_argument("--size", default="tiny", choices=["tiny", "small"])
    p.add_argument("--seconds", type=float, default=9.0, help="length of the generated clip")
    p.set_defaults(func=run)


def demo_clip(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: voiced bursts (harmonics with pitch glides) and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = (np.sin(2 * np.pi * 3.0 * t) > -0.2).astype(float)
    pauses = (np.mod(t, 3.0) < 2.3).astype(float)
    clip = 0.2 * voiced * syllables * pauses + 0.003 * rng.standard_normal(t.size)
    return clip.astype(np.float32)


def run(args) -> int:
    require_build_tools("demo")  # it builds a checkpoint and exports it
    from edge_moss_export.bundle_export import ExportOptions, export_bundle
    from edge_moss_export.fixture import write_fixture
    import soundfile as sf

    from ..api import EdgeMoss

    root = Path(args.dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "edge-moss" / "demo")
    ckpt = root / f"checkpoint-{args.size}"
    bundle = root / f"bundle-{args.size}-{args.quant}"
    print(BANNER)
    if not (ckpt / "config.json").is_file():
        t = time.perf_counter()
        write_fixture(ckpt, size=args.size, seed=0)
        print(f"1. wrote a {args.size} random-weight checkpoint to {ckpt} "
              f"({time.perf_counter() - t:.1f} s)")
    else:
        print(f"1. reusing the checkpoint in {ckpt}")
    if not (bundle / "manifest.json").is_file():
        t = time.perf_counter()
        export_bundle(ckpt, bundle, ExportOptions(quant=args.quant, progress=False), force=True,
                      on_stage=lambda line: print(f"   {line}", flush=True))
        print(f"2. exported an {args.quant.upper()} bundle to {bundle} "
              f"({time.perf_counter() - t:.1f} s)")
    else:
        print(f"2. reusing the bundle in {bundle}")
    clip_path = root / "demo.wav"
    sf.write(clip_path, demo_clip(args.seconds), 16000)
    print(f"3. generated a {args.seconds:.0f} s test clip: {clip_path}")
    model = EdgeMoss(bundle)
    t = time.perf_counter()
    # The generated clip is not speech, so the speech detector is off here.
    segments, info = model.transcribe(clip_path, timestamps=True, vad=False, max_new_tokens=48)
    took = time.perf_counter() - t
    print(f"4. transcribed {info.duration:.1f} s of audio in {took:.2f} s "
          f"(real-time factor {took / info.duration:.3f}); load {model.load_s:.2f} s")
    print("   segments (random weights, noise):")
    for seg in segments:
        print(f"   [{seg.start:6.2f} -> {seg.end:6.2f}] {seg.text!r}")
    answer = model.ask(clip_path, "What is happening in this recording?", max_new_tokens=24)
    t = answer.timings
    print(f"5. ask: {answer.audio_tokens} audio tokens, prompt {answer.prompt_tokens} tokens, "
          f"encode {t['encode_s']:.3f} s, prefill {t['prefill_s']:.3f} s, "
          f"decode {t['decode_tokens_per_s']:.1f} tokens/s")
    print(f"   answer (random weights, noise): {answer.text!r}")
    print(BANNER, file=sys.stderr)
    return 0
