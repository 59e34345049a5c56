"""Edge fit (issue 13): edge-moss and CrispASR side by side, each command timed as a user runs it.

Every figure comes from a whole command run under `/usr/bin/time -v` (peak RSS = its maximum
resident set), repeated, with medians:
  - edge-moss `ask CLIP "Transcribe the audio." --json --max-new-tokens N --ignore-eos` with the
    default thread count and with each explicit count; its JSON timings give load, encode,
    prefill and decode;
  - CrispASR's driver (`mossdrv GGUF CLIP.f32 THREADS`, CRISPASR_MOSS_AUDIO_BENCH=1,
    MOSS_MAX_NEW=N) at each thread count: its JSON line and stage times on stderr;
  - the live path (`listen`'s LiveTranscriber) fed two utterances paced in real time, for
    end of speech -> final text;
  - the memory breakdown (benchmarks.memory_breakdown) and the bandwidth roofline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .subproc import ROOT, TIME_BIN

PROMPT = "Transcribe the audio."
# ~30 s of synthetic speech (espeak-ng), then cut or padded to exactly 30.0 s with sox.
LONG_TEXT = ("The quarterly meeting opened with a short review of the budget, and the team agreed to "
             "move the product launch to the second week of March. Several people asked about the "
             "new office, which should be ready in the spring, and the manager promised a tour for "
             "everyone. After a break the discussion turned to hiring: two engineers and a designer "
             "will join next month, and the onboarding plan needs volunteers. Finally the group "
             "talked about the customer survey, whose results were mostly positive, although the "
             "mobile application still crashes far too often on older phones.")
LIVE_SSML = ("<speak>Please book a table for four people at seven tonight."
             '<break time="1500ms"/>And remind me to call the dentist tomorrow morning.</speak>')


def speech_clip(path: Path, seconds: float = 30.0) -> Path:
    """A 16 kHz mono wav of synthetic speech exactly `seconds` long (espeak-ng + sox)."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), LONG_TEXT], check=True, capture_output=True)
    subprocess.run(["sox", "-R", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path),
                    "pad", "0", str(seconds), "trim", "0", str(seconds)], check=True, capture_output=True)
    raw.unlink()
    return path


def live_clip(path: Path) -> Path:
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-m", "-w", str(raw), LIVE_SSML], check=True, capture_output=True)
    subprocess.run(["sox", "-R", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path),
                    "pad", "0.5", "1.5"], check=True, capture_output=True)
    raw.unlink()
    return path


def f32_clip(wav: Path) -> Path:
    out = wav.with_suffix(".f32")
    subprocess.run(["sox", str(wav), "-t", "f32", "-r", "16000", "-c", "1", str(out)], check=True,
                   capture_output=True)
    return out


def timed(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run `cmd` under /usr/bin/time -v: stdout, stderr, wall seconds, peak RSS in GiB."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        start = time.perf_counter()
        proc = subprocess.run([TIME_BIN, "-v", "-o", tf.name, *cmd], capture_output=True, text=True,
                              env=env, timeout=timeout)
        wall = time.perf_counter() - start
        report = Path(tf.name).read_text()
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): {proc.stderr[-400:]}")
    return {"stdout": proc.stdout, "stderr": proc.stderr, "wall_s": wall,
            "peak_rss_gib": int(match.group(1)) / (1 << 20) if match else None}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def edge_ask(bundle: Path, clip: Path, threads: int | None, new_tokens: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "edge_runtime.cli", "ask", str(clip), PROMPT, "-m", str(bundle),
           "--json", "--max-new-tokens", str(new_tokens), "--ignore-eos"]
    if threads:
        cmd += ["--threads", str(threads)]
    run = timed(cmd, env=_env())
    t = json.loads(run["stdout"])["timings"]
    after_load = t["encode_s"] + t["prefill_s"] + t["decode_s"]
    # Load as the user waits for it: the blocking part plus the time the first prefill waited for
    # the decoder, which loads in the background while the clip is encoded.
    return {"load_s": t["load_s"] + t.get("decoder_wait_s", 0.0),
            "decoder_load_s": t.get("decoder_load_s"), "encode_s": t["encode_s"], "prefill_s": t["prefill_s"],
            "decode_tok_s": t["decode_tokens_per_s"], "after_load_s": after_load,
            "command_s": run["wall_s"], "peak_rss_gib": run["peak_rss_gib"],
            "prompt_tokens": json.loads(run["stdout"])["prompt_tokens"]}


