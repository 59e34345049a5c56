"""The manifest reader: every field the runtime reads is checked when a bundle opens, and no
manifest (hypothesis fuzz) makes it raise anything but the project's own errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.bundle import (
    FORMAT_NAME,
    MANIFEST_NAME,
    check_manifest,
    config_from_manifest,
    default_special_ids,
    read_manifest,
    verify_bundle,
)
from edge_runtime.errors import BundleError, EdgeMossError
from edge_runtime.model_config import AudioEncoderConfig, LanguageConfig, MossAudioConfig

ROOT = Path(__file__).resolve().parents[1]
HEX = "0" * 64


def good_manifest() -> dict:
    """A manifest as export writes it (files described, not present)."""
    config = MossAudioConfig(audio=AudioEncoderConfig(d_model=64, output_dim=64, encoder_attention_heads=4),
                             language=LanguageConfig(hidden_size=64, num_attention_heads=4,
                                                     num_key_value_heads=2, head_dim=16))
    names = ["audio.onnx", "decoder.onnx", "decoder.onnx.data", "embed_tokens.npy",
             "tokenizer/vocab.json", "tokenizer/merges.txt"]
    return {
        "format": FORMAT_NAME, "format_version": 1, "created_by": "edge-moss test",
        "source": {"name": "moss-audio-tiny", "path": "/nowhere"},
        "model": config.to_dict(), "special_ids": default_special_ids(),
        "time_markers": {"enabled": True, "every_seconds": 2, "audio_tokens_per_second": 12.5},
        "encoder_mode": "chunked", "target": "cpu", "max_context": 4096,
        "quantization": {"audio": "fp32", "decoder": {"quant": "fp32"}},
        "embeddings": {"kind": "fp32", "files": ["embed_tokens.npy"]},
        "files": {name: {"bytes": 10, "sha256": HEX} for name in names},
    }


def opens(manifest) -> None:
    check_manifest(manifest, "b")
    config_from_manifest(manifest)


def test_the_good_manifest_opens():
    opens(good_manifest())
    manifest = json.loads(json.dumps(good_manifest()))  # as read back from disk (lists, not tuples)
    assert config_from_manifest(manifest).audio.deepstack_encoder_layer_indexes == (8, 16, 24)


def _set(manifest, path, value):
    target = manifest
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value


BROKEN = [
    (("encoder_mode",), "streaming", "encoder_mode must be one of chunked, full"),
    (("encoder_mode",), KeyError, "encoder_mode must be one of"),
    (("special_ids",), KeyError, "the 'special_ids' entry is missing"),
    (("special_ids",), [1, 2], "'special_ids' must be an object"),
    (("special_ids", "im_end"), "151645", "special_ids.im_end must be a token id"),
    (("special_ids", "endoftext"), KeyError, "special_ids.endoftext"),
    (("time_markers", "enabled"), "yes", "time_markers.enabled must be true or false"),
    (("embeddings", "kind"), "int3", "embeddings.kind must be one of"),
    (("embeddings",), None, "'embeddings' must be an object"),
    (("embeddings", "files"), ["../../etc/passwd"], "embeddings.files must list files"),
    (("quantization", "audio"), 8, "quantization.audio must be a string"),
    (("files",), [], "'files' must be an object"),
    (("files", "decoder.onnx"), {"bytes": "10", "sha256": HEX}, "files['decoder.onnx'] must be"),
    (("files", "decoder.onnx"), {"bytes": 10, "sha256": "xyz"}, "files['decoder.onnx'] must be"),
    (("files", "audio.onnx"), KeyError, "files lacks audio.onnx"),
    (("files", "../outside"), {"bytes": 1, "sha256": HEX}, "is not a plain path inside the bundle"),
    (("files", "/etc/passwd"), {"bytes": 1, "sha256": HEX}, "is not a plain path"),
    (("max_context",), -5, "max_context must be a whole number"),
    (("max_context",), 1.5, "max_context must be a whole number"),
    (("format_version",), "1", "format_version must be a whole number"),
    (("model",), "tiny", "'model' must be an object"),
    (("model", "audio"), KeyError, "model.audio must be an object"),
    (("model", "audio", "d_model"), KeyError, "model.audio.d_model is missing"),
    (("model", "audio", "d_model"), "64", "model.audio.d_model has an unusable value"),
    (("model", "audio", "encoder_attention_heads"), 0, "encoder_attention_heads has an unusable"),
    (("model", "language", "rope_theta"), "big", "model.language.rope_theta has an unusable"),
    (("model", "language", "num_key_value_heads"), True, "num_key_value_heads has an unusable"),
    (("model", "audio", "deepstack_encoder_layer_indexes"), [8, 99], "model dimensions are unusable"),
    (("model", "tie_word_embeddings"), "no", "model.tie_word_embeddings has an unusable"),
]


@pytest.mark.parametrize("path, value, words", BROKEN, ids=[".".join(p) for p, _, _ in BROKEN])
def test_each_broken_field_is_one_bundle_manifest_line(path, value, words):
    manifest = good_manifest()
    _set(manifest, path, value)
    with pytest.raises(BundleError) as info:
        opens(manifest)
    message = str(info.value)
    assert words in message and "\n" not in message
    assert message.startswith("bundle manifest: ")


def write_manifest_bytes(root: Path, data: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_NAME).write_bytes(data)
    return root


@pytest.mark.parametrize("data, words", [
    (b"{", "is damaged"), (b"\xff\xfe{}", "is damaged"), (b"[1]", "not an edge-moss bundle manifest"),
    (b"[" * 100_000, "is damaged"), (b'{"format": "edge-moss-bundle"}', "format_version"),
])
def test_unreadable_manifests(tmp_path, data, words):
    with pytest.raises(BundleError, match=words):
        read_manifest(write_manifest_bytes(tmp_path / "b", data))


def test_a_bundle_file_that_cannot_be_read_says_so(tmp_path, monkeypatch):
    root = write_manifest_bytes(tmp_path / "b", json.dumps(good_manifest()).encode())
    for name, entry in good_manifest()["files"].items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * entry["bytes"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def denied(path, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("edge_runtime.bundle.sha256_file", denied)
    with pytest.raises(BundleError, match="cannot read bundle .*Permission denied"):
        verify_bundle(root)


def test_cli_names_the_broken_field_in_one_line(tmp_path):
    manifest = good_manifest()
    manifest["encoder_mode"] = 7
    root = write_manifest_bytes(tmp_path / "b", json.dumps(manifest).encode())
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"RIFF")  # never read: the bundle is refused first
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "ask", str(wav), "hi", "-m",
                           str(root)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "edge-moss: error: bundle manifest: encoder_mode must be one of chunked, full, not 7"]


# ---- fuzz --------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                       max_size=4),
    max_leaves=12)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))


ALL_PATHS = [p for p in _paths(good_manifest()) if p]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.one_of(st.just(KeyError), json_values)),
                      min_size=1, max_size=4))
def test_fuzz_mutated_manifests_raise_only_bundle_errors(edits):
    manifest = copy.deepcopy(good_manifest())
    for path, value in edits:
        try:
            _set(manifest, path, value)
        except (KeyError, TypeError):
            pass  # an earlier edit removed or replaced the parent
    try:
        opens(manifest)
    except EdgeMossError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)))
def test_fuzz_manifest_files_raise_only_bundle_errors(tmp_path, data):
    root = write_manifest_bytes(tmp_path / "fuzz", data)
    try:
        config_from_manifest(read_manifest(root))
    except EdgeMossError:
        pass
