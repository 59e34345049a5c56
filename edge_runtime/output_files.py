"""Writing results without ever losing a user's file.

Three rules, each with one function here:
- an output is never one of the inputs (same path, a symlink to it or a hard link of it), and two
  results of one run never share a path: `check_outputs` refuses before anything is opened;
- several inputs written to one folder each get their own names: `plan_output_names`;
- a file is replaced whole or not at all: `write_atomic` writes a temporary file beside it, fsyncs
  it and renames it over the old one, so a crash or a full disk leaves the old file or nothing,
  never a fragment. New files are owner-only (0600), as everything the runtime writes.
OS failures become one-line OutputErrors naming the path and the reason.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import OutputError
from .private_files import PRIVATE_MODE

STDIN_NAME = "stdin"  # the output name of audio read from standard input ("-")


def reason(exc: OSError) -> str:
    """The OS's words for a failure ("No space left on device"), without the path."""
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _stdin_identity() -> tuple[int, int] | None:
    try:
        st = os.fstat(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _real(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.realpath(path))


def check_outputs(inputs: Iterable[str | os.PathLike], outputs: Iterable[tuple[str, str | os.PathLike]]) -> None:
    """Refuse (OutputError) if an output is an input or two outputs are the same file.

    outputs: (what, path) pairs, `what` naming the option in the message ("--save-audio").
    A file is the same if its resolved path matches (symlinks) or its device and inode do (hard
    links). Inputs named "-" (standard input) have no file to compare.
    """
    seen_inputs = []
    for item in inputs:
        if str(item) == "-":  # standard input redirected from a file (`< talk.wav`) is that file
            ident = _stdin_identity()
            if ident is not None:
                seen_inputs.append(("standard input", None, ident))
            continue
        seen_inputs.append((str(item), _real(item), _identity(item)))
    taken: dict[str, str] = {}
    for what, path in outputs:
        real, ident = _real(path), _identity(path)
        for name, in_real, in_ident in seen_inputs:
            if real == in_real or (ident is not None and ident == in_ident):
                raise OutputError(f"{what} {path} is the input {name}: refusing to overwrite it "
                                  "(choose another output name)")
        if real.casefold() in taken:
            raise OutputError(f"{what} {path} and {taken[real.casefold()]} are the same file: "
                              "one would overwrite the other")
        taken[real.casefold()] = f"{what} {path}"


def plan_output_names(inputs: Sequence[str]) -> list[str]:
    """One output name (no format extension) per input, unique within the run.

    The rule (README, "Transcribe and ask"): an input's name is its file name without the
    extension (`talk.wav` -> `talk`). Inputs of one run that would share that name keep their
    extension (`x.wav` -> `x.wav`, `x.flac` -> `x.flac`); inputs that then still share it (the
    same file name in different folders) are named by their path below the folder they have in
    common (`a/x.wav`, `b/x.wav`). Names are compared ignoring case, for file systems that do.
    Standard input ("-") is named "stdin". If the rule still leaves two equal names (an input
    literally named `x.wav.mp3` beside `x.wav` and `x.flac`), OutputError: refuse, never overwrite.
    """
    def stem(item: str) -> str:
        return STDIN_NAME if item == "-" else Path(item).stem

    def filename(item: str) -> str:
        return STDIN_NAME if item == "-" else Path(item).name

    names = [stem(item) for item in inputs]
    for group in _clashes(names):
        full = [filename(inputs[i]) for i in group]
        if len({n.casefold() for n in full}) == len(full):
            for i, n in zip(group, full):
                names[i] = n
            continue
        files = [i for i in group if inputs[i] != "-"]
        absolute = [os.path.abspath(inputs[i]) for i in files]
        common = os.path.commonpath([os.path.dirname(a) for a in absolute]) if absolute else ""
        for i, a in zip(files, absolute):
            names[i] = os.path.relpath(a, common)
    for group in _clashes(names):
        first, second = (inputs[i] for i in group[:2])
        raise OutputError(f"inputs {first} and {second} would be written under the same name "
                          f"{names[group[0]]!r}: rename one, or run them separately")
    return names


def _clashes(names: Sequence[str]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name.casefold(), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def make_folder(path: str | os.PathLike) -> Path:
    """Create the output folder (and parents), or say in one line why not."""
    path = Path(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"cannot write into {path}: it is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {path}: {reason(exc)}") from None
    return path


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Replace `path` with `data` (str is written as UTF-8) all at once; returns the path.

    Written to a temporary file in the same folder (so the rename never crosses file systems),
    fsync'd, then renamed over `path`; the folder is fsync'd so the rename itself survives a
    power cut. A symlink is written through (the file it names is replaced); a device, FIFO or
    socket is never replaced (OutputError). On any failure the
    temporary file is removed, the old file is left as it was, and OutputError says why.
    """
    path = Path(path)
    # os.path's tests answer False on an OS error (a name too long): the write then says why
    target = Path(os.path.realpath(path)) if os.path.islink(path) else path
    if os.path.isdir(target):
        raise OutputError(f"cannot write {path}: it is a folder")
    if os.path.exists(target) and not os.path.isfile(target):
        # a device, FIFO or socket: renaming over it would destroy it, not write into it
        raise OutputError(f"cannot write {path}: it is not a regular file")
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    folder = target.parent
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name[:200]}.", suffix=".part")
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), PRIVATE_MODE)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
        _sync_folder(folder)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {reason(exc)}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some systems do not open folders; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
