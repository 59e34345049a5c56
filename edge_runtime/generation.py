"""KV-cached generation: prompt pieces with audio appended to the cache, then a decode loop.

The decoder keeps one preallocated KV cache. A request rolls the cache back to the shared prompt
prefix (system prompt + user header, prefilled once per process), appends its audio span and
question, and decodes. Live input appends audio chunk by chunk through the same `append`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Generator, Sequence

import numpy as np

from .audio_encoder import AudioFeatures
from .decoder import Decoder
from .embeddings import EmbeddingTable
from .sampling import Sampler, SamplerConfig, token_logprob


@dataclass
class GenerationOptions:
    max_new_tokens: int = 256
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    ignore_eos: bool = False


@dataclass
class DecodeResult:
    token_ids: list[int]
    stopped_by: str  # "stop_token", "max_new_tokens", "context_full" or "stop_sequence"
    decode_s: float
    logprobs: list[float] = field(default_factory=list)  # log-softmax at each chosen token

    @property
    def avg_logprob(self) -> float | None:
        """Mean log-probability of the generated tokens (None when there are none)."""
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / self.decode_s if self.decode_s > 0 else 0.0


class CachedLM:
    """The backbone with its KV cache, seen as a growing token sequence."""

    def __init__(self, decoder: Decoder, embeddings: EmbeddingTable, num_deepstack: int,
                 stop_ids: Sequence[int]):
        self.decoder = decoder
        self.embeddings = embeddings
        self.num_deepstack = num_deepstack
        self.stop_ids = frozenset(int(i) for i in stop_ids)
        self._prefix: tuple[int, ...] | None = None

    @property
    def length(self) -> int:
        return self.decoder.length

    def append(self, ids: np.ndarray, audio_slots: np.ndarray | None = None,
               audio: AudioFeatures | None = None, logits_to_keep: int = 1) -> np.ndarray:
        """Append token ids (audio placeholders at `audio_slots` get `audio`'s embeddings).

        Returns the logits of the last `logits_to_keep` positions.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            raise ValueError("nothing to append")
        embeds = self.embeddings.lookup(ids)
        deepstack = None
        if audio is not None and audio.num_tokens:
            slots = np.asarray(audio_slots, dtype=np.int64)
            if slots.shape[0] != audio.num_tokens:
                raise ValueError(f"{slots.shape[0]} audio slots for {audio.num_tokens} audio embeddings")
            embeds[slots] = audio.embeds
            # DeepStack inputs are zero on text positions: only audio positions get the mergers' output.
            deepstack = np.zeros((self.num_deepstack, ids.size, embeds.shape[1]), dtype=np.float32)
            deepstack[:, slots] = audio.deepstack[: self.num_deepstack]
        return self.decoder.forward(embeds, deepstack, logits_to_keep=logits_to_keep)

    def start_from_prefix(self, prefix_ids: Sequence[int]) -> np.ndarray | None:
        """Roll the cache back to `prefix_ids`, prefilling them only when they are not cached yet."""
        key = tuple(int(i) for i in prefix_ids)
        if self._prefix == key and self.decoder.length >= len(key):
            self.decoder.rollback(len(key))
            return None
        self.decoder.reset()
        self._prefix = None
        logits = self.append(np.array(key, dtype=np.int64))
        self._prefix = key
        return logits

    def rollback(self, length: int) -> None:
        self.decoder.rollback(length)

    def iter_decode(self, logits: np.ndarray, options: GenerationOptions
                    ) -> Generator[int, bool | None, DecodeResult]:
        """Sample from `logits` (the last prompt position's), then one cached step per token.

        Yields each generated id as soon as it is chosen (send(True) after one stops the decode);
        returns the DecodeResult.
        """
        sampler = Sampler(options.sampler)
        tokens: list[int] = []
        logprobs: list[float] = []
        start = time.perf_counter()
        stopped_by = "max_new_tokens"
        last = np.asarray(logits).reshape(-1, logits.shape[-1])[-1]
        while len(tokens) < options.max_new_tokens:
            token = sampler.sample(last)
            if token in self.stop_ids and not options.ignore_eos:
                stopped_by = "stop_token"
                break
            tokens.append(token)
            logprobs.append(token_logprob(last, token))
            if (yield token):  # a caller's send(True): stop here (a stop string was seen)
                stopped_by = "stop_sequence"
                break
            if len(tokens) == options.max_new_tokens:
                break
            if self.decoder.length + 1 > self.decoder.max_context:
                stopped_by = "context_full"
                break
            last = self.append(np.array([token], dtype=np.int64))[-1]
        return DecodeResult(token_ids=tokens, stopped_by=stopped_by,
                            decode_s=time.perf_counter() - start, logprobs=logprobs)

    def decode(self, logits: np.ndarray, options: GenerationOptions,
               on_token: Callable[[int], None] | None = None) -> DecodeResult:
        """iter_decode run to the end, calling `on_token` for each id."""
        steps = self.iter_decode(logits, options)
        while True:
            try:
                token = next(steps)
            except StopIteration as done:
                return done.value
            if on_token is not None:
                on_token(token)
