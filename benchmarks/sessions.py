"""ONNX Runtime sessions for measurements, with thread count and spin-waiting chosen by the caller.

Mirrors edge_runtime.ort_session.session_options (sequential, full optimizations, inter-op 1) so a
measurement with the runtime's defaults measures what the runtime does; only the knobs under test
(intra-op threads, spinning, profiling) differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def bench_session(path: str | Path, threads: int = 1, spinning: bool = False,
                  profile_prefix: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    flag = "1" if spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", flag)
    so.add_session_config_entry("session.inter_op.allow_spinning", flag)
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def test_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """A deterministic 16 kHz clip: a few tones under noise with a slow loudness envelope.

    The weights are random, so the content does not change the work done; it only has to be audio.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n, dtype=np.float32) / 16000
    tones = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 440.0, 1250.0))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t)
    clip = 0.1 * envelope * tones + 0.02 * rng.standard_normal(n)
    return clip.astype(np.float32)


def audio_inputs(mel: np.ndarray, mode: str) -> tuple[np.ndarray, int]:
    """(chunk batch, last chunk's true frames) for the audio graph in `mode`."""
    from edge_runtime.encoder_chunks import chunk_mel

    if mode == "full":
        return np.ascontiguousarray(mel[None], dtype=np.float32), int(mel.shape[1])
    chunks, last = chunk_mel(mel)
    return np.ascontiguousarray(chunks, dtype=np.float32), int(last)


def run_audio(session: ort.InferenceSession, chunks: np.ndarray, last: int):
    return session.run(["audio_embeds", "deepstack_embeds"],
                       {"mel": chunks, "last_frames": np.array(last, dtype=np.int64)})
