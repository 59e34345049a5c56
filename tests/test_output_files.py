"""output_files: whole-or-nothing writes, the output-is-input guard and the naming rule, at the API."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from edge_runtime.errors import OutputError
from edge_runtime.output_files import check_outputs, plan_output_names, write_atomic


def _no_temporaries(folder) -> bool:
    return not [p for p in os.listdir(folder) if p.endswith(".part")]


def test_write_creates_an_owner_only_file_and_replaces_whole(tmp_path):
    path = tmp_path / "t.txt"
    write_atomic(path, "first\n")
    assert path.read_text() == "first\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    write_atomic(path, b"second\n")
    assert path.read_bytes() == b"second\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # replaced files are narrowed too
    assert _no_temporaries(tmp_path)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT])
def test_a_failed_write_leaves_the_old_file_and_no_fragment(tmp_path, monkeypatch, code):
    path = tmp_path / "t.srt"
    path.write_text("the old transcript\n")

    def fail(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)  # the data went to the temporary file, then the disk said no
    with pytest.raises(OutputError) as info:
        write_atomic(path, "new text " * 1000)
    assert str(path) in str(info.value) and os.strerror(code).lower() in str(info.value)
    assert path.read_text() == "the old transcript\n"
    assert _no_temporaries(tmp_path)


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="no space left on device"):
        write_atomic(tmp_path / "new.json", "{}")
    monkeypatch.setattr(os, "replace", real_replace)
    assert os.listdir(tmp_path) == []


def test_a_fifo_or_device_is_never_replaced(tmp_path):
    """Renaming over a FIFO (or a link to a device such as /dev/null) would destroy it."""
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    link = tmp_path / "null.txt"
    link.symlink_to(os.devnull)
    for path in (fifo, link):
        with pytest.raises(OutputError, match="not a regular file"):
            write_atomic(path, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert _no_temporaries(tmp_path)


def test_folders_and_long_names(tmp_path):
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        write_atomic(tmp_path / "dir.txt", "x")
    with pytest.raises(OutputError, match="file name too long"):
        write_atomic(tmp_path / ("n" * 300 + ".txt"), "x")
    with pytest.raises(OutputError, match="no such file or directory"):
        write_atomic(tmp_path / "missing" / "t.txt", "x")


def test_a_symlinked_output_is_written_through(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_check_outputs_finds_the_input_by_path_link_and_inode(tmp_path):
    rec = tmp_path / "rec.wav"
    rec.write_bytes(b"audio")
    (tmp_path / "soft.wav").symlink_to(rec)
    os.link(rec, tmp_path / "hard.wav")
    for alias in ("rec.wav", "soft.wav", "hard.wav", "./sub/../rec.wav"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputError, match="is the input"):
            check_outputs([str(rec)], [("output", str(tmp_path / alias))])
    check_outputs([str(rec), "-"], [("output", str(tmp_path / "new.txt"))])
    with pytest.raises(OutputError, match="same file"):
        check_outputs([], [("a", tmp_path / "x.txt"), ("b", tmp_path / "sub" / ".." / "x.txt")])


@pytest.mark.parametrize("inputs, names", [
    (["talk.wav"], ["talk"]),
    (["a/x.wav", "b/x.wav"], ["a/x.wav", "b/x.wav"]),
    (["x.wav", "x.flac"], ["x.wav", "x.flac"]),
    (["X.wav", "x.flac", "y.wav"], ["X.wav", "x.flac", "y"]),  # case-insensitive file systems
    (["-", "stdin.wav"], ["stdin", "stdin.wav"]),
    (["calls/mon/a.wav", "calls/tue/a.wav", "calls/tue/b.wav"], ["mon/a.wav", "tue/a.wav", "b"]),
])
def test_the_naming_rule(inputs, names):
    assert plan_output_names(inputs) == names


def test_the_naming_rule_refuses_what_it_cannot_separate():
    with pytest.raises(OutputError, match="same name"):
        plan_output_names(["x.wav", "x.flac", "x.wav.mp3"])
