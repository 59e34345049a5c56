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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import model_facts as facts
from .errors import BundleError
from .model_config import AudioEncoderConfig, LanguageConfig, MossAudioConfig

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
    root = Path(root)
    if not root.exists():
        raise BundleError(f"no bundle at {root} (make one with `edge-moss export CHECKPOINT -o {root}`)")
    if not root.is_dir():
        raise BundleError(f"{root} is a file, not a bundle folder (make one with `edge-moss export`)")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{root} is not an edge-moss bundle: it has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is damaged: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{path} is not an edge-moss bundle manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"{path} has no format version")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {root} has format version {version}, newer than this edge-moss reads "
            f"({FORMAT_VERSION}): upgrade edge-moss or re-export the bundle"
        )
    for key in ("model", "files", "special_ids", "time_markers", "encoder_mode", "quantization",
                "embeddings"):
        if key not in manifest:
            raise BundleError(f"{path} lacks the '{key}' entry")
    return manifest


def config_from_manifest(manifest: dict[str, Any]) -> MossAudioConfig:
    model = dict(manifest["model"])
    try:
        audio = dict(model.pop("audio"))
        audio["deepstack_encoder_layer_indexes"] = tuple(audio["deepstack_encoder_layer_indexes"])
        return MossAudioConfig(audio=AudioEncoderConfig(**audio),
                               language=LanguageConfig(**model.pop("language")), **model)
    except (KeyError, TypeError) as exc:
        raise BundleError(f"bundle manifest model dimensions are unusable: {exc}") from None


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
    files: dict[str, dict[str, Any]] = manifest["files"]
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
    state = _file_state(root, files)
    stamp = _stamp_path(root)
    manifest_hash = sha256_file(root / MANIFEST_NAME)
    trusted = False
    if not full and stamp.is_file():
        try:
            saved = json.loads(stamp.read_text())
            trusted = saved.get("manifest") == manifest_hash and saved.get("files") == state
        except (OSError, json.JSONDecodeError):
            trusted = False
    if not trusted:
        for name, entry in files.items():
            if sha256_file(root / name) != entry["sha256"]:
                raise BundleError(
                    f"bundle {root} was modified: {name} does not match its sha256 in the manifest"
                )
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps({"manifest": manifest_hash, "files": state}))
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    return Bundle(path=root, manifest=manifest, config=config_from_manifest(manifest))


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
