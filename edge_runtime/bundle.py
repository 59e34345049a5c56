"""The edge-moss bundle: a folder of ONNX graphs, an embedding table, tokenizer files and a manifest.

The manifest records the model's dimensions, special ids, time-marker settings, encoder mode, the
quantization of every part and the size and sha256 of every file. A bundle that is truncated,
edited or from a newer format is refused. Hashing gigabytes at every start would cost seconds, so a
successful full check leaves a stamp (file sizes + mtimes) in the user's cache; a later load with
unchanged files checks sizes only. `verify_bundle(path, full=True)` always hashes everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from . import model_facts as facts
from .errors import BundleError
from .model_config import AudioEncoderConfig, ConfigError, LanguageConfig, MossAudioConfig

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "edge-moss-bundle"
FORMAT_VERSION = 1

AUDIO_GRAPH = "audio.onnx"
DECODER_GRAPH = "decoder.onnx"
TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: dict[str, Any]
    config: MossAudioConfig

    @property
    def encoder_mode(self) -> str:
        return self.manifest["encoder_mode"]

    @property
    def special_ids(self) -> dict[str, int]:
        return self.manifest["special_ids"]

    @property
    def time_markers(self) -> bool:
        return bool(self.manifest["time_markers"]["enabled"])

    @property
    def quantization(self) -> dict[str, Any]:
        return self.manifest["quantization"]

    @property
    def embeddings(self) -> dict[str, Any]:
        return self.manifest["embeddings"]

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER_DIR


def sha256_file(path: Path, block: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(root: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Size and sha256 of each file, for the manifest."""
    return {name: {"bytes": (root / name).stat().st_size, "sha256": sha256_file(root / name)}
            for name in sorted(names)}


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **manifest}
    path = Path(root) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(root: Path) -> dict[str, Any]:
    """The bundle's manifest, read and checked field by field (BundleError says what is wrong)."""
    root = Path(root)
    if not root.exists():
        raise BundleError(f"no bundle at {root} (make one with `edge-moss export CHECKPOINT -o {root}`)")
    if not root.is_dir():
        raise BundleError(f"{root} is a file, not a bundle folder (make one with `edge-moss export`)")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{root} is not an edge-moss bundle: it has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise BundleError(f"{path} is damaged: {str(exc)[:200]}") from None
    check_manifest(manifest, root)
    return manifest


# --- manifest checks: every field the runtime reads, with its type ------------------------------

