"""Endpointing: turn a stream of per-chunk speech probabilities into utterances.

Pure, deterministic logic on a sample clock, independent of the model and of the VAD that made
the probabilities.  Feed it one probability per chunk of audio (with the chunk's length in samples)
and it answers with events:

- SpeechStart: speech began; the utterance's audio starts at `start_sample` (pre-roll included),
  so a caller can start consuming audio right away.
- Utterance: a finished utterance [start_sample, end_sample), closed by trailing silence, by the
  length limit (the remaining speech then continues as a new utterance, with its own SpeechStart),
  or by flush() at the end of the stream.
- SpeechDiscarded: the speech that began with the last SpeechStart was too short to keep.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Union

import numpy as np

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 512  # Silero VAD's chunk at 16 kHz


@dataclass(frozen=True)
class EndpointConfig:
    """Tuning of the endpointer; times in seconds."""

    threshold: float = 0.5  # a chunk at or above this is speech
    neg_threshold: float = 0.35  # inside speech, a chunk below this starts counting silence
    min_silence_s: float = 0.7  # trailing silence that ends an utterance
    min_speech_s: float = 0.25  # shorter speech is discarded (clicks, coughs)
    max_utterance_s: float = 30.0  # longer speech is cut at a quiet point near the limit
    cut_search_s: float = 2.0  # how far back from the limit to look for that quiet point
    pre_roll_s: float = 0.2  # audio kept before the first speech chunk, for word onsets
    post_roll_s: float = 0.1  # audio kept after the last speech chunk
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if not 0.0 <= self.neg_threshold <= self.threshold <= 1.0:
            raise ValueError("need 0 <= neg_threshold <= threshold <= 1")
        if self.min_silence_s <= 0 or self.max_utterance_s <= 0 or self.sample_rate <= 0:
            raise ValueError("min_silence_s, max_utterance_s and sample_rate must be positive")
        if min(self.min_speech_s, self.pre_roll_s, self.post_roll_s, self.cut_search_s) < 0:
            raise ValueError("min_speech_s, pre_roll_s, post_roll_s and cut_search_s must be >= 0")
        if self.cut_search_s >= self.max_utterance_s:
            raise ValueError("cut_search_s must be shorter than max_utterance_s")

    def samples(self, seconds: float) -> int:
        """A duration in samples at this config's rate."""
        return int(round(seconds * self.sample_rate))


@dataclass(frozen=True)
class SpeechStart:
    """Speech detected in the chunk starting at `sample`; its utterance begins at `start_sample`."""

    sample: int
    start_sample: int
    sample_rate: int = SAMPLE_RATE

    @property
    def t(self) -> float:
        """Time of the first speech chunk, in seconds from the start of the stream."""
        return self.sample / self.sample_rate


@dataclass(frozen=True)
class Utterance:
    """A finished utterance: samples [start_sample, end_sample) of the stream."""

    start_sample: int
    end_sample: int
    reason: str  # "silence", "max_length" or "end_of_stream"
    sample_rate: int = SAMPLE_RATE

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end_sample / self.sample_rate

    @property
    def duration_s(self) -> float:
        return (self.end_sample - self.start_sample) / self.sample_rate


@dataclass(frozen=True)
class SpeechDiscarded:
    """The speech announced by the last SpeechStart was shorter than min_speech_s and is dropped."""

    start_sample: int
    end_sample: int
    sample_rate: int = SAMPLE_RATE


Event = Union[SpeechStart, Utterance, SpeechDiscarded]


@dataclass(frozen=True)
class _Chunk:
    start: int
    length: int
    prob: float
    energy: float | None

    @property
    def end(self) -> int:
        return self.start + self.length


