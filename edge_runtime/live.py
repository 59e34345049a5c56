"""Live transcription: audio blocks -> VAD -> endpointer -> incremental prefill -> final text.

The encoder works on independent 4 s chunks (chunked mode), so each complete chunk of an open
utterance is encoded and prefilled into the KV cache while the person is still speaking, with
its time markers interleaved. At the endpoint only the last partial chunk, the closing tokens
and the decode remain; then the cache rolls back to the shared prompt prefix.

Speculation: while the endpointer waits out the trailing silence (0.7 s by default), the end the
utterance will have if the silence lasts is already known. The tail is then encoded and prefilled
on copies of the streaming state, past the cache's committed length; at the endpoint only the
decode remains. If speech resumes, the cache rolls back to its committed length (O(1)) and the
work is dropped. The speculated work is the same computation the endpoint would do, on the same
samples, so the final text is unchanged (tests/test_live.py checks it against offline).

Mel frames use the streaming front end (running-maximum floor), so a live session equals
`EdgeMoss.transcribe(..., windows=<its utterances>, front_end="streaming")` on the same audio.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import model_facts as facts
from .audio_encoder import AudioFeatures
from .endpointing import (EndpointConfig, Endpointer, SpeechDiscarded, SpeechStart, Utterance,
                          refine_end)
from .features import StreamingLogMel
from .options import LiveOptions
from .segments import Segment
from .timestamps import PLAIN_INSTRUCTION, TIMESTAMP_INSTRUCTION, parse_timestamped
from .vad import SileroVAD

CHUNK_SAMPLES = 512  # Silero VAD's chunk at 16 kHz
# Audio this close to the endpointer's committed point is not prefilled yet, so that the final
# end can still be pulled back to where the sound fades (refine_end) without undoing a prefill.
END_REFINE_SAMPLES = int(0.3 * facts.SAMPLE_RATE)


@dataclass
class LiveEvent:
    """A partial (provisional) or final piece of transcript; times on the stream clock."""

    type: str  # "partial" or "final"
    start: float
    end: float
    text: str
    utterance: int
    latency_s: float | None = None  # endpoint -> final text (compute only), for finals
    span: tuple[float, float] | None = None  # the utterance's audio on the stream clock
    endpoint_s: float | None = None  # stream time at which the endpoint was decided, for finals
    speculated: bool = False  # the tail was encoded and prefilled before the endpoint

    def to_dict(self) -> dict:
        out = {"type": self.type, "start": round(self.start, 3), "end": round(self.end, 3),
               "text": self.text, "utterance": self.utterance}
        if self.span is not None:
            out["utterance_start"], out["utterance_end"] = (round(t, 3) for t in self.span)
        if self.latency_s is not None:
            out["latency_s"] = round(self.latency_s, 4)
        if self.endpoint_s is not None:
            out["endpoint_s"] = round(self.endpoint_s, 3)
            out["speculated"] = self.speculated
        return out


class UtteranceDecoder:
    """One utterance at a time: complete 4 s chunks are encoded and prefilled as they arrive."""

    def __init__(self, model, timestamps: bool = True, instruction: str | None = None,
                 system: str | None = None, max_new_tokens: int = 448):
        if model.bundle.encoder_mode != "chunked":
            raise ValueError("live input needs a bundle exported with --encoder-mode chunked")
        self.model = model
        self.timestamps = timestamps
        self.instruction = instruction or (TIMESTAMP_INSTRUCTION if timestamps else PLAIN_INSTRUCTION)
        self.builder = model.prompt_builder(system)
        self.max_new_tokens = max_new_tokens
        self.active = False
        self.last_token_ids: list[int] = []
        self.last_decode_s = 0.0  # wall time of the last decode loop (to split latencies)
        self._spec: _Speculation | None = None

    def prepare(self) -> None:
        """Make the model ready before audio arrives: wait for the decoder's background load and
        prefill the shared prompt prefix, so that the first utterance does not pay for them."""
        self.model.lm.start_from_prefix(self.builder.prefix_ids())

    def begin(self) -> None:
        self._spec = None
        self.prepare()
        self.mel = StreamingLogMel(floor="running")
        self.frames = np.zeros((facts.N_MELS, 0), dtype=np.float32)
        self.chunks_done = 0
        self.samples = 0
        self.interleaver = self.builder.interleaver()
        self.active = True

    def feed(self, samples: np.ndarray) -> None:
        """Add the utterance's next samples; prefill every chunk that is now complete."""
        if samples.size == 0:
            return
        self.drop_speculation()
        self.samples += samples.size
        self.frames = _joined(self.frames, self.mel.push(samples))
        self.frames, self.chunks_done = self._prefill_chunks(self.frames, self.interleaver,
                                                             self.chunks_done)

    def _prefill_chunks(self, frames: np.ndarray, interleaver, chunks_done: int):
        """Encode and append every complete 4 s chunk at the front of `frames`; return the rest."""
        while frames.shape[1] >= facts.CHUNK_FRAMES:
            chunk = frames[:, :facts.CHUNK_FRAMES]
            frames = frames[:, facts.CHUNK_FRAMES:]
            audio = self.model.encoder.encode_chunks(chunk[None], facts.CHUNK_FRAMES)
            piece = interleaver.push(audio.num_tokens)
            self.model.lm.append(piece.ids, piece.audio_slots, audio)
            chunks_done += 1
        return frames, chunks_done

    # -- speculation: the tail prefilled before the endpoint ---------------------------------

    def speculate(self, samples: np.ndarray, key: tuple) -> None:
        """Prefill the utterance as if it ended after `samples` (the audio from the last fed
        sample to the expected end), leaving the committed state untouched; `key` names the
        end that was assumed. The result waits past the committed cache length."""
        self.drop_speculation()
        committed = self.model.lm.length
        mel, interleaver = copy.deepcopy(self.mel), copy.deepcopy(self.interleaver)
        frames = _joined(self.frames, mel.push(samples)) if samples.size else self.frames
        frames, chunks_done = self._prefill_chunks(frames, interleaver, self.chunks_done)
        frames = _joined(frames, mel.finish())
        logits = self._close(frames, interleaver, chunks_done)
        self._spec = _Speculation(key, committed, logits, int(samples.size))

    def speculated(self, key: tuple) -> bool:
        """Whether the waiting speculation assumed this end (else it is dropped)."""
        if self._spec is not None and self._spec.key != key:
            self.drop_speculation()
        return self._spec is not None

    @property
    def holding_speculation(self) -> bool:
        """Whether a speculated tail waits past the committed cache length."""
        return self._spec is not None

    def drop_speculation(self) -> None:
        """Speech went on (or the end differs): forget the speculative positions."""
        if self._spec is not None:
            self.model.lm.rollback(self._spec.committed)
            self._spec = None

    def _tail(self, frames: np.ndarray, chunks_done: int) -> AudioFeatures | None:
        """Encode the last partial chunk exactly as the whole-clip chunk batch would."""
        count = frames.shape[1]
        if count == 0:
            return None
        if chunks_done == 0:
            return self.model.encoder.encode_chunks(frames[None], count)
        padded = np.zeros((1, facts.N_MELS, facts.CHUNK_FRAMES), dtype=np.float32)
        padded[0, :, :count] = frames
        return self.model.encoder.encode_chunks(padded, count)

    def _close(self, frames: np.ndarray, interleaver, chunks_done: int) -> np.ndarray:
        """Append the tail chunk and the closing tokens; the logits to decode from."""
        audio = self._tail(frames, chunks_done)
        ids = []
        slots = None
        if audio is not None:
            piece = interleaver.push(audio.num_tokens)
            ids.append(piece.ids)
            slots = piece.audio_slots
        ids.append(np.asarray(self.builder.suffix_ids(self.instruction), dtype=np.int64))
        return self.model.lm.append(np.concatenate(ids), slots, audio)

    def _decode(self, logits: np.ndarray, max_new_tokens: int) -> str:
        result = self.model.lm.decode(logits, self.model.decode_settings(max_new_tokens).options())
        self.last_token_ids = result.token_ids
        self.last_decode_s = result.decode_s
        return self.model.tokenizer.decode(result.token_ids, skip_special_tokens=True)

    def partial(self, max_new_tokens: int = 32) -> str:
        """A provisional hypothesis from the audio so far; the committed cache is left as it was."""
        self.drop_speculation()
        length = self.model.lm.length
        try:
            logits = self._close(self.frames, copy.deepcopy(self.interleaver), self.chunks_done)
            return self._decode(logits, max_new_tokens)
        finally:
            self.model.lm.rollback(length)

    def finish(self, start_s: float) -> list[Segment]:
        """End of the utterance: tail chunk, closing tokens, decode; segments on the stream clock.

        With a speculation adopted (see `speculated`), its samples count as fed and its
        prefilled tail is decoded; otherwise the tail is encoded and prefilled now.
        """
        self.active = False
        spec, self._spec = self._spec, None
        if spec is not None:
            self.samples += spec.samples
            if self.samples < facts.HOP_LENGTH:
                self.model.lm.rollback(spec.committed)
                return []
            logits = spec.logits
        else:
            self.frames = _joined(self.frames, self.mel.finish())
            if self.samples < facts.HOP_LENGTH:
                return []
            logits = self._close(self.frames, self.interleaver, self.chunks_done)
        text = self._decode(logits, self.max_new_tokens)
        duration = self.samples / facts.SAMPLE_RATE
        if self.timestamps:
            found = parse_timestamped(text, duration=duration)
        else:
            found = [Segment(0.0, duration, text.strip())] if text.strip() else []
        return [seg.shift(start_s) for seg in found]

    def abandon(self) -> None:
        self.drop_speculation()
        self.active = False


