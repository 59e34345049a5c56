"""The Python API, in the style of faster-whisper: `EdgeMoss(bundle).transcribe(...)` / `.ask(...)`."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import numpy as np

from . import model_facts as facts
from .audio import load_audio, to_mono_16k
from .audio_encoder import AudioEncoder, AudioFeatures
from .bundle import AUDIO_GRAPH, DECODER_GRAPH, Bundle, verify_bundle
from .decoder import Decoder
from .embeddings import EmbeddingTable
from .errors import AudioError
from .features import StreamingLogMel, log_mel
from .generation import CachedLM, DecodeResult, GenerationOptions
from .offline import enforce_offline
from .prompt import AudioSpanInterleaver, PromptBuilder
from .sampling import SamplerConfig
from .segments import Segment, TranscriptionInfo
from .timestamps import PLAIN_INSTRUCTION, TIMESTAMP_INSTRUCTION, parse_timestamped, split_thinking
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "thinking": self.thinking,
            "token_ids": self.token_ids,
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


@dataclass
class DecodeSettings:
    """Sampling and length settings shared by ask and transcribe."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False

    def options(self) -> GenerationOptions:
        return GenerationOptions(
            max_new_tokens=self.max_new_tokens,
            sampler=SamplerConfig(temperature=self.temperature, top_k=self.top_k,
                                  top_p=self.top_p, seed=self.seed),
            ignore_eos=self.ignore_eos,
        )


class EdgeMoss:
    """A MOSS-Audio bundle loaded for inference on this device."""

    # Set by __init__; class defaults for backends that build their own sessions (bnb_backend).
    _decoder: Decoder | None = None
    _lm: CachedLM | None = None
    decoder_load_s: float = 0.0

    def __init__(self, bundle: str | Path, device: str = "cpu", threads: int | None = None,
                 max_context: int | None = None, system: str | None = None, verify: bool = False):
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
                         stopped_by=result.stopped_by)

    def _run(self, samples: np.ndarray, question: str, settings: DecodeSettings,
             system: str | None, front_end: str = "clip") -> AskResult:
        steps = self._ask_steps(samples, question, settings, system, front_end)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    # ----- public API -----

    def ask(self, audio: AudioInput, question: str, *, stream: bool = False,
            system: str | None = None, **settings: Any) -> AskResult | AskStream:
        """Answer `question` about `audio`. With stream=True, iterate the result for text pieces."""
        samples = self.load(audio)
        decode = DecodeSettings(**settings)
        if not stream:
            return self._run(samples, question, decode, system)
        holder = AskStream(iter(()))

        def pieces() -> Iterator[str]:
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

    def transcribe(self, audio: AudioInput, *, timestamps: bool = True, window_s: float = 30.0,
                   vad: bool = True, max_new_tokens: int = 448,
                   progress: Callable[[int, int], None] | None = None,
                   windows: list[tuple[float, float]] | None = None, front_end: str = "clip",
                   **settings: Any) -> tuple[list[Segment], TranscriptionInfo]:
        """Transcribe `audio` window by window; segments carry absolute times in seconds.

        Windows come from the VAD's speech regions (or quiet points when vad=False), at most
        `window_s` long; pass `windows` [(start_s, end_s)] to impose a segmentation (the live
        path's utterances, say) and front_end="streaming" to use the live path's mel floor.
        """
        from .windows import plan_windows, plan_windows_from_regions

        samples = self.load(audio)
        duration = samples.size / facts.SAMPLE_RATE
        start = time.perf_counter()
        regions = None
        if windows is not None:
            sr = facts.SAMPLE_RATE
            windows = [(int(round(a * sr)), int(round(b * sr))) for a, b in windows]
        elif vad:
            from .vad import speech_regions

            regions = speech_regions(samples)
            windows = plan_windows_from_regions(regions, max_window_s=window_s, samples=samples,
                                                unit="seconds")
        else:
            windows = plan_windows(samples, max_window_s=window_s)
        instruction = TIMESTAMP_INSTRUCTION if timestamps else PLAIN_INSTRUCTION
        decode = DecodeSettings(max_new_tokens=max_new_tokens, **settings)
        segments: list[Segment] = []
        audio_tokens = generated = 0
        for index, (lo, hi) in enumerate(windows):
            piece = samples[lo:hi]
            if piece.size < facts.HOP_LENGTH:
                continue
            result = self._run(piece, instruction, decode, None, front_end)
            audio_tokens += result.audio_tokens
            generated += len(result.token_ids)
            window_len = piece.size / facts.SAMPLE_RATE
            offset = lo / facts.SAMPLE_RATE
            if timestamps:
                found = parse_timestamped(result.text, duration=window_len)
            else:
                text = result.text.strip()
                found = [Segment(0.0, window_len, text)] if text else []
            segments.extend(seg.shift(offset) for seg in found)
            if progress is not None:
                progress(index + 1, len(windows))
        sr = facts.SAMPLE_RATE
        info = TranscriptionInfo(duration=duration, windows=[(lo / sr, hi / sr) for lo, hi in windows],
                                 audio_tokens=audio_tokens, generated_tokens=generated,
                                 speech_regions=regions,
                                 timings={"load_s": round(self.load_s, 4),
                                          "transcribe_s": round(time.perf_counter() - start, 4)})
        return segments, info

    @staticmethod
    def load(audio: AudioInput) -> np.ndarray:
        """Path, 16 kHz float array, or (array, sample_rate) -> 16 kHz mono float32."""
        if isinstance(audio, (str, Path)):
            return load_audio(audio)
        if isinstance(audio, tuple) and len(audio) == 2:
            return to_mono_16k(np.asarray(audio[0]), int(audio[1]))
        return to_mono_16k(np.asarray(audio), facts.SAMPLE_RATE)
