"""Fixed facts of the MOSS-Audio models that every stage shares.

Values a checkpoint may override (special ids, time-marker switch) are read from its
processor_config.json / the bundle manifest; these are the release defaults.
"""

from __future__ import annotations

# Audio front end (Whisper log-mel, 128 bins).
SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 128

# Encoder chunking used by the authors' serving code: 400 mel frames = 4 s = 50 audio tokens.
CHUNK_FRAMES = 400
CHUNK_TOKENS = 50

# Time markers: digit tokens of the second count every 2 s (= 25 audio tokens).
AUDIO_TOKENS_PER_SECOND = 12.5
MARKER_EVERY_SECONDS = 2
MARKER_EVERY_TOKENS = int(AUDIO_TOKENS_PER_SECOND * MARKER_EVERY_SECONDS)  # 25

# Special token ids of the release tokenizer.
AUDIO_TOKEN_ID = 151654  # <|AUDIO|> placeholder
AUDIO_START_ID = 151669  # <|audio_bos|>
AUDIO_END_ID = 151670  # <|audio_eos|>
IM_START_ID = 151644
IM_END_ID = 151645
ENDOFTEXT_ID = 151643
THINK_START_ID = 151667
THINK_END_ID = 151668
DIGIT_TOKEN_IDS = {str(d): 15 + d for d in range(10)}  # "0".."9" -> 15..24
STOP_TOKEN_IDS = (IM_END_ID, ENDOFTEXT_ID)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


def release_processor_config() -> dict:
    """processor_config.json of the release (and the defaults when a checkpoint lacks one)."""
    return {
        "mel_sr": SAMPLE_RATE,
        "mel_dim": N_MELS,
        "n_fft": N_FFT,
        "hop": HOP_LENGTH,
        "enable_time_marker": True,
        "audio_token_id": AUDIO_TOKEN_ID,
        "audio_start_id": AUDIO_START_ID,
        "audio_end_id": AUDIO_END_ID,
    }


def conv_out_len(length: int) -> int:
    """Length after one 3x3 stride-2 pad-1 convolution."""
    return (length - 1) // 2 + 1


def audio_token_count(mel_frames: int) -> int:
    """Audio tokens the encoder makes of `mel_frames` frames (three stride-2 convolutions)."""
    if mel_frames <= 0:
        return 0
    n = mel_frames
    for _ in range(3):
        n = conv_out_len(n)
    return n


def mel_frame_count(num_samples: int) -> int:
    """Mel frames of a clip: the centred STFT's last frame is dropped, so T = samples // hop."""
    return max(0, num_samples // HOP_LENGTH)
