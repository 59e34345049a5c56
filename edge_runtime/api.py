"""The Python API, in the style of faster-whisper: `EdgeMoss(bundle).transcribe(...)` / `.ask(...)`."""

from __future__ import annotations

import copy
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Sequence

import numpy as np

from . import model_facts as facts
from .answers import answer_segments
from .audio import load_audio, to_mono_16k
from .audio_encoder import AudioEncoder, AudioFeatures
from .bundle import AUDIO_GRAPH, DECODER_GRAPH, Bundle, verify_bundle
from .decoder import Decoder
from .embeddings import EmbeddingTable
from .errors import AudioError, BusyError, OptionError
from .features import StreamingLogMel, log_mel
from .generation import CachedLM, DecodeResult
from .offline import enforce_offline
from .options import DecodeOptions, ModelOptions, WindowOptions
from .prompt import AudioSpanInterleaver, PromptBuilder
from .prompts import instruction_for
from .segments import Segment, TranscriptionInfo
from .timestamps import split_thinking
from .tokenizer import IncrementalDetokenizer, load_tokenizer

AudioInput = "str | Path | np.ndarray | tuple[np.ndarray, int]"


@dataclass
class AskResult:
    """One answer: the text, the ids behind it and where the time went."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    audio_tokens: int
    timings: dict[str, float]
    thinking: str = ""
    stopped_by: str = ""
    logprobs: list[float] | None = None  # log-softmax of each generated token when chosen

    @property
    def avg_logprob(self) -> float | None:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "thinking": self.thinking,
            "token_ids": self.token_ids,
            "avg_logprob": self.avg_logprob,
            "prompt_tokens": self.prompt_tokens,
            "audio_tokens": self.audio_tokens,
            "stopped_by": self.stopped_by,
            "timings": self.timings,
        }


class AskStream:
    """Iterate for text pieces as they are generated; `.result` holds the AskResult afterwards."""

    def __init__(self, pieces: Iterator[str]):
        self._pieces = pieces
        self.result: AskResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self._pieces


# Sampling and length settings shared by ask and transcribe; they check themselves (options.py).
DecodeSettings = DecodeOptions


class EdgeMoss:
    """A MOSS-Audio bundle loaded for inference on this device."""

    # Set by __init__; class defaults for backends that build their own sessions (bnb_backend).
    _decoder: Decoder | None = None
    _lm: CachedLM | None = None
    decoder_load_s: float = 0.0

    def __init__(self, bundle: str | Path, device: str = "cpu", threads: int | None = None,
                 max_context: int | None = None, system: str | None = None, verify: bool = False):
        ModelOptions(threads=threads, max_context=max_context)
        enforce_offline()
        start = time.perf_counter()
        self.bundle: Bundle = verify_bundle(bundle, full=verify)
        cfg = self.bundle.config
        self.config = cfg
        self.device = device
        self.tokenizer = load_tokenizer(self.bundle.tokenizer_dir)
        ids = self.bundle.special_ids
        self.stop_ids = (ids["im_end"], ids["endoftext"])
        context = int(max_context or self.bundle.manifest.get("max_context", 4096))
        # The decoder session (prepacking 2.7 GB of int4 weights at 4B: most of the load time)
        # is built on a worker thread (ONNX Runtime releases the GIL there) while the audio graph
        # loads and the first clip is encoded; the first prefill waits for it if need be.
        self._start = start
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-moss-decoder")
        self._decoder_job = pool.submit(Decoder, self.bundle.file(DECODER_GRAPH), cfg,
                                        max_context=context, device=device, threads=threads)
        pool.shutdown(wait=False)
        self.encoder = AudioEncoder(self.bundle.file(AUDIO_GRAPH), mode=self.bundle.encoder_mode,
                                    device=device, threads=threads)
        emb = self.bundle.embeddings
        self.embeddings = EmbeddingTable.load(self.bundle.path, emb["kind"])
        self.system = system or facts.DEFAULT_SYSTEM_PROMPT
        self.load_s = time.perf_counter() - start

    # One KV cache per object: generations take turns (threads wait; a second open stream in the
    # same thread is an error, as waiting would deadlock it). Made on first use, so subclasses
    # with their own __init__ (quant.bnb_backend) get it too.
    _owner: int | None = None

    @contextmanager
    def _exclusive(self):
        """Hold the model's KV cache for one generation."""
        lock = self.__dict__.get("_lock") or self.__dict__.setdefault("_lock", threading.Lock())
        me = threading.get_ident()
        if self._owner == me:  # only this thread sets it to its own id, so no race here
            raise BusyError("this EdgeMoss object is already generating in this thread (an "
                            "ask(stream=True) iterator is still open): finish or close() it "
                            "first, or load a second EdgeMoss")
        with lock:
            self._owner = me
            try:
                yield
            finally:
                self._owner = None

    def model_info(self) -> dict[str, Any]:
        """Which model this is: the bundle's folder name, the checkpoint it came from, its form."""
        manifest = getattr(self.bundle, "manifest", None)
        if not isinstance(manifest, dict):  # a checkpoint run on torch (quant.bnb_backend)
            return {"bundle": None, "source": str(getattr(self.bundle, "path", "")) or None}
        source = manifest.get("source")
        return {"bundle": self.bundle.path.name,
                "source": source.get("name") if isinstance(source, dict) else None,
                "created_by": manifest.get("created_by"),
                "encoder_mode": self.bundle.encoder_mode,
                "quantization": _quant_summary(self.bundle.quantization)}

    @property
    def decoder(self) -> Decoder:
        """The decoder, waiting for its background load the first time (its errors surface here)."""
        if self._decoder is None:
            self._decoder = self._decoder_job.result()
            self.decoder_load_s = time.perf_counter() - self._start
        return self._decoder

    @decoder.setter
    def decoder(self, value: Decoder) -> None:  # other backends (quant.bnb_backend) set their own
        self._decoder = value

    @property
    def lm(self) -> CachedLM:
        if self._lm is None:
            self._lm = CachedLM(self.decoder, self.embeddings, self.config.num_deepstack, self.stop_ids)
        return self._lm

    @lm.setter
    def lm(self, value: CachedLM) -> None:
        self._lm = value

    # ----- building blocks (also used by the live session) -----

    def prompt_builder(self, system: str | None = None) -> PromptBuilder:
        return PromptBuilder(self.tokenizer, system=system or self.system,
                             time_markers=self.bundle.time_markers)

    def features(self, samples: np.ndarray) -> np.ndarray:
        return log_mel(samples)

    def encode(self, samples: np.ndarray, front_end: str = "clip") -> AudioFeatures:
        """Audio features of a clip. front_end="streaming" floors the mel with the running maximum,
        as the live path must (see features.StreamingLogMel); "clip" is the reference's form."""
        if front_end == "clip":
            mel = log_mel(samples)
        elif front_end == "streaming":
            stream = StreamingLogMel(floor="running")
            mel = np.concatenate([stream.push(samples), stream.finish()], axis=1)
        else:
            raise ValueError(f"front_end must be 'clip' or 'streaming', not {front_end!r}")
        if mel.shape[1] == 0:
            raise AudioError("the audio is shorter than one mel frame (10 ms)")
        return self.encoder.encode(mel)

    def decode_settings(self, max_new_tokens: int) -> DecodeSettings:
        """Greedy decoding of up to `max_new_tokens` (the live path's settings)."""
        return DecodeSettings(max_new_tokens=max_new_tokens)

    def _prefill(self, audio: AudioFeatures, question: str, system: str | None) -> tuple[np.ndarray, int]:
        """Cache: prefix (reused) + audio span + question. Returns last logits and prompt length."""
        builder = self.prompt_builder(system)
        prefix = builder.prefix_ids()
        self.lm.start_from_prefix(prefix)
        span = AudioSpanInterleaver(time_markers=self.bundle.time_markers).push(audio.num_tokens)
        suffix = np.asarray(builder.suffix_ids(question), dtype=np.int64)
        ids = np.concatenate([span.ids.astype(np.int64), suffix])
        logits = self.lm.append(ids, span.audio_slots, audio)
        return logits, len(prefix) + ids.size

    def _ask_steps(self, samples: np.ndarray, question: str, settings: DecodeSettings,
                   system: str | None, front_end: str = "clip") -> Generator[int, None, AskResult]:
        """Encode, prefill and decode; yields generated ids, returns the AskResult."""
        timings: dict[str, float] = {"load_s": round(self.load_s, 4)}
        t0 = time.perf_counter()
        audio = self.encode(samples, front_end)
        t1 = time.perf_counter()
        _ = self.lm  # the decoder may still be loading (first request): wait apart from the prefill
        wait = time.perf_counter() - t1
        t1 += wait
        logits, prompt_tokens = self._prefill(audio, question, system)
        t2 = time.perf_counter()
        result: DecodeResult = yield from self.lm.iter_decode(logits, settings.options())
        thinking, answer = split_thinking(self.tokenizer.decode(result.token_ids,
                                                                skip_special_tokens=False))
        text = answer if thinking else self.tokenizer.decode(result.token_ids,
                                                             skip_special_tokens=True)
        timings.update(decoder_load_s=round(self.decoder_load_s, 4), decoder_wait_s=round(wait, 4),
                       encode_s=round(t1 - wait - t0, 4),
                       prefill_s=round(t2 - t1, 4),
                       decode_s=round(result.decode_s, 4),
                       decode_tokens_per_s=round(result.tokens_per_s, 2))
        return AskResult(text=text, token_ids=result.token_ids, prompt_tokens=prompt_tokens,
                         audio_tokens=audio.num_tokens, timings=timings, thinking=thinking,
                         stopped_by=result.stopped_by, logprobs=result.logprobs)

    def _run(self, samples: np.ndarray, question: str, settings: DecodeSettings,
             system: str | None, front_end: str = "clip",
             on_token: Callable[[int], bool | None] | None = None) -> AskResult:
        with self._exclusive():
            steps = self._ask_steps(samples, question, settings, system, front_end)
            stop = None
            while True:
                try:
                    token = steps.send(stop)
                except StopIteration as done:
                    return done.value
                # A server streams from here: on_token returning True ends the answer (a stop
                # string); an exception raised in it abandons the run (a client that went away).
                stop = on_token(token) if on_token is not None else None

    def with_own_cache(self, max_context: int | None = None) -> "EdgeMoss":
        """This model with a KV cache of its own, sharing the sessions and weights: a live stream
        served beside file requests keeps its prefilled utterance while they reset theirs."""
        twin = copy.copy(self)
        twin.decoder = Decoder(None, self.decoder.dims, session=self.decoder.session,
                               max_context=int(max_context or self.decoder.max_context))
        twin.lm = CachedLM(twin.decoder, self.embeddings, self.config.num_deepstack, self.stop_ids)
        return twin

    # ----- public API -----

    def ask(self, audio: AudioInput, question: str, *, stream: bool = False,
            system: str | None = None, max_new_tokens: int = 256, temperature: float = 0.0,
            top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
            ignore_eos: bool = False,
            on_token: Callable[[int], bool | None] | None = None) -> AskResult | AskStream:
        """Answer `question` about `audio`.

        Args:
            audio: a file path, a 16 kHz float array, or (array, sample_rate).
            question: the question, always sent as plain text ("<|im_end|>" in it stays text).
            stream: return an AskStream to iterate for text pieces as they are generated.
            system: system prompt (default: the object's, "You are a helpful assistant.").
            max_new_tokens, temperature, top_k, top_p, seed: decoding (greedy by default).
            ignore_eos: keep decoding past the stop token.
            on_token: (stream=False) sees each generated id; returning True stops there.

        One object runs one generation at a time: other threads wait their turn; a second
        stream opened and iterated in the same thread while one is still open raises BusyError.
        """
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, not {type(question).__name__}")
        if system is not None and not isinstance(system, str):
            raise TypeError(f"system must be a str, not {type(system).__name__}")
        decode = DecodeSettings(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, ignore_eos=ignore_eos)
        samples = self.load(audio)
        if not stream:
            return self._run(samples, question, decode, system, on_token=on_token)
        holder = AskStream(iter(()))

        def pieces() -> Iterator[str]:
            with self._exclusive():
                detok = IncrementalDetokenizer(self.tokenizer)
                steps = self._ask_steps(samples, question, decode, system)
                while True:
                    try:
                        token = next(steps)
                    except StopIteration as done:
                        holder.result = done.value
                        break
                    piece = detok.push(token)
                    if piece:
                        yield piece
                tail = detok.flush()
            if tail:
                yield tail

        holder._pieces = pieces()
        return holder

    def transcribe(self, audio: AudioInput, *, timestamps: bool = True, speakers: bool = False,
                   task: str | None = None, language: str | None = None,
                   prompt: str | None = None, window_s: float = 30.0, vad: bool = True,
                   max_new_tokens: int = 448, temperature: float = 0.0, top_k: int = 0,
                   top_p: float = 1.0, seed: int | None = None, ignore_eos: bool = False,
                   progress: Callable[[float, float], None] | None = None,
                   windows: Sequence[tuple[float, float]] | None = None,
                   front_end: str = "clip",
                   on_token: Callable[[int], bool | None] | None = None
                   ) -> tuple[list[Segment], TranscriptionInfo]:
        """Transcribe `audio` window by window; segments carry absolute times in seconds.

        Args:
            audio: a file path, a 16 kHz float array, or (array, sample_rate).
            timestamps: send the authors' sentence-level timestamp prompt and parse its times
                (off: the plain "Transcribe the audio." and one segment per window).
            speakers: send the authors' speakers-with-timestamps prompt; segments get `speaker`.
            task: "transcribe" (default), "caption" ("Describe this audio.") or "events" (a
                sound-event timeline, one segment per event line).
            language: a language name or code ("German", "de"): the default instruction becomes
                "Transcribe the audio in German..." (transcription only).
            prompt: your own instruction, sent word for word instead of the task's; timestamps
                and speakers then only choose how the answer is parsed.
            window_s: longest window fed to the model at once, in seconds.
            vad: cut at the Silero VAD's speech regions (off: at quiet points).
            max_new_tokens, temperature, top_k, top_p, seed, ignore_eos: decoding, per window.
            progress: called as progress(done_s, total_s) after each window, in seconds
                of audio.
            windows: [(start_s, end_s)] to impose a segmentation (e.g. the live path's
                utterances); in time order, without overlap, inside the audio.
            front_end: "clip" (the reference's mel) or "streaming" (the live path's mel floor).
            on_token: sees each generated id; returning True ends that window's answer.

        Returns (segments, info). Each Segment has id, start, end, text, tokens, avg_logprob,
        temperature, compression_ratio and, with speakers, speaker; info records the duration,
        the model, the instruction sent (info.prompt), the language hint and the timings.
        """
        from .windows import plan_windows, plan_windows_from_regions

        instruction = instruction_for(task, timestamps=timestamps, speakers=speakers,
                                      language=language, prompt=prompt)
        decode = DecodeSettings(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, ignore_eos=ignore_eos)
        WindowOptions(window_s=window_s)
        samples = self.load(audio)
        duration = samples.size / facts.SAMPLE_RATE
        start = time.perf_counter()
        regions = None
        sr = facts.SAMPLE_RATE
        if windows is not None:
            windows = [(int(round(a * sr)), int(round(b * sr)))
                       for a, b in _checked_windows(windows, duration)]
        elif vad:
            from .vad import speech_regions

            regions = speech_regions(samples)
            windows = plan_windows_from_regions(regions, max_window_s=window_s, samples=samples,
                                                unit="seconds")
        else:
            windows = plan_windows(samples, max_window_s=window_s)
        segments: list[Segment] = []
        audio_tokens = generated = 0
        stages = {"encode_s": 0.0, "prefill_s": 0.0, "decode_s": 0.0}
        for index, (lo, hi) in enumerate(windows):
            piece = samples[lo:hi]
            if piece.size < facts.HOP_LENGTH:
                continue
            result = self._run(piece, instruction.text, decode, None, front_end, on_token)
            audio_tokens += result.audio_tokens
            generated += len(result.token_ids)
            for key in stages:
                stages[key] += result.timings.get(key, 0.0)
            found = answer_segments(self.tokenizer, result.token_ids, result.logprobs,
                                    result.text, instruction.parse, piece.size / sr, temperature)
            segments.extend(seg.shift(lo / sr) for seg in found)
            if progress is not None:
                progress(min(hi / sr, duration), duration)
        if progress is not None:
            progress(duration, duration)
        for number, seg in enumerate(segments):
            seg.id = number
        timings = {"load_s": round(self.load_s, 4), **{k: round(v, 4) for k, v in stages.items()},
                   "transcribe_s": round(time.perf_counter() - start, 4)}
        info = TranscriptionInfo(duration=duration, language=instruction.language,
                                 windows=[(lo / sr, hi / sr) for lo, hi in windows],
                                 audio_tokens=audio_tokens, generated_tokens=generated,
                                 speech_regions=regions, timings=timings,
                                 model=self.model_info(), prompt=instruction.to_dict())
        return segments, info

    @staticmethod
    def load(audio: AudioInput) -> np.ndarray:
        """Path, 16 kHz float array, or (array, sample_rate) -> 16 kHz mono float32."""
        if isinstance(audio, (str, Path)):
            return load_audio(audio)
        if isinstance(audio, tuple) and len(audio) == 2:
            return to_mono_16k(np.asarray(audio[0]), int(audio[1]))
        return to_mono_16k(np.asarray(audio), facts.SAMPLE_RATE)


