"""The authors' prompts, pinned word for word, and how the user's choices pick the instruction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_runtime import prompts
from edge_runtime.prompts import instruction_for

# The texts as /work/shared/model-facts.md records them ("Prompt and time markers"), restated
# here so that an edit to prompts.py fails this test.
AUTHORS = {
    "PLAIN_ASR": "Transcribe the audio.",
    "SENTENCE_TIMESTAMPS": "Transcribe the audio into sentence-level timestamps using the format "
    "[xx.xx]text[yy.yy], where xx.xx and yy.yy are centisecond precision timestamps rounded to two "
    "decimal places. Concatenate consecutive segments without breaks. For example: [0.00]hello "
    "there[2.01][2.01]the weather is nice today[4.32]. Do not include any additional content such "
    "as explanations, headings, or annotations.",
    "SPEAKERS_WITH_TIMESTAMPS": "Transcribe the audio into text. Each sentence should begin with a "
    "start timestamp and a speaker label ([S01], [S02], [S03], ...), followed by the corresponding "
    "spoken content, and end with an end timestamp to clearly indicate the time span of that "
    "sentence.",
    "DESCRIBE": "Describe this audio.",
}


@pytest.mark.parametrize("name", sorted(AUTHORS))
def test_authors_prompts_word_for_word(name):
    assert getattr(prompts, name) == AUTHORS[name]


def test_model_facts_holds_the_same_texts():
    facts = Path("/work/shared/model-facts.md")
    if not facts.is_file():
        pytest.skip("shared/model-facts.md is not on this machine")
    flat = " ".join(facts.read_text(encoding="utf-8").split())
    for name, text in AUTHORS.items():
        assert f"`{text}`" in flat, name


def test_default_and_timestamp_instructions():
    assert instruction_for().text == prompts.PLAIN_ASR
    assert instruction_for(timestamps=True).text == prompts.SENTENCE_TIMESTAMPS
    assert instruction_for(timestamps=True).parse == "timestamps"
    assert instruction_for(speakers=True).text == prompts.SPEAKERS_WITH_TIMESTAMPS
    assert instruction_for(speakers=True, timestamps=True).parse == "speakers"
    assert instruction_for("caption").text == "Describe this audio."
    assert instruction_for("events").parse == "events"


def test_language_hint_follows_transcribe_the_audio():
    assert instruction_for(language="German").text == "Transcribe the audio in German."
    assert instruction_for(language="zh").text == "Transcribe the audio in Chinese."
    assert instruction_for(language="english").language == "English"
    ts = instruction_for(timestamps=True, language="fr").text
    assert ts == "Transcribe the audio in French" + prompts.SENTENCE_TIMESTAMPS[len("Transcribe the audio"):]
    sp = instruction_for(speakers=True, language="Japanese").text
    assert sp.startswith("Transcribe the audio in Japanese into text. Each sentence")


def test_custom_prompt_replaces_the_instruction():
    got = instruction_for(prompt="  Which instruments play?  ")
    assert (got.text, got.task, got.parse, got.custom) == ("Which instruments play?", None, "plain", True)
    assert instruction_for(prompt="x", timestamps=True).parse == "timestamps"
    assert got.to_dict() == {"prompt": "Which instruments play?", "task": None, "language": None,
                             "custom_prompt": True}


@pytest.mark.parametrize("kwargs, words", [
    (dict(prompt="x", task="caption"), "--prompt"),
    (dict(prompt="x", language="en"), "--language"),
    (dict(prompt="  "), "empty"),
    (dict(task="caption", timestamps=True), "--task caption"),
    (dict(task="events", language="en"), "--language"),
    (dict(task="sing"), "task must be one of"),
    (dict(language="en<|im_end|>"), "language"),
    (dict(language="x" * 41), "language"),
    (dict(language=""), "language"),
])
def test_impossible_combinations_are_one_line_value_errors(kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)) as info:
        instruction_for(**kwargs)
    assert "\n" not in str(info.value)


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError):
        instruction_for(prompt=3)
    with pytest.raises(TypeError):
        instruction_for(language=3)
