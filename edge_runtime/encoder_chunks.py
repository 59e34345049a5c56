"""How a clip's log-mel is cut into encoder chunks (the authors' serving layout).

The mel is cut into chunks of CHUNK_FRAMES (400 frames = 4 s = 50 tokens), each encoded on its own
with positions restarting at 0. When there is more than one chunk, a short last chunk is padded
with mel value 0 up to CHUNK_FRAMES (the encoder masks the padded keys and keeps only the valid
tokens); a clip of at most CHUNK_FRAMES frames is one chunk at its own length, unpadded.

numpy only: the runtime and the torch reference both use this module, so the rule lives here once.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.errors import AudioError
from edge_runtime.model_facts import CHUNK_FRAMES, N_MELS, audio_token_count


def chunk_count(mel_frames: int) -> int:
    """Number of encoder chunks of a clip of `mel_frames` frames (0 for an empty clip)."""
    if mel_frames <= 0:
        return 0
    return -(-mel_frames // CHUNK_FRAMES)


def chunk_lengths(mel_frames: int) -> list[int]:
    """True frame length of each chunk: full chunks, then the remainder."""
    count = chunk_count(mel_frames)
    if count == 0:
        return []
    return [CHUNK_FRAMES] * (count - 1) + [mel_frames - CHUNK_FRAMES * (count - 1)]


def chunked_token_count(mel_frames: int) -> int:
    """Audio tokens the chunked encoder makes of `mel_frames` frames."""
    return sum(audio_token_count(n) for n in chunk_lengths(mel_frames))


def chunk_mel(mel: np.ndarray) -> tuple[np.ndarray, int]:
    """Cut a log-mel [128, T] into the encoder's chunk batch.

    Returns (chunks [C, 128, F], last_frames): F = T when C == 1, else CHUNK_FRAMES with the last
    chunk zero-padded; last_frames is the true length of the last chunk.
    """
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[0] != N_MELS:
        raise AudioError(f"expected a log-mel of shape [{N_MELS}, T], got {list(mel.shape)}")
    total = int(mel.shape[1])
    if total == 0:
        raise AudioError("the audio is empty (0 mel frames)")
    mel = mel.astype(np.float32, copy=False)
    lengths = chunk_lengths(total)
    if len(lengths) == 1:
        return mel[None].copy(), total
    chunks = np.zeros((len(lengths), N_MELS, CHUNK_FRAMES), dtype=np.float32)
    for i, length in enumerate(lengths):
        start = i * CHUNK_FRAMES
        chunks[i, :, :length] = mel[:, start:start + length]
    return chunks, lengths[-1]