class Endpointer:
    """Stateful endpointer: push() one chunk's speech probability at a time, flush() at the end."""

    def __init__(self, config: EndpointConfig | None = None) -> None:
        self.config = config or EndpointConfig()
        c = self.config
        self._min_silence = c.samples(c.min_silence_s)
        self._min_speech = c.samples(c.min_speech_s)
        self._max_utterance = c.samples(c.max_utterance_s)
        self._cut_search = c.samples(c.cut_search_s)
        self._pre_roll = c.samples(c.pre_roll_s)
        self._post_roll = c.samples(c.post_roll_s)
        self.reset()

    def reset(self) -> None:
        """Back to the start of a new stream (sample clock at 0)."""
        self._now = 0
        self._in_speech = False
        self._onset = 0  # first speech sample of the open utterance
        self._utterance_start = 0  # onset minus pre-roll (never before the previous utterance)
        self._silence_start: int | None = None
        self._previous_end = 0
        self._recent: deque[_Chunk] = deque()

    @property
    def samples_seen(self) -> int:
        """Length of the stream pushed so far, in samples."""
        return self._now

    @property
    def in_speech(self) -> bool:
        """Whether an utterance is open."""
        return self._in_speech

    @property
    def utterance_start(self) -> int | None:
        """First sample of the open utterance (pre-roll included), or None when idle."""
        return self._utterance_start if self._in_speech else None

    @property
    def committed_end(self) -> int | None:
        """The open utterance will not end before this sample (None when idle).

        Audio before it is certain to belong to the utterance, so a live session may encode and
        prefill it while the person is still speaking. A later end comes from trailing silence
        (post-roll after its first silent chunk), a length cut (never earlier than cut_search_s
        before the limit) or the end of the stream (never before the samples already seen).
        """
        if not self._in_speech:
            return None
        bound = min(self._now, self._utterance_start + self._max_utterance - self._cut_search)
        if self._silence_start is not None:
            bound = min(bound, self._silence_start + self._post_roll)
        return max(self._utterance_start, bound)

    @property
    def tentative_end(self) -> int | None:
        """Where the open utterance ends if the silence now being counted lasts (None otherwise).

        While the endpointer waits out its trailing silence, a live session can already encode
        and prefill the utterance up to here, and drop that work if speech resumes.
        """
        if not self._in_speech or self._silence_start is None:
            return None
        return min(self._silence_start + self._post_roll, self._utterance_start + self._max_utterance)

    def push(self, prob: float, n_samples: int = CHUNK_SAMPLES, energy: float | None = None) -> list[Event]:
        """Advance the clock by one chunk of `n_samples` with speech probability `prob`.

        `energy` (any loudness measure, e.g. the chunk's RMS) only helps choose where a too-long
        utterance is cut.
        """
        if n_samples <= 0:
            raise ValueError("n_samples must be positive")
        c = self.config
        chunk = _Chunk(self._now, int(n_samples), float(prob), energy)
        self._now = chunk.end
        self._remember(chunk)

        events: list[Event] = []
        if chunk.prob >= c.threshold:
            self._silence_start = None
            if not self._in_speech:
                events.append(self._open(chunk.start))
        elif self._in_speech and chunk.prob < c.neg_threshold:
            if self._silence_start is None:
                self._silence_start = chunk.start
            if self._now - self._silence_start >= self._min_silence:
                events.append(self._close(self._silence_start, "silence"))
        if self._in_speech and self._now - self._utterance_start >= self._max_utterance:
            events.extend(self._cut_at_limit())
        return events

    def push_many(
        self,
        probs: Iterable[float],
        n_samples: int = CHUNK_SAMPLES,
        energies: Iterable[float] | None = None,
    ) -> list[Event]:
        """push() each probability in turn (all chunks `n_samples` long); returns all events."""
        probs = list(probs)
        energy_list = list(energies) if energies is not None else [None] * len(probs)
        if len(energy_list) != len(probs):
            raise ValueError("energies must match probs in length")
        events: list[Event] = []
        for prob, energy in zip(probs, energy_list):
            events.extend(self.push(prob, n_samples, energy))
        return events

    def flush(self) -> list[Event]:
        """End of the stream: close the open utterance, if any."""
        if not self._in_speech:
            return []
        speech_end = self._silence_start if self._silence_start is not None else self._now
        return [self._close(speech_end, "end_of_stream")]

    # -- internals ---------------------------------------------------------------------------

    def _remember(self, chunk: _Chunk) -> None:
        # only the last cut_search_s (plus a chunk) can matter for choosing a cut point
        self._recent.append(chunk)
        horizon = self._now - self._cut_search - 2 * chunk.length
        while self._recent and self._recent[0].end < horizon:
            self._recent.popleft()

    def _open(self, onset: int) -> SpeechStart:
        self._in_speech = True
        self._onset = onset
        self._utterance_start = max(0, onset - self._pre_roll, self._previous_end)
        return SpeechStart(onset, self._utterance_start, self.config.sample_rate)

    def _close(self, speech_end: int, reason: str) -> Event:
        start = self._utterance_start
        end = min(speech_end + self._post_roll, self._now, start + self._max_utterance)
        self._in_speech = False
        self._silence_start = None
        if speech_end - self._onset < self._min_speech:
            return SpeechDiscarded(start, end, self.config.sample_rate)
        self._previous_end = end
        return Utterance(start, end, reason, self.config.sample_rate)

    def _cut_at_limit(self) -> list[Event]:
        if self._silence_start is not None:
            # already in (not yet long enough) trailing silence: that is the natural end
            return [self._close(self._silence_start, "max_length")]
        cut = self._quietest_point()
        first = Utterance(self._utterance_start, cut, "max_length", self.config.sample_rate)
        self._previous_end = cut
        # the speech goes on: a new utterance starts right at the cut, no pre-roll overlap
        self._onset = self._utterance_start = cut
        return [first, SpeechStart(cut, cut, self.config.sample_rate)]

    def _quietest_point(self) -> int:
        """Middle of the quietest chunk in the last cut_search_s before the length limit."""
        limit = self._utterance_start + self._max_utterance
        lowest = max(self._utterance_start + 1, limit - self._cut_search)
        candidates = [ch for ch in self._recent if ch.start >= lowest and ch.end <= limit]
        if not candidates:
            return min(limit, self._now)
        min_prob = min(ch.prob for ch in candidates)
        if all(ch.energy is not None for ch in candidates):
            # probabilities near the minimum are all "equally quiet" to the VAD: let energy decide
            near = [ch for ch in candidates if ch.prob <= min_prob + 0.05]
            best = min(near, key=lambda ch: (ch.energy, -ch.start))
        else:
            best = min(candidates, key=lambda ch: (ch.prob, -ch.start))
        return best.start + best.length // 2


def refine_end(audio: np.ndarray, start: int, end: int, max_trim: int, post_roll: int,
               floor_db: float = -35.0, frame: int = 160) -> int:
    """Move an utterance end back to where its sound fades (plus `post_roll`), by at most `max_trim`.

    The VAD decides on a grid of 32 ms chunks, so where it places an end depends on how the grid
    falls on the waveform; this puts the end just after the last 10 ms frame within `floor_db` of
    the utterance's loudest frame instead. `audio` holds samples [start, end).
    """
    audio = np.asarray(audio, dtype=np.float32)
    frames = audio.size // frame
    if frames == 0 or max_trim <= 0:
        return end
    rms = np.sqrt(np.mean(np.square(audio[: frames * frame].reshape(frames, frame)), axis=1))
    threshold = max(float(rms.max()) * 10 ** (floor_db / 20), 1e-5)
    first = max(0, (end - max_trim - start) // frame)
    loud = np.flatnonzero(rms[first:] >= threshold)
    if loud.size == 0:
        return max(start, end - max_trim)
    sound_end = start + (first + int(loud[-1]) + 1) * frame
    return int(min(end, max(end - max_trim, sound_end + post_roll)))