@dataclass
class _Speculation:
    key: tuple  # (utterance start, end before refinement, samples fed, refined end)
    committed: int  # cache length before the speculative positions
    logits: np.ndarray
    samples: int  # samples the speculation fed beyond the committed state


def _joined(frames: np.ndarray, more: np.ndarray) -> np.ndarray:
    return np.concatenate([frames, more], axis=1) if more.shape[1] else frames


@dataclass
class LiveStats:
    audio_s: float = 0.0
    compute_s: float = 0.0
    utterances: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def real_time_factor(self) -> float:
        return self.compute_s / self.audio_s if self.audio_s else 0.0


class LiveTranscriber:
    """Glue of the live path; feed 16 kHz float32 blocks with `process`, then call `close`."""

    def __init__(self, model, on_event: Callable[[LiveEvent], None],
                 endpoint: EndpointConfig | None = None, timestamps: bool = True,
                 partial_every_s: float | None = None, max_new_tokens: int = 448,
                 instruction: str | None = None, system: str | None = None,
                 speculate: bool = True):
        endpoint = endpoint or EndpointConfig()
        LiveOptions.of(endpoint, partial_every_s, max_new_tokens)  # the CLI's checks and words
        self.model = model
        self.speculate = speculate
        self.on_event = on_event
        self.vad = SileroVAD()
        self.endpointer = Endpointer(endpoint)
        self.utterance = UtteranceDecoder(model, timestamps=timestamps, instruction=instruction,
                                          system=system, max_new_tokens=max_new_tokens)
        self.partial_every = int(partial_every_s * facts.SAMPLE_RATE) if partial_every_s else None
        self.stats = LiveStats()
        self.utterances: list[tuple[int, int]] = []  # [start_sample, end_sample) of each final
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # stream index of _buffer[0]
        self._vad_pos = 0  # samples already given to the VAD
        self._fed = 0  # stream index up to which the open utterance has been fed
        self._utt_start = 0
        self._next_partial = 0
        self._index = 0

    def warm_up(self) -> None:
        """Load what the first utterance would otherwise wait for (see UtteranceDecoder.prepare);
        call it before the audio starts, e.g. before opening a microphone."""
        self.utterance.prepare()

    @property
    def samples_seen(self) -> int:
        return self._buffer_start + self._buffer.size

    def process(self, block: np.ndarray) -> None:
        start = time.perf_counter()
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, block])
        self.stats.audio_s += block.size / facts.SAMPLE_RATE
        probs = self.vad.probs(block)
        for prob in probs:
            chunk = self._slice(self._vad_pos, self._vad_pos + CHUNK_SAMPLES)
            energy = float(np.sqrt(np.mean(np.square(chunk)))) if chunk.size else 0.0
            self._vad_pos += CHUNK_SAMPLES
            for event in self.endpointer.push(float(prob), CHUNK_SAMPLES, energy):
                self._handle(event)
        self._feed_committed()
        self._maybe_speculate()
        self._maybe_partial()
        self._trim()
        self.stats.compute_s += time.perf_counter() - start

    def close(self) -> None:
        """End of the stream: the open utterance is finished from what was captured."""
        start = time.perf_counter()
        tail = self.vad.flush()
        for prob in tail:
            n = max(0, min(CHUNK_SAMPLES, self.samples_seen - self._vad_pos))
            if n == 0:
                break
            self._vad_pos += n
            for event in self.endpointer.push(float(prob), n):
                self._handle(event)
        for event in self.endpointer.flush():
            self._handle(event)
        self.stats.compute_s += time.perf_counter() - start

    # -- internals -------------------------------------------------------------------------

    def _slice(self, lo: int, hi: int) -> np.ndarray:
        return self._buffer[max(0, lo - self._buffer_start): max(0, hi - self._buffer_start)]

    def _handle(self, event) -> None:
        if isinstance(event, SpeechStart):
            self.utterance.begin()
            self._utt_start = self._fed = event.start_sample
            self._next_partial = event.start_sample + (self.partial_every or 0)
        elif isinstance(event, Utterance):
            endpoint_s = self.endpointer.samples_seen / facts.SAMPLE_RATE
            fed = max(self._fed, event.start_sample)
            end = self._refined_end(event.start_sample, event.end_sample, fed)
            key = (event.start_sample, event.end_sample, fed, end)
            event = Utterance(event.start_sample, end, event.reason, event.sample_rate)
            speculated = self.utterance.speculated(key)
            if speculated:
                self._fed = max(self._fed, end)
            else:
                self._feed_to(event.end_sample)
            speech_end_wall = time.perf_counter()
            segments = self.utterance.finish(event.start_sample / facts.SAMPLE_RATE)
            latency = time.perf_counter() - speech_end_wall
            self.stats.utterances += 1
            self.stats.latencies.append(latency)
            self.utterances.append((event.start_sample, event.end_sample))
            span = (event.start_s, event.end_s)
            for seg in segments:
                self.on_event(LiveEvent("final", seg.start, seg.end, seg.text, self._index,
                                        latency, span, endpoint_s, speculated))
            self._index += 1
        elif isinstance(event, SpeechDiscarded):
            self.utterance.abandon()

    def _refined_end(self, start: int, end: int, fed: int) -> int:
        config = self.endpointer.config
        return refine_end(self._slice(start, end), start, end, max_trim=end - fed,
                          post_roll=config.samples(config.post_roll_s))

    def _maybe_speculate(self) -> None:
        """In trailing silence, with the audio up to the tentative end at hand: prefill the tail
        now, keyed by the end assumed; speech that resumes drops it."""
        if not (self.speculate and self.utterance.active):
            return
        tentative = self.endpointer.tentative_end
        if tentative is None:
            self.utterance.drop_speculation()
            return
        if self.samples_seen < tentative:
            return
        start = self.endpointer.utterance_start
        # The audio before tentative - END_REFINE_SAMPLES belongs to the utterance whether the
        # silence lasts or not: feed it first, so that the fed point (which bounds refine_end)
        # is the one the endpoint will see and the speculation is not redone one block later.
        self._feed_to(tentative - END_REFINE_SAMPLES)
        fed = max(self._fed, start)
        end = self._refined_end(start, tentative, fed)
        key = (start, tentative, fed, end)
        if not self.utterance.speculated(key):
            self.utterance.speculate(self._slice(fed, end), key)

    def _feed_to(self, end: int) -> None:
        if end > self._fed:
            self.utterance.feed(self._slice(self._fed, end))
            self._fed = end

    def _feed_committed(self) -> None:
        committed = self.endpointer.committed_end
        if committed is not None and self.utterance.active:
            self._feed_to(committed - END_REFINE_SAMPLES)

    def _maybe_partial(self) -> None:
        if not (self.partial_every and self.utterance.active):
            return
        if self._fed < self._next_partial:
            return
        # In trailing silence with the tail already speculated, the final is near: a partial
        # would roll the speculation back and make it be done again.
        if self.utterance.holding_speculation:
            return
        # Partials are a luxury: skip them while the machine is behind real time.
        if self.stats.real_time_factor > 0.8:
            self._next_partial = self._fed + self.partial_every
            return
        text = self.utterance.partial()
        self._next_partial = self._fed + self.partial_every
        self.on_event(LiveEvent("partial", self._utt_start / facts.SAMPLE_RATE,
                                self._fed / facts.SAMPLE_RATE, text.strip(), self._index))

    def _trim(self) -> None:
        # Keep what an utterance may still need: its start, or a pre-roll's worth before the VAD.
        keep = self._utt_start if self.endpointer.in_speech else self._vad_pos
        keep = min(keep, self._vad_pos) - self.endpointer.config.samples(
            self.endpointer.config.pre_roll_s) - CHUNK_SAMPLES
        drop = keep - self._buffer_start
        if drop > facts.SAMPLE_RATE:  # trim in >= 1 s steps to keep copies rare
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