def crispasr(driver: Path, gguf: Path, clip_f32: Path, threads: int, new_tokens: int) -> dict[str, Any]:
    env = dict(os.environ, MOSS_MAX_NEW=str(new_tokens), CRISPASR_MOSS_AUDIO_BENCH="1")
    run = timed([str(driver), str(gguf), str(clip_f32), str(threads), PROMPT], env=env)
    line = [ln for ln in run["stdout"].splitlines() if ln.startswith("{")][-1]
    out = json.loads(line)
    stages = {m.group(1).strip(): float(m.group(2)) / 1e3 for m in
              re.finditer(r"moss_audio_bench: (\S+)\s+([\d.]+) ms", run["stderr"])}
    prompt = re.search(r"(\d+) prompt tokens", run["stderr"])
    audio_s = sum(stages.get(k, 0.0) for k in ("mel", "encoder", "adapter", "deepstack"))
    prefill_s = out["to_first_token_s"] - audio_s
    return {"load_s": out["load_s"], "encode_s": audio_s, "prefill_s": prefill_s,
            "decode_tok_s": out["decode_tok_s"], "tokens": out["tokens"],
            "after_load_s": out["total_s"], "command_s": run["wall_s"],
            "peak_rss_gib": run["peak_rss_gib"], "stages_s": stages,
            "prompt_tokens": int(prompt.group(1)) if prompt else None}


def medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and v is not None]
    out: dict[str, Any] = {"n": len(rows)}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = round(statistics.median(vals), 3)
        out[k + "_range"] = [round(min(vals), 3), round(max(vals), 3)]
    return out


def repeat(fn, repeats: int, log) -> dict[str, Any]:
    rows = []
    for i in range(repeats):
        row = fn()
        log(f"  run {i + 1}/{repeats}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()
                                                    if isinstance(v, float)))
        rows.append(row)
    return {"median": medians(rows), "runs": rows}


def live_paced(args: dict[str, Any]) -> dict[str, Any]:
    """Worker task: LiveTranscriber fed the clip in 0.1 s blocks paced in real time.

    Latency = wall time of the final event minus the wall time at which the endpoint's audio
    had arrived (the stream clock), so waiting behind earlier work counts too.
    """
    import numpy as np
    import soundfile as sf

    from edge_runtime.api import EdgeMoss
    from edge_runtime.live import LiveTranscriber

    model = EdgeMoss(args["bundle"], threads=args.get("threads"))
    audio = sf.read(args["clip"], dtype="float32")[0]
    results: dict[str, Any] = {"load_s": model.load_s}
    for mode in args.get("modes", ["speculative", "plain"]):
        finals: list[dict[str, Any]] = []
        t0 = [0.0]
        holder: list[Any] = []

        def on_event(event, finals=finals, t0=t0, holder=holder):
            if event.type == "final":
                finals.append({"wall_s": time.perf_counter() - t0[0], **event.to_dict(),
                               "n_tokens": len(holder[0].utterance.last_token_ids),
                               "decode_s": round(holder[0].utterance.last_decode_s, 4)})

        live = LiveTranscriber(model, on_event, timestamps=False, max_new_tokens=args["new_tokens"],
                               speculate=(mode == "speculative"))
        holder.append(live)
        live.warm_up()  # as `listen` does before it reads audio: the decoder's load is not timed
        block = 1600
        t0[0] = time.perf_counter()
        for i in range(0, audio.size, block):
            arrive = t0[0] + (i + block) / 16000
            delay = arrive - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            live.process(audio[i:i + block])
        live.close()
        for f in finals:
            f["end_to_final_s"] = round(f["wall_s"] - f["endpoint_s"], 3)
        results[mode] = {"finals": finals, "rtf": live.stats.real_time_factor}
    # Decode rate of the same model, to split latency into "decode" and "the rest".
    from edge_runtime.generation import GenerationOptions

    lm = model.lm
    logits = lm.start_from_prefix(model.prompt_builder().prefix_ids())
    if logits is None:
        logits = lm.append(np.array([model.stop_ids[0]]))
    t = time.perf_counter()
    res = lm.decode(logits, GenerationOptions(max_new_tokens=20, ignore_eos=True))
    results["decode_tok_s"] = len(res.token_ids) / (time.perf_counter() - t)
    return results


def log_to(path: Path):
    def log(msg: str) -> None:
        print(f"[edge-fit] {msg}", flush=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(msg + "\n")
    return log


def have(driver: str | None, gguf: str | None) -> str | None:
    """Why the CrispASR row cannot run, or None."""
    if not driver or not gguf:
        return "no CrispASR build given (--crispasr-driver BIN --crispasr-gguf FILE)"
    if not Path(driver).is_file() or not Path(gguf).is_file():
        return f"CrispASR build not found ({driver}, {gguf})"
    if shutil.which("sox") is None:
        return "sox is needed to write the raw f32 clip"
    return None
