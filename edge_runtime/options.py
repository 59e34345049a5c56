"""Options that check themselves once, at the edge: one small dataclass per task.

Each dataclass validates its fields in __post_init__ and raises OptionError (an EdgeMossError and
a ValueError) whose message names the CLI flag and the API argument and gives the accepted range,
so `edge-moss transcribe --window nan` and `EdgeMoss.transcribe(window_s=float("nan"))` fail the
same way, before any audio is read or any model runs. The CLI only builds these objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

from .errors import OptionError
from .subtitles import FORMATS as TRANSCRIPT_FORMATS  # the formats the writers know
# plan_windows looks for a quiet cut in the last 5 s of a window and keeps at least 1 s after it
MIN_WINDOW_S = 6.0
MAX_WINDOW_S = 120.0
MAX_NEW_TOKENS = 32768


def _fail(flag: str, arg: str, wanted: str, value) -> OptionError:
    return OptionError(f"{flag} ({arg}) must be {wanted}, got {value!r}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_number(value, flag: str, arg: str, lo: float, hi: float, *, integer: bool = False,
                 above: bool = False, unit: str = "", none_ok: bool = False):
    """`value` if it is a finite number in [lo, hi] ((lo, hi] with above=True), else OptionError."""
    if value is None and none_ok:
        return None
    kind = "an integer" if integer else "a number"
    low = f"above {_num(lo)}" if above else f"from {_num(lo)}"
    wanted = (f"{kind} {low} and at most {_num(hi)}{unit}" if above
              else f"{kind} {low} to {_num(hi)}{unit}")
    if none_ok:
        wanted += " (or unset)"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _fail(flag, arg, wanted, value)
    if integer and not isinstance(value, Integral):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise _fail(flag, arg, wanted, value)
    if not math.isfinite(value) or value > hi or value < lo or (above and value == lo):
        raise _fail(flag, arg, wanted, value)
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class DecodeOptions:
    """Sampling and length of one generation (ask, each transcribe window, each live utterance).

    temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off; seed None is
    not reproducible.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        check_number(self.max_new_tokens, "--max-new-tokens", "max_new_tokens", 1, MAX_NEW_TOKENS,
                     integer=True)
        check_number(self.temperature, "--temperature", "temperature", 0, 10)
        check_number(self.top_k, "--top-k", "top_k", 0, 1_000_000, integer=True)
        check_number(self.top_p, "--top-p", "top_p", 0, 1, above=True)
        check_number(self.seed, "--seed", "seed", 0, 2**63 - 1, integer=True, none_ok=True)

    def options(self):
        """The generation loop's own settings object."""
        from .generation import GenerationOptions
        from .sampling import SamplerConfig

        return GenerationOptions(
            max_new_tokens=int(self.max_new_tokens),
            sampler=SamplerConfig(temperature=float(self.temperature), top_k=int(self.top_k),
                                  top_p=float(self.top_p), seed=self.seed),
            ignore_eos=self.ignore_eos,
        )


@dataclass(frozen=True)
class ModelOptions:
    """How a bundle is run: threads (None: tuned for the machine), KV-cache length (None: the
    bundle's own)."""

    threads: int | None = None
    max_context: int | None = None

    def __post_init__(self) -> None:
        check_number(self.threads, "--threads", "threads", 1, 1024, integer=True, none_ok=True)
        check_number(self.max_context, "--max-context", "max_context", 64, 1 << 20, integer=True,
                     none_ok=True, unit=" tokens")


@dataclass(frozen=True)
class WindowOptions:
    """How long audio is cut for offline transcription: windows of at most window_s seconds."""

    window_s: float = 30.0

    def __post_init__(self) -> None:
        check_number(self.window_s, "--window", "window_s", MIN_WINDOW_S, MAX_WINDOW_S,
                     unit=" seconds")


@dataclass(frozen=True)
class LiveOptions:
    """Endpointing and decoding of a live session (listen, LiveTranscriber)."""

    min_silence_s: float = 0.7
    max_utterance_s: float = 30.0
    min_speech_s: float = 0.25
    vad_threshold: float = 0.5
    partial_every_s: float | None = 2.0
    max_new_tokens: int = 448

    def __post_init__(self) -> None:
        check_number(self.min_silence_s, "--min-silence", "min_silence_s", 0.05, 10, unit=" seconds")
        check_number(self.max_utterance_s, "--max-utterance", "max_utterance_s", 1, MAX_WINDOW_S,
                     unit=" seconds")
        check_number(self.min_speech_s, "--min-speech", "min_speech_s", 0, 10, unit=" seconds")
        if self.min_speech_s >= self.max_utterance_s:
            raise OptionError(f"--min-speech ({self.min_speech_s:g} s) must be shorter than "
                              f"--max-utterance ({self.max_utterance_s:g} s)")
        check_number(self.vad_threshold, "--vad-threshold", "vad_threshold", 0, 0.99, above=True)
        check_number(self.partial_every_s, "--partial-every", "partial_every_s", 0.1, 60,
                     unit=" seconds", none_ok=True)
        check_number(self.max_new_tokens, "--max-new-tokens", "max_new_tokens", 1, MAX_NEW_TOKENS,
                     integer=True)

    @classmethod
    def of(cls, endpoint, partial_every_s: float | None, max_new_tokens: int) -> "LiveOptions":
        """Check an EndpointConfig built by hand with the same rules (the Python API's path)."""
        return cls(min_silence_s=endpoint.min_silence_s, max_utterance_s=endpoint.max_utterance_s,
                   min_speech_s=endpoint.min_speech_s, vad_threshold=endpoint.threshold,
                   partial_every_s=partial_every_s, max_new_tokens=max_new_tokens)

    def endpoint_config(self):
        from .endpointing import EndpointConfig

        return EndpointConfig(threshold=self.vad_threshold,
                              neg_threshold=min(0.35, self.vad_threshold),
                              min_silence_s=self.min_silence_s, min_speech_s=self.min_speech_s,
                              max_utterance_s=self.max_utterance_s,
                              cut_search_s=min(2.0, self.max_utterance_s / 2))


def output_formats(spec: str, choices: tuple[str, ...] = TRANSCRIPT_FORMATS) -> tuple[str, ...]:
    """`-f srt,vtt` -> ("srt", "vtt"); "all" -> every choice; anything else is refused."""
    names = [part.strip().lower().lstrip(".") for part in str(spec).split(",")]
    if any(not name for name in names):
        raise OptionError(f"-f/--format {spec!r}: empty format name; "
                          f"use a comma-separated list of {', '.join(choices)} or all")
    out: list[str] = []
    for name in names:
        expanded = choices if name == "all" else (name,)
        for fmt in expanded:
            if fmt not in choices:
                raise OptionError(f"-f/--format: unsupported format {fmt!r}; choose from "
                                  f"{', '.join(choices)} or all (several: -f srt,vtt)")
            if fmt not in out:
                out.append(fmt)
    return tuple(out)