ENCODER_MODES = ("chunked", "full")
EMBEDDING_KINDS = ("fp32", "fp16", "int8", "int4")
SPECIAL_ID_KEYS = ("audio_token", "audio_start", "audio_end", "im_start", "im_end", "endoftext")
REQUIRED_FILES = (AUDIO_GRAPH, DECODER_GRAPH, f"{TOKENIZER_DIR}/vocab.json",
                  f"{TOKENIZER_DIR}/merges.txt")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _fail(what: str) -> BundleError:
    return BundleError(f"bundle manifest: {what}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dict(manifest: dict, key: str) -> dict:
    value = manifest.get(key)
    if key not in manifest:
        raise _fail(f"the '{key}' entry is missing")
    if not isinstance(value, dict):
        raise _fail(f"'{key}' must be an object, not {type(value).__name__}")
    return value


def _safe_name(name: str) -> bool:
    """A relative path inside the bundle: no absolute paths, no '..', no empty parts."""
    parts = name.split("/")
    return (bool(name) and "\\" not in name and "\0" not in name and not name.startswith("/")
            and all(part not in ("", ".", "..") for part in parts))


def check_manifest(manifest: Any, root: Path | str = "") -> None:
    """Raise BundleError ("bundle manifest: ...") unless every field the runtime reads is there
    with the right type: format, format_version, files, special_ids, time_markers, encoder_mode,
    quantization, embeddings, model (dimensions) and the optional max_context."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{Path(root) / MANIFEST_NAME} is not an edge-moss bundle manifest")
    version = manifest.get("format_version")
    if not _is_int(version):
        raise _fail(f"format_version must be a whole number, not {version!r:.40}")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {root} has format version {version}, newer than this edge-moss reads "
            f"({FORMAT_VERSION}): upgrade edge-moss or re-export the bundle"
        )
    files = _dict(manifest, "files")
    for name, entry in files.items():
        if not _safe_name(name):
            raise _fail(f"file name {name!r:.80} is not a plain path inside the bundle")
        if not isinstance(entry, dict) or not _is_int(entry.get("bytes")) or entry["bytes"] < 0 \
                or not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            raise _fail(f"files['{name}'] must be {{\"bytes\": size, \"sha256\": 64 hex digits}}")
    for name in REQUIRED_FILES:
        if name not in files:
            raise _fail(f"files lacks {name}")
    special = _dict(manifest, "special_ids")
    for key in SPECIAL_ID_KEYS:
        if not _is_int(special.get(key)) or special[key] < 0:
            raise _fail(f"special_ids.{key} must be a token id (a whole number >= 0)")
    markers = _dict(manifest, "time_markers")
    if not isinstance(markers.get("enabled"), bool):
        raise _fail("time_markers.enabled must be true or false")
    mode = manifest.get("encoder_mode")
    if mode not in ENCODER_MODES:
        raise _fail(f"encoder_mode must be one of {', '.join(ENCODER_MODES)}, not {mode!r:.40}")
    quant = _dict(manifest, "quantization")
    if not isinstance(quant.get("audio"), str):
        raise _fail("quantization.audio must be a string (the audio graph's dtype)")
    if not isinstance(quant.get("decoder"), dict):
        raise _fail("quantization.decoder must be an object")
    emb = _dict(manifest, "embeddings")
    if emb.get("kind") not in EMBEDDING_KINDS:
        raise _fail(f"embeddings.kind must be one of {', '.join(EMBEDDING_KINDS)}, "
                    f"not {emb.get('kind')!r:.40}")
    if "files" in emb and (not isinstance(emb["files"], list)
                           or not all(isinstance(f, str) and f in files for f in emb["files"])):
        raise _fail("embeddings.files must list files of the bundle")
    context = manifest.get("max_context")
    if context is not None and (not _is_int(context) or not 1 <= context <= 10_000_000):
        raise _fail(f"max_context must be a whole number of tokens >= 1, not {context!r:.40}")
    model = _dict(manifest, "model")
    for key in ("audio", "language"):
        if not isinstance(model.get(key), dict):
            raise _fail(f"model.{key} must be an object of dimensions")


def _dimensions(kind, data: dict, where: str, least: int = 1, skip: tuple[str, ...] = ()
                ) -> dict[str, Any]:
    """Every field of the dataclass `kind` but `skip`, present and of its type (ints whole and
    >= least; layer indexes >= 0)."""
    values = {}
    for f in fields(kind):
        if f.name in skip:
            continue
        if f.name not in data:
            raise _fail(f"{where}.{f.name} is missing")
        value, default = data[f.name], f.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = _is_int(value) and value >= least
        elif isinstance(default, float):
            ok = (_is_int(value) or isinstance(value, float)) and value == value and abs(value) != float("inf")
        elif isinstance(default, str):
            ok = isinstance(value, str)
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple)) and all(_is_int(v) and v >= 0 for v in value)
            value = tuple(value) if ok else value
        else:
            ok = True
        if not ok:
            raise _fail(f"{where}.{f.name} has an unusable value {value!r:.40}")
        values[f.name] = value
    return values


def config_from_manifest(manifest: dict[str, Any]) -> MossAudioConfig:
    """The model dimensions of a checked manifest; BundleError when any is missing or unusable."""
    model = manifest.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("audio"), dict) \
            or not isinstance(model.get("language"), dict):
        raise _fail("model must hold the 'audio' and 'language' dimensions")
    audio = _dimensions(AudioEncoderConfig, model["audio"], "model.audio")
    language = _dimensions(LanguageConfig, model["language"], "model.language")
    top = {k: v for k, v in model.items() if k not in ("audio", "language")}
    top = _dimensions(MossAudioConfig, {**_TOP_DEFAULTS, **top}, "model", least=0, skip=_NESTED)
    try:
        config = MossAudioConfig(audio=AudioEncoderConfig(**audio),
                                 language=LanguageConfig(**language), **top)
        config.validate()
    except ConfigError as exc:
        raise _fail(f"model dimensions are unusable: {exc}") from None
    return config


# MossAudioConfig's fields that are not scalars of the manifest's "model" object.
_NESTED = ("audio", "language", "raw")
# Older bundles may lack the scalar fields: the release values (the config's defaults) hold.
_TOP_DEFAULTS = {f.name: f.default for f in fields(MossAudioConfig) if f.name not in _NESTED}


def _stamp_path(root: Path) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-moss" / "verified"
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24]
    return cache / f"{key}.json"


def _file_state(root: Path, files: dict[str, Any]) -> dict[str, list[int]]:
    return {name: [(root / name).stat().st_size, (root / name).stat().st_mtime_ns] for name in files}


def verify_bundle(root: str | Path, full: bool = False) -> Bundle:
    """Read and check a bundle; raise BundleError saying exactly what is wrong."""
    root = Path(root)
    manifest = read_manifest(root)
    config = config_from_manifest(manifest)  # every field checked before any file is hashed
    files: dict[str, dict[str, Any]] = manifest["files"]
    try:
        for name, entry in files.items():
            path = root / name
            if not path.is_file():
                raise BundleError(f"bundle {root} is incomplete: {name} is missing")
            size = path.stat().st_size
            if size != entry["bytes"]:
                raise BundleError(
                    f"bundle {root} is damaged: {name} has {size} bytes, the manifest says "
                    f"{entry['bytes']} (truncated or edited copy?)"
                )
            if not os.access(path, os.R_OK):
                raise BundleError(f"cannot read bundle file {path}: permission denied")
        state = _file_state(root, files)
        manifest_hash = sha256_file(root / MANIFEST_NAME)
    except OSError as exc:
        raise BundleError(f"cannot read bundle {root}: {exc.strerror or exc} "
                          f"({exc.filename or ''})") from None
    stamp = _stamp_path(root)
    trusted = False
    if not full and stamp.is_file():
        try:
            saved = json.loads(stamp.read_text())
            trusted = saved.get("manifest") == manifest_hash and saved.get("files") == state
        except (OSError, ValueError, AttributeError):
            trusted = False
    if not trusted:
        for name, entry in files.items():
            try:
                digest = sha256_file(root / name)
            except OSError as exc:
                raise BundleError(f"cannot read bundle file {root / name}: "
                                  f"{exc.strerror or exc}") from None
            if digest != entry["sha256"]:
                raise BundleError(
                    f"bundle {root} was modified: {name} does not match its sha256 in the manifest"
                )
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps({"manifest": manifest_hash, "files": state}))
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    return Bundle(path=root, manifest=manifest, config=config)


def default_special_ids() -> dict[str, int]:
    return {
        "audio_token": facts.AUDIO_TOKEN_ID,
        "audio_start": facts.AUDIO_START_ID,
        "audio_end": facts.AUDIO_END_ID,
        "im_start": facts.IM_START_ID,
        "im_end": facts.IM_END_ID,
        "endoftext": facts.ENDOFTEXT_ID,
        "think_start": facts.THINK_START_ID,
        "think_end": facts.THINK_END_ID,
    }
