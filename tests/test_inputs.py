"""INPUTS expansion: files, folders, globs, @lists and '-', each file once, clear errors."""

from __future__ import annotations

import os

import pytest

from edge_runtime.errors import InputError
from edge_runtime.inputs import STDIN, expand_inputs


@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "deep").mkdir()
    for rel in ("a/x.wav", "a/deep/y.FLAC", "a/notes.txt", "b.mp3"):
        (tmp_path / rel).write_bytes(b"x")
    return tmp_path


def test_folder_is_recursive_sorted_and_keeps_audio_only(tree):
    got = expand_inputs([str(tree / "a")])
    # a folder's own files first, then its sub-folders, each level sorted by name
    assert got == [str(tree / "a" / "x.wav"), str(tree / "a" / "deep" / "y.FLAC")]


def test_glob_list_file_and_dedup(tree):
    listing = tree / "list.txt"
    listing.write_text("# comment\n\nb.mp3\na/x.wav\n")
    got = expand_inputs([str(tree / "*.mp3"), f"@{listing}", str(tree / "a" / "x.wav")])
    assert got == [str(tree / "b.mp3"), str(tree / "a" / "x.wav")]


def test_plain_file_is_taken_whatever_its_extension(tree):
    assert expand_inputs([str(tree / "a" / "notes.txt")]) == [str(tree / "a" / "notes.txt")]


def test_stdin(tree):
    assert expand_inputs(["-", "-"]) == [STDIN]
    with pytest.raises(InputError, match="standard input"):
        expand_inputs(["-"], allow_stdin=False)


@pytest.mark.parametrize("spec, words", [("missing.wav", "no such file"),
                                         ("*.nothing", "matches no audio"),
                                         ("@missing.txt", "input list")])
def test_errors_are_one_line(tree, monkeypatch, spec, words):
    monkeypatch.chdir(tree)
    with pytest.raises(InputError, match=words) as info:
        expand_inputs([spec])
    assert "\n" not in str(info.value)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no audio files"):
        expand_inputs([str(tmp_path / "empty")])


def test_non_utf8_name_is_listed(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.wav"
    with open(raw, "wb") as fh:
        fh.write(b"x")
    got = expand_inputs([str(tmp_path)])
    assert len(got) == 1 and os.path.exists(got[0])


def test_odd_names_are_one_line_or_found(tmp_path):
    from edge_runtime.inputs import display_name

    with pytest.raises(InputError, match="file name too long"):
        expand_inputs([str(tmp_path / ("n" * 300 + ".wav"))])
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.wav"  # Latin-1 bytes: not UTF-8
    with open(raw, "wb") as handle:
        handle.write(b"x")
    name = os.fsdecode(raw)
    assert expand_inputs([str(tmp_path)]) == [name]
    assert expand_inputs([str(tmp_path / "*.wav")]) == [name]
    assert display_name(name).endswith("caf\\xe9.wav") and display_name(STDIN) == "standard input"
    with pytest.raises(InputError, match=r"caf\\xe9.mp3: no such file or folder"):
        expand_inputs([name[:-4] + ".mp3"])
