"""Whisper-style 128-bin log-mel features in plain numpy, offline and streaming.

The numbers follow transformers' `WhisperFeatureExtractor(feature_size=128)._np_extract_fbank_features`
on an unpadded clip: centred STFT (reflect padding of n_fft // 2), periodic Hann window, power
spectrum, Slaney mel filters over 0-8000 Hz, log10 with a 1e-10 floor, the last frame dropped,
values floored at (max - 8), then (x + 4) / 4. T = samples // 160 frames.

The work is split in two steps so that streaming can reuse it: `raw_log_mel` gives the log10 mel
energies (float32, as the reference rounds them), `normalize` applies the floor and scaling.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edge_runtime.errors import AudioError
from edge_runtime.model_facts import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE

PAD = N_FFT // 2  # centred frames: 200 samples either side of the frame's time
LOG_FLOOR = 1e-10
_FRAMES_PER_BATCH = 256
DYNAMIC_RANGE = 8.0  # log10 units below the maximum that survive (80 dB)


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = 3.0 * hz / 200.0
    log_part = hz >= 1000.0
    mel[log_part] = 15.0 + np.log(hz[log_part] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = 200.0 * mel / 3.0
    log_part = mel >= 15.0
    hz[log_part] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_part] - 15.0))
    return hz


@lru_cache(maxsize=None)
def mel_filters() -> np.ndarray:
    """Slaney-normalised triangular mel filter bank, shape [N_MELS, N_FFT // 2 + 1], float64.

    Computed once; the returned array is read-only.
    """
    n_bins = N_FFT // 2 + 1
    fft_hz = np.linspace(0.0, SAMPLE_RATE // 2, n_bins)
    edges_mel = np.linspace(_hz_to_slaney_mel(np.array([0.0]))[0],
                            _hz_to_slaney_mel(np.array([8000.0]))[0], N_MELS + 2)
    edges_hz = _slaney_mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    # Distance of each FFT bin to each edge: rising and falling slopes of every triangle.
    offsets = edges_hz[None, :] - fft_hz[:, None]
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    bank = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney normalisation: each filter has (roughly) constant energy.
    bank *= 2.0 / (edges_hz[2:] - edges_hz[:-2])
    out = np.ascontiguousarray(bank.T)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=None)
def _mel_filter_blocks() -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """The filter bank cut into 16 groups of 8 adjacent filters, each with the FFT-bin range it
    touches: (first filter, end filter, first bin, end bin, weights [bins, filters]).

    The bank is banded (a filter spans at most 9 bins), so 16 small products do 1/14 of the
    dense product's work and stay single-threaded, which matters on small, busy CPUs.
    """
    bank = mel_filters()
    nonzero = bank != 0.0
    first_bin = nonzero.argmax(axis=1)
    end_bin = bank.shape[1] - nonzero[:, ::-1].argmax(axis=1)
    blocks = []
    for start in range(0, N_MELS, 8):
        stop = min(start + 8, N_MELS)
        lo = int(first_bin[start:stop].min())
        hi = int(end_bin[start:stop].max())
        weights = np.ascontiguousarray(bank[start:stop, lo:hi].T)
        weights.flags.writeable = False
        blocks.append((start, stop, lo, hi, weights))
    return tuple(blocks)


@lru_cache(maxsize=None)
def hann_window() -> np.ndarray:
    """Periodic Hann window of N_FFT samples, float64, read-only."""
    window = np.hanning(N_FFT + 1)[:-1]
    window.flags.writeable = False
    return window


def _check_samples(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected 1-D mono samples, got shape {samples.shape}")
    if samples.size < HOP_LENGTH:
        raise AudioError(
            f"audio too short for one mel frame: {samples.size} samples "
            f"({1000.0 * samples.size / SAMPLE_RATE:.1f} ms), need at least {HOP_LENGTH} (10 ms)"
        )
    return samples


def _as_float64(samples: np.ndarray) -> np.ndarray:
    """Round to float32 first, as the reference does, then widen for the FFT."""
    return np.asarray(samples, dtype=np.float32).astype(np.float64)


def _frames_log10(padded: np.ndarray, first: int, count: int) -> np.ndarray:
    """log10 mel energies [N_MELS, count] (float32) of the frames starting at
    padded[first + i * HOP_LENGTH], each N_FFT samples long."""
    if count <= 0:
        return np.zeros((N_MELS, 0), dtype=np.float32)
    # float64 keeps the error far below the reference's own float32 rounding, even near
    # the (max - 8) floor where float32 FFT noise would show.
    padded = np.asarray(padded, dtype=np.float64)
    stop = first + (count - 1) * HOP_LENGTH + N_FFT
    frames = np.lib.stride_tricks.sliding_window_view(padded[first:stop], N_FFT)[::HOP_LENGTH]
    window = hann_window()
    mel = np.empty((count, N_MELS), dtype=np.float64)
    windowed = np.empty((min(count, _FRAMES_PER_BATCH), N_FFT), dtype=np.float64)
    # Batches of frames keep the FFT's working set in cache: ~2.5x faster than one big batch.
    for start in range(0, count, _FRAMES_PER_BATCH):
        stop = min(count, start + _FRAMES_PER_BATCH)
        batch = windowed[: stop - start]
        np.multiply(frames[start:stop], window, out=batch)
        spectrum = np.fft.rfft(batch, axis=-1)
        power = np.square(spectrum.real)
        power += np.square(spectrum.imag)
        out = mel[start:stop]
        for m_start, m_stop, lo, hi, weights in _mel_filter_blocks():
            np.matmul(power[:, lo:hi], weights, out=out[:, m_start:m_stop])
    np.maximum(mel, LOG_FLOOR, out=mel)
    np.log10(mel, out=mel)
    return np.ascontiguousarray(mel.astype(np.float32).T)


def raw_log_mel(samples: np.ndarray) -> np.ndarray:
    """log10 mel energies [N_MELS, samples // 160] of a whole clip, before the floor and scaling."""
    samples = _check_samples(samples)
    padded = np.pad(_as_float64(samples), PAD, mode="reflect")
    return _frames_log10(padded, 0, samples.size // HOP_LENGTH)


def normalize(raw: np.ndarray, max_value: float | np.floating) -> np.ndarray:
    """Floor raw log10 values at (max_value - 8) and scale with (x + 4) / 4, in float32."""
    raw = np.asarray(raw, dtype=np.float32)
    floor = np.float32(max_value) - np.float32(DYNAMIC_RANGE)
    return (np.maximum(raw, floor) + np.float32(4.0)) / np.float32(4.0)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Whisper 128-bin log-mel features [128, samples // 160] (float32) of 16 kHz mono samples.

    Matches transformers' WhisperFeatureExtractor on the unpadded clip; the (max - 8) floor uses
    the maximum over this clip. Raises AudioError for fewer than 160 samples.
    """
    raw = raw_log_mel(samples)
    return normalize(raw, raw.max())


class StreamingLogMel:
    """Log-mel of a stream of 16 kHz mono blocks, frame for frame the same as `log_mel` of the
    whole stream apart from the floor.

    Frame t is centred on sample 160 * t and reads samples 160 * t - 200 .. 160 * t + 199 (reflected
    at the start), so it is emitted only once 200 samples past its centre have arrived; the
    frames near the end are emitted by `finish()`, which reflects the end like the offline form.

    floor="running" (default): frame t is floored at (m_t - 8), m_t being the maximum raw log10
    value of frames 0..t, whatever the block sizes. The offline form
    uses the clip-wide maximum instead. Since m never exceeds it, the two differ only on values
    more than 80 dB below the loudest value of the clip, which the offline form lifts to its floor
    and the stream floors lower (in practice: digital silence before the first sound).
    floor="none": return raw log10 values (float32); `normalize(all_raw, all_raw.max())` then equals
    `log_mel(whole clip)` (bit for bit in practice: every frame is computed the same way).
    """

    def __init__(self, floor: str = "running") -> None:
        if floor not in ("running", "none"):
            raise ValueError(f"floor must be 'running' or 'none', not {floor!r}")
        self.floor = floor
        self.running_max: float | None = None
        self._buf = np.zeros(0, dtype=np.float64)
        self._base = 0  # stream index of self._buf[0]
        self._next_frame = 0
        self._finished = False

    @property
    def samples_seen(self) -> int:
        """Samples pushed so far."""
        return self._base + self._buf.size

    @property
    def frames_emitted(self) -> int:
        """Frames returned so far."""
        return self._next_frame

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add samples; return the newly finished frames [128, k] (k may be 0)."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        block = _as_float64(np.asarray(block).reshape(-1))
        if block.size:
            self._buf = np.concatenate([self._buf, block])
        n = self.samples_seen
        # Frame t needs samples up to 160 t + 199; frame 0's reflected start also needs sample 200.
        ready = 0 if n <= PAD else (n - PAD) // HOP_LENGTH + 1
        raw = self._emit(ready, self._view_with_left_pad())
        self._trim()
        return self._finish_frames(raw)

    def finish(self) -> np.ndarray:
        """Return the remaining frames [128, k], reflecting the end of the stream."""
        if self._finished:
            return np.zeros((N_MELS, 0), dtype=np.float32)
        self._finished = True
        total = self.samples_seen // HOP_LENGTH
        if self._base == 0:
            if self._buf.size < HOP_LENGTH:
                return np.zeros((N_MELS, 0), dtype=np.float32)
            # Nothing dropped yet: pad exactly like the offline form (covers very short clips).
            view = (np.pad(self._buf, PAD, mode="reflect"), -PAD)
        else:
            # _trim keeps at least PAD + 1 samples, enough for the mirror image of the end.
            tail = self._buf[-2:-PAD - 2:-1]
            view = (np.concatenate([self._buf, tail]), self._base)
        raw = self._emit(total, view)
        self._buf = np.zeros(0, dtype=np.float64)
        return self._finish_frames(raw)

    def _view_with_left_pad(self) -> tuple[np.ndarray, int]:
        """(samples, stream index of samples[0]); reflects the start while it is still needed."""
        if self._base == 0 and self._next_frame * HOP_LENGTH < PAD and self._buf.size > PAD:
            return np.concatenate([self._buf[PAD:0:-1], self._buf]), -PAD
        return self._buf, self._base

    def _emit(self, ready: int, view: tuple[np.ndarray, int]) -> np.ndarray:
        count = ready - self._next_frame
        if count <= 0:
            return np.zeros((N_MELS, 0), dtype=np.float32)
        samples, start = view
        first = self._next_frame * HOP_LENGTH - PAD - start
        raw = _frames_log10(samples, first, count)
        self._next_frame = ready
        return raw

    def _trim(self) -> None:
        """Drop samples no future frame reads; keep PAD + 1 for reflecting the end."""
        keep_from = min(self._next_frame * HOP_LENGTH - PAD, self.samples_seen - (PAD + 1))
        drop = keep_from - self._base
        if drop > 0 and self._next_frame * HOP_LENGTH >= PAD:
            self._buf = self._buf[drop:].copy()
            self._base += drop

    def _finish_frames(self, raw: np.ndarray) -> np.ndarray:
        if self.floor == "none" or raw.shape[1] == 0:
            return raw
        # Frame t is floored with the maximum over frames 0..t (not over the pushed batch), so the
        # output never depends on how the stream was cut into blocks: a live session and the same
        # audio pushed in one go give identical frames.
        frame_max = raw.max(axis=0).astype(np.float64)
        if self.running_max is not None:
            frame_max[0] = max(frame_max[0], self.running_max)
        running = np.maximum.accumulate(frame_max)
        self.running_max = float(running[-1])
        # Same float32 arithmetic as normalize(), so a frame whose floor equals the clip maximum
        # is bit-identical to the offline form.
        floor = (running.astype(np.float32) - np.float32(DYNAMIC_RANGE))[None, :]
        raw = np.asarray(raw, dtype=np.float32)
        return (np.maximum(raw, floor) + np.float32(4.0)) / np.float32(4.0)
