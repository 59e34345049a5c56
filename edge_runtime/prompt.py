"""Prompt ids around the audio span, and the time-marker interleaving of the span itself.

The span between <|audio_bos|> and <|audio_eos|> holds one <|AUDIO|> placeholder per audio token
and, with time markers on, the digit tokens of the second count every 2 s: the digits of str(s)
follow the first (s / 2) * 25 audio tokens, for s = 2, 4, ... while that many tokens exist.
A marker depends only on the count of audio tokens so far, so the span can be built while the
audio arrives (AudioSpanInterleaver) and equals the offline span (audio_span_ids) for any split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.model_facts import (
    AUDIO_END_ID,
    AUDIO_START_ID,
    AUDIO_TOKEN_ID,
    DEFAULT_SYSTEM_PROMPT,
    DIGIT_TOKEN_IDS,
    IM_END_ID,
    IM_START_ID,
    MARKER_EVERY_SECONDS,
    MARKER_EVERY_TOKENS,
)


def time_marker_ids(second: int) -> list[int]:
    """Digit token ids of str(second)."""
    return [DIGIT_TOKEN_IDS[d] for d in str(second)]


def audio_span_ids(n_audio_tokens: int, time_markers: bool = True) -> list[int]:
    """Ids of the span between <|audio_bos|> and <|audio_eos|> for `n_audio_tokens` audio tokens."""
    if n_audio_tokens < 0:
        raise ValueError("n_audio_tokens must be >= 0")
    if not time_markers:
        return [AUDIO_TOKEN_ID] * n_audio_tokens
    ids: list[int] = []
    done = 0
    marker = 1
    while marker * MARKER_EVERY_TOKENS <= n_audio_tokens:
        ids.extend([AUDIO_TOKEN_ID] * (marker * MARKER_EVERY_TOKENS - done))
        done = marker * MARKER_EVERY_TOKENS
        ids.extend(time_marker_ids(marker * MARKER_EVERY_SECONDS))
        marker += 1
    ids.extend([AUDIO_TOKEN_ID] * (n_audio_tokens - done))
    return ids


@dataclass(frozen=True)
class SpanPiece:
    """A piece of the audio span: `ids` (int64) and `audio_slots`, the indexes into `ids` where the
    audio embeddings go, in order."""

    ids: np.ndarray
    audio_slots: np.ndarray


class AudioSpanInterleaver:
    """Builds the audio span incrementally as audio tokens arrive.

    push(n) returns the ids for the next n audio tokens, with each time marker placed right after
    the audio token that completes its 2 s (so the marker of second s comes with token (s/2)*25).
    """

    def __init__(self, time_markers: bool = True) -> None:
        self.time_markers = time_markers
        self.audio_tokens = 0  # audio tokens pushed so far
        self.tokens_emitted = 0  # ids (audio placeholders + marker digits) returned so far

    def push(self, n_new_audio_tokens: int) -> SpanPiece:
        """Ids for the next `n_new_audio_tokens` audio tokens (0 gives an empty piece)."""
        if n_new_audio_tokens < 0:
            raise ValueError("n_new_audio_tokens must be >= 0")
        ids: list[int] = []
        slots: list[int] = []
        start = self.audio_tokens
        end = start + n_new_audio_tokens
        position = start
        while position < end:
            if self.time_markers:
                next_marker = (position // MARKER_EVERY_TOKENS + 1) * MARKER_EVERY_TOKENS
                run_end = min(end, next_marker)
            else:
                next_marker, run_end = -1, end
            slots.extend(range(len(ids), len(ids) + run_end - position))
            ids.extend([AUDIO_TOKEN_ID] * (run_end - position))
            position = run_end
            if position == next_marker:
                ids.extend(time_marker_ids(position // MARKER_EVERY_TOKENS * MARKER_EVERY_SECONDS))
        self.audio_tokens = end
        self.tokens_emitted += len(ids)
        return SpanPiece(np.asarray(ids, dtype=np.int64), np.asarray(slots, dtype=np.int64))


@dataclass(frozen=True)
class Prompt:
    """Prompt ids (int64) and the positions in them that take the audio embeddings, in order."""

    ids: np.ndarray
    audio_positions: np.ndarray


class PromptBuilder:
    """The MOSS-Audio single-turn prompt:

    <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<|audio_bos|> span <|audio_eos|>
    \n{question}<|im_end|>\n<|im_start|>assistant\n

    The control tokens are placed here, by id; every text part between them (the system prompt
    and the question included) is tokenized as plain text, so a "<|im_end|>" typed by a user stays
    six ordinary pieces. For ordinary text this equals the upstream processor's ids (it encodes
    the template with special-token strings recognised, and nothing added).
    """

    def __init__(self, tokenizer, system: str = DEFAULT_SYSTEM_PROMPT,
                 time_markers: bool = True) -> None:
        if not isinstance(system, str):
            raise TypeError(f"system prompt must be a str, not {type(system).__name__}")
        self.tokenizer = tokenizer
        self.system = system
        self.time_markers = time_markers

    def _text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text) if text else []

    def prefix_ids(self) -> list[int]:
        """Ids up to and including <|audio_bos|>."""
        return ([IM_START_ID] + self._text(f"system\n{self.system}") + [IM_END_ID]
                + self._text("\n") + [IM_START_ID] + self._text("user\n") + [AUDIO_START_ID])

    def suffix_ids(self, question: str) -> list[int]:
        """Ids from <|audio_eos|> to the end of the prompt (the assistant turn's header)."""
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, not {type(question).__name__}")
        return ([AUDIO_END_ID] + self._text(f"\n{question}") + [IM_END_ID] + self._text("\n")
                + [IM_START_ID] + self._text("assistant\n"))

    def interleaver(self) -> AudioSpanInterleaver:
        """A fresh span interleaver with this builder's time-marker setting."""
        return AudioSpanInterleaver(time_markers=self.time_markers)

    def build(self, n_audio_tokens: int, question: str) -> Prompt:
        """The whole prompt for a clip of `n_audio_tokens` audio tokens."""
        prefix = np.asarray(self.prefix_ids(), dtype=np.int64)
        span = self.interleaver().push(n_audio_tokens)
        suffix = np.asarray(self.suffix_ids(question), dtype=np.int64)
        ids = np.concatenate([prefix, span.ids, suffix])
        return Prompt(ids=ids, audio_positions=span.audio_slots + prefix.size)
