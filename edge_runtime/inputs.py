"""Turn the INPUTS a user types into the audio files to process, in a stable order.

An input is a file, a folder (searched recursively for audio files), a glob pattern (`*.wav`,
`calls/**/*.flac`), `-` for standard input, or `@LIST`: a text file with one input per line
(blank lines and lines starting with `#` are skipped; relative entries are taken relative to the
list file's folder). A plain file is taken whatever its extension, so the reader can say what is
wrong with it; folders and globs keep only names with an audio extension. The same file named
twice is processed once. Used by `transcribe`, `ask` and `batch`.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from .errors import InputError

STDIN = "-"
# What soundfile/libsndfile reads (soundfile.available_formats()) under its usual extensions.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au",
    ".snd", ".caf", ".w64", ".rf64", ".voc", ".sd2", ".paf", ".svx", ".nist", ".sph", ".ircam",
    ".mat", ".pvf", ".xi", ".htk", ".sds", ".avr", ".wve", ".mpc",
})
_GLOB_CHARS = frozenset("*?[")


def display_name(item: str | os.PathLike) -> str:
    """An input as messages and headers name it: "standard input" for '-'; the undecodable bytes
    of a non-UTF-8 file name escaped (\\xff), so the line can always be printed."""
    if str(item) == STDIN:
        return "standard input"
    return os.fsencode(item).decode("utf-8", "backslashreplace")


def is_audio_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def _folder_files(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found.extend(str(Path(root) / name) for name in sorted(files) if is_audio_name(name))
    return found


def _list_file(spec: str, depth: int) -> list[str]:
    path = Path(spec[1:])
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise InputError(f"input list {path}: {exc.strerror or exc}") from None
    base = path.parent
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = line if line == STDIN or Path(line).is_absolute() else str(base / line)
        entries.extend(_expand_one(entry, depth + 1))
    return entries


def _expand_one(spec: str, depth: int = 0) -> list[str]:
    if depth > 8:
        raise InputError(f"input list {spec}: lists nested more than 8 deep")
    if spec == STDIN:
        return [STDIN]
    if spec.startswith("@") and len(spec) > 1:
        return _list_file(spec, depth)
    path = Path(spec)
    if os.path.isdir(path):  # os.path's tests answer False for any OS error, such as a long name
        files = _folder_files(path)
        if not files:
            raise InputError(f"folder {spec}: no audio files in it "
                             f"(looked for {', '.join(sorted(AUDIO_EXTENSIONS)[:6])}, ...)")
        return files
    if os.path.lexists(spec):
        return [spec]
    if _GLOB_CHARS & set(spec):
        matches = sorted(m for m in glob.glob(spec, recursive=True)
                         if os.path.isfile(m) and is_audio_name(m))
        if not matches:
            raise InputError(f"pattern {display_name(spec)}: matches no audio file")
        return matches
    try:
        os.lstat(spec)
        why = "no such file or folder"
    except (OSError, ValueError) as exc:
        why = (getattr(exc, "strerror", None) or str(exc)).lower()
        why = "no such file or folder" if why == "no such file or directory" else why
    raise InputError(f"{display_name(spec)}: {why}")


def expand_inputs(specs: list[str], *, allow_stdin: bool = True) -> list[str]:
    """The audio files named by `specs`, in order, each once (STDIN stays "-")."""
    out: list[str] = []
    seen: set[object] = set()
    for spec in specs:
        for item in _expand_one(spec):
            if item == STDIN:
                if not allow_stdin:
                    raise InputError("'-' (standard input) is not accepted here")
                key: object = STDIN
            else:
                try:
                    st = os.stat(item)
                    key = (st.st_dev, st.st_ino)
                except OSError:
                    key = os.path.abspath(item)
            if key in seen:
                continue
            seen.add(key)
            out.append(item)
    if not out:
        raise InputError("no inputs given")
    return out
