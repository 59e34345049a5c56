"""The instructions sent with the audio: the MOSS-Audio authors' own prompts, in one place.

A trained model's output format and quality depend on the exact words, so the authors' texts
(posted by the MOSS team in the upstream issue tracker, #3, #6, #7; see shared/model-facts.md)
are kept here word for word and pinned by tests/test_prompts.py. Everything else (the language
hint, the sound-event prompt) is edge-moss's own and says so.

`instruction_for` turns the user's choices (--task, --timestamps, --speakers, --language,
--prompt) into the one instruction sent, and the parser the answer needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import OptionError

# --- the authors' texts, word for word ------------------------------------------------------------

PLAIN_ASR = "Transcribe the audio."

SENTENCE_TIMESTAMPS = (
    "Transcribe the audio into sentence-level timestamps using the format [xx.xx]text[yy.yy], "
    "where xx.xx and yy.yy are centisecond precision timestamps rounded to two decimal places. "
    "Concatenate consecutive segments without breaks. For example: "
    "[0.00]hello there[2.01][2.01]the weather is nice today[4.32]. "
    "Do not include any additional content such as explanations, headings, or annotations."
)

SPEAKERS_WITH_TIMESTAMPS = (
    "Transcribe the audio into text. Each sentence should begin with a start timestamp and a "
    "speaker label ([S01], [S02], [S03], ...), followed by the corresponding spoken content, and "
    "end with an end timestamp to clearly indicate the time span of that sentence."
)

DESCRIBE = "Describe this audio."  # the authors' demo default

# --- edge-moss's own ------------------------------------------------------------------------------

# No official sound-event prompt was published; this one asks for the line format of the
# authors' demo data (`start_sec - end_sec: event description`).
SOUND_EVENTS = (
    "List the sound events in this audio, one per line, in the form "
    "start_sec - end_sec: event description."
)

TASKS = ("transcribe", "caption", "events")

# Every authors' transcription prompt starts so; the language hint goes right after it
# ("Transcribe the audio in German.", as CrispASR's "Transcribe this audio in <Language>.").
_TRANSCRIBE_HEAD = "Transcribe the audio"

# Whisper-style codes for the languages people pass most; any other name is used as written.
LANGUAGE_NAMES = {
    "ar": "Arabic", "de": "German", "en": "English", "es": "Spanish", "fr": "French",
    "hi": "Hindi", "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "th": "Thai",
    "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "yue": "Cantonese", "zh": "Chinese",
}
_LANGUAGE_RE = re.compile(r"[^\W\d_]+(?:[ '-][^\W\d_]+)*")


@dataclass(frozen=True)
class Instruction:
    """What is sent with the audio and how the answer is read.

    text: the instruction itself; task: transcribe, caption or events (None for a custom
    prompt); parse: "plain", "timestamps", "speakers" or "events"; language: the language name
    hinted, if any; custom: whether the text is the user's own --prompt.
    """

    text: str
    task: str | None
    parse: str
    language: str | None = None
    custom: bool = False

    def to_dict(self) -> dict:
        return {"prompt": self.text, "task": self.task, "language": self.language,
                "custom_prompt": self.custom}


def language_name(language: str) -> str:
    """The language's name for the hint: a known code's name, or the name given, capitalised."""
    if not isinstance(language, str):
        raise TypeError(f"language must be a str, not {type(language).__name__}")
    value = language.strip()
    if value.lower() in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[value.lower()]
    if not value or len(value) > 40 or not _LANGUAGE_RE.fullmatch(value):
        raise OptionError(f"language must be a language name or code such as 'English' or 'en', "
                         f"not {language!r}")
    return value[0].upper() + value[1:]


def with_language(prompt: str, language: str) -> str:
    """An authors' transcription prompt with the language hint after 'Transcribe the audio'."""
    if not prompt.startswith(_TRANSCRIBE_HEAD):
        raise OptionError("a language hint applies to transcription prompts only")
    return f"{_TRANSCRIBE_HEAD} in {language}{prompt[len(_TRANSCRIBE_HEAD):]}"


def instruction_for(task: str | None = None, *, timestamps: bool = False, speakers: bool = False,
                    language: str | None = None, prompt: str | None = None) -> Instruction:
    """The instruction for these choices; OptionError (a ValueError, one line) for combinations that cannot work.

    - prompt: replaces the instruction word for word (timestamps/speakers then only choose how the
      answer is parsed); cannot be combined with a task or a language;
    - task "transcribe" (default): plain ASR, the sentence-timestamps evaluation prompt, or the
      speakers-with-timestamps prompt; a language adds "in <Language>" after "Transcribe the audio";
    - task "caption": the demo's "Describe this audio."; task "events": a sound-event timeline.
    """
    if prompt is not None:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
        if not prompt.strip():
            raise OptionError("--prompt is empty")
        if task is not None:
            raise OptionError("--prompt replaces the task's instruction: give one of --prompt, --task")
        if language is not None:
            raise OptionError("--language hints the default instruction only; "
                             "with --prompt, write the language into the prompt")
        parse = "speakers" if speakers else "timestamps" if timestamps else "plain"
        return Instruction(prompt.strip(), None, parse, custom=True)
    task = task or "transcribe"
    if task not in TASKS:
        raise OptionError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    name = language_name(language) if language is not None else None
    if task == "transcribe":
        text, parse = ((SPEAKERS_WITH_TIMESTAMPS, "speakers") if speakers
                       else (SENTENCE_TIMESTAMPS, "timestamps") if timestamps
                       else (PLAIN_ASR, "plain"))
        return Instruction(with_language(text, name) if name else text, task, parse, name)
    if speakers or timestamps:
        raise OptionError(f"--task {task} has its own output form: --timestamps and --speakers "
                         "apply to --task transcribe")
    if name is not None:
        raise OptionError("--language applies to --task transcribe")
    if task == "caption":
        return Instruction(DESCRIBE, task, "plain")
    return Instruction(SOUND_EVENTS, task, "events")
