"""The audio graph on ONNX Runtime: log-mel in, adapter embeddings and DeepStack inputs out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .encoder_chunks import chunk_mel, chunked_token_count
from .errors import AudioError
from .model_facts import CHUNK_FRAMES, N_MELS, audio_token_count
from .ort_session import make_session

ENCODER_MODES = ("chunked", "full")


@dataclass(frozen=True)
class AudioFeatures:
    """What the decoder needs of one clip: [N, hidden] embeddings and [k, N, hidden] DeepStack inputs."""

    embeds: np.ndarray
    deepstack: np.ndarray

    @property
    def num_tokens(self) -> int:
        return int(self.embeds.shape[0])


def token_count(mel_frames: int, mode: str) -> int:
    """Audio tokens of a clip of `mel_frames` frames in the given encoder mode."""
    return chunked_token_count(mel_frames) if mode == "chunked" else audio_token_count(mel_frames)


class AudioEncoder:
    """Runs the bundle's audio graph (encoder + adapter + DeepStack mergers)."""

    def __init__(self, model_path, mode: str = "chunked", device: str = "cpu",
                 threads: int | None = None):
        if mode not in ENCODER_MODES:
            raise ValueError(f"encoder mode must be one of {ENCODER_MODES}, not {mode!r}")
        self.mode = mode
        # No CPU arena: a 30 s clip's activations (~0.5 GB at 4B) are freed after each run
        # instead of staying reserved beside the decoder (measured: benchmarks/NOTES.md).
        # "all": the front-end convolutions run in ORT's NCHWc layout at that level.
        self.session = make_session(model_path, device=device, threads=threads, cpu_arena=False,
                                    optimization="all")

    def encode(self, mel: np.ndarray) -> AudioFeatures:
        """Encode a whole clip's log-mel [128, T] the way the bundle's encoder mode says."""
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim != 2 or mel.shape[0] != N_MELS or mel.shape[1] == 0:
            raise AudioError(f"expected a non-empty log-mel of shape [{N_MELS}, T], got {list(mel.shape)}")
        if self.mode == "full":
            return self.encode_chunks(mel[None], mel.shape[1])
        chunks, last = chunk_mel(mel)
        return self.encode_chunks(chunks, last)

    def encode_chunks(self, chunks: np.ndarray, last_frames: int) -> AudioFeatures:
        """Encode a chunk batch [C, 128, F]; the last chunk's true length is `last_frames`.

        The live path calls this with one complete 400-frame chunk at a time: chunks are
        independent, so that equals encoding them in one batch.
        """
        chunks = np.ascontiguousarray(chunks, dtype=np.float32)
        if chunks.ndim != 3 or chunks.shape[1] != N_MELS:
            raise AudioError(f"expected mel chunks [C, {N_MELS}, F], got {list(chunks.shape)}")
        if not 1 <= last_frames <= chunks.shape[2]:
            raise AudioError(f"last chunk length {last_frames} outside 1..{chunks.shape[2]}")
        if self.mode == "chunked" and chunks.shape[0] > 1 and chunks.shape[2] != CHUNK_FRAMES:
            raise AudioError(f"a chunk batch must be {CHUNK_FRAMES} frames wide")
        embeds, deepstack = self.session.run(
            ["audio_embeds", "deepstack_embeds"],
            {"mel": chunks, "last_frames": np.array(last_frames, dtype=np.int64)},
        )
        return AudioFeatures(embeds=embeds, deepstack=deepstack)
