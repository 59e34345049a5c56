"""Voice activity detection with Silero VAD on ONNX Runtime (no torch).

The model (edge_runtime/data/silero_vad.onnx, MIT, from the silero-vad wheel) is a small recurrent
net that scores 512-sample chunks of 16 kHz audio.  Each call sees the chunk preceded by the last
64 samples of the previous one (zeros at the start) and carries a (2, 1, 128) state, exactly as the
official Python wrapper feeds it, so the probabilities are the official ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 512  # 32 ms: the only chunk size the 16 kHz model accepts
CONTEXT_SAMPLES = 64
STATE_SHAPE = (2, 1, 128)
MODEL_PATH = Path(__file__).resolve().parent / "data" / "silero_vad.onnx"


class SileroVAD:
    """Streaming speech probabilities for 16 kHz mono float32 audio, one per 512-sample chunk."""

    def __init__(self, threads: int = 1, model_path: str | Path = MODEL_PATH) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the model's unused initializers are not worth a warning
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget all audio seen so far (state, context and buffered leftover samples)."""
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.chunks_seen = 0

    @property
    def pending_samples(self) -> int:
        """Samples buffered by probs() that do not yet fill a chunk."""
        return len(self._pending)

    def prob(self, chunk: np.ndarray) -> float:
        """Speech probability of the next 512-sample chunk (advances the stream state)."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if chunk.shape[0] != CHUNK_SAMPLES:
            raise ValueError(f"SileroVAD.prob needs {CHUNK_SAMPLES} samples, got {chunk.shape[0]}")
        window = np.concatenate([self._context, chunk])[None, :]
        output, self._state = self._session.run(
            None, {"input": window, "state": self._state, "sr": self._sr}
        )
        self._context = window[0, -CONTEXT_SAMPLES:].copy()
        self.chunks_seen += 1
        return float(output.reshape(-1)[0])

    def probs(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities of every whole chunk now available; a partial chunk waits for the next call."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        buffered = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        whole = len(buffered) // CHUNK_SAMPLES
        out = np.empty(whole, dtype=np.float32)
        for i in range(whole):
            out[i] = self.prob(buffered[i * CHUNK_SAMPLES:(i + 1) * CHUNK_SAMPLES])
        self._pending = buffered[whole * CHUNK_SAMPLES:].copy()
        return out

    def flush(self) -> np.ndarray:
        """At the end of a stream: score the buffered partial chunk zero-padded (0 or 1 values)."""
        if not len(self._pending):
            return np.zeros(0, dtype=np.float32)
        last = np.zeros(CHUNK_SAMPLES, dtype=np.float32)
        last[: len(self._pending)] = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        return np.array([self.prob(last)], dtype=np.float32)


def regions_from_probs(
    probs: np.ndarray,
    n_samples: int | None = None,
    threshold: float = 0.5,
    neg_threshold: float = 0.35,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.1,
    pad_s: float = 0.03,
    sample_rate: int = SAMPLE_RATE,
    chunk_samples: int = CHUNK_SAMPLES,
) -> list[tuple[int, int]]:
    """Speech regions, as (start, end) sample indices, from per-chunk speech probabilities.

    Hysteresis like silero's get_speech_timestamps: speech starts at a chunk scoring >= threshold,
    and ends where a run of chunks below neg_threshold has lasted min_silence_s (chunks in between
    the thresholds neither start nor end anything).  Regions with no more than min_speech_s of
    speech are dropped; the rest are padded by pad_s, splitting the gap when two are closer.
    """
    if n_samples is None:
        n_samples = len(probs) * chunk_samples
    min_speech = sample_rate * min_speech_s
    min_silence = sample_rate * min_silence_s
    pad = int(round(sample_rate * pad_s))

    regions: list[list[int]] = []
    in_speech = False
    start = 0
    silence_start: int | None = None
    for i, p in enumerate(np.asarray(probs, dtype=np.float64)):
        now = i * chunk_samples
        if p >= threshold:
            silence_start = None
            if not in_speech:
                in_speech, start = True, now
            continue
        if in_speech and p < neg_threshold:
            if silence_start is None:
                silence_start = now
            if now - silence_start >= min_silence:
                if silence_start - start > min_speech:
                    regions.append([start, silence_start])
                in_speech, silence_start = False, None
    if in_speech and n_samples - start > min_speech:
        regions.append([start, n_samples])

    for i, region in enumerate(regions):
        if i == 0:
            region[0] = max(0, region[0] - pad)
        if i + 1 < len(regions):
            following = regions[i + 1]
            gap = following[0] - region[1]
            if gap < 2 * pad:  # too close to pad both: share the gap
                region[1] += gap // 2
                following[0] = max(0, following[0] - gap // 2)
            else:
                region[1] = min(n_samples, region[1] + pad)
                following[0] = max(0, following[0] - pad)
        else:
            region[1] = min(n_samples, region[1] + pad)
    return [(int(a), int(b)) for a, b in regions]


def speech_probs(samples: np.ndarray, vad: SileroVAD | None = None) -> np.ndarray:
    """Per-chunk speech probabilities of a whole 16 kHz clip (last partial chunk zero-padded)."""
    vad = vad or SileroVAD()
    vad.reset()
    out = np.concatenate([vad.probs(samples), vad.flush()])
    vad.reset()
    return out


def speech_regions(
    samples: np.ndarray,
    threshold: float = 0.5,
    neg_threshold: float = 0.35,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.1,
    pad_s: float = 0.03,
    vad: SileroVAD | None = None,
) -> list[tuple[float, float]]:
    """Speech regions of a whole 16 kHz mono clip as (start_s, end_s) pairs, in seconds."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    regions = regions_from_probs(
        speech_probs(samples, vad), len(samples), threshold=threshold,
        neg_threshold=neg_threshold, min_speech_s=min_speech_s, min_silence_s=min_silence_s,
        pad_s=pad_s,
    )
    return [(start / SAMPLE_RATE, end / SAMPLE_RATE) for start, end in regions]