def _quant_summary(quantization: dict[str, Any]) -> dict[str, Any]:
    """The bundle's quantization in brief: audio dtype and the decoder's scheme."""
    decoder = quantization.get("decoder")
    if isinstance(decoder, dict):
        decoder = {k: v for k, v in decoder.items() if isinstance(v, (str, int, float, bool))}
    return {"audio": quantization.get("audio"), "decoder": decoder}


def _checked_windows(windows: Sequence[tuple[float, float]], duration: float
                     ) -> list[tuple[float, float]]:
    """(start_s, end_s) pairs, finite, in time order, without overlap, inside the audio; else
    ValueError naming the bad window. An end up to 10 ms past the audio is clamped to it."""
    if isinstance(windows, (str, bytes)) or not hasattr(windows, "__iter__"):
        raise TypeError(f"windows must be a list of (start_s, end_s) pairs, not {type(windows).__name__}")
    out: list[tuple[float, float]] = []
    for number, window in enumerate(windows):
        try:
            start, end = (float(v) for v in window)
        except (TypeError, ValueError):
            raise OptionError(f"windows[{number}] must be a (start_s, end_s) pair of numbers, "
                             f"got {window!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)):
            raise OptionError(f"windows[{number}] = {window!r} is not finite")
        if start < 0 or end <= start:
            raise OptionError(f"windows[{number}] = {window!r} must have 0 <= start_s < end_s")
        if end > duration + 0.01:
            raise OptionError(f"windows[{number}] = {window!r} ends after the audio "
                             f"({duration:.3f} s)")
        if out and start < out[-1][1]:
            raise OptionError(f"windows[{number}] = {window!r} starts before the previous window "
                             "ends: windows must be in time order without overlap")
        out.append((start, min(end, duration)))
    return out
