"""Bundles: what an export writes, and refusing damaged, edited or too-new bundles."""

from __future__ import annotations

import json
import shutil

import pytest

from edge_runtime.bundle import FORMAT_VERSION, MANIFEST_NAME, verify_bundle
from edge_runtime.errors import BundleError
from edge_moss_export.checkpoint import open_checkpoint


@pytest.fixture()
def bundle_copy(tmp_path, tiny_checkpoint, bundle_factory, monkeypatch):
    # A private cache dir so the verification stamp of one test never vouches for another.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = bundle_factory(tiny_checkpoint, "int4", "chunked")
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    return dst


def test_manifest_describes_the_bundle(bundle_copy, tiny_checkpoint):
    bundle = verify_bundle(bundle_copy, full=True)
    m = bundle.manifest
    assert m["format_version"] == FORMAT_VERSION
    assert m["encoder_mode"] == "chunked"
    assert m["quantization"]["decoder"]["quant"] == "int4"
    assert m["special_ids"]["audio_token"] == 151654
    assert m["time_markers"]["enabled"] is True
    assert m["source"]["name"] == open_checkpoint(tiny_checkpoint).name
    assert bundle.config == open_checkpoint(tiny_checkpoint).config
    on_disk = {p.relative_to(bundle_copy).as_posix() for p in bundle_copy.rglob("*")
               if p.is_file() and p.name != MANIFEST_NAME}
    assert set(m["files"]) == on_disk
    for name in ("audio.onnx", "decoder.onnx", "tokenizer/vocab.json", "tokenizer/merges.txt"):
        assert name in m["files"]


def test_truncated_file_is_refused(bundle_copy):
    data = bundle_copy / "decoder.onnx.data"
    size = data.stat().st_size
    with open(data, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(BundleError, match="decoder.onnx.data has .* bytes.*truncated"):
        verify_bundle(bundle_copy)


def test_edited_file_is_refused_even_after_a_good_load(bundle_copy):
    verify_bundle(bundle_copy)  # leaves a stamp
    vocab = bundle_copy / "tokenizer" / "vocab.json"
    raw = bytearray(vocab.read_bytes())
    raw[100] ^= 0x01  # same size, one bit different
    vocab.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="modified: tokenizer/vocab.json"):
        verify_bundle(bundle_copy)


def test_future_format_version_is_refused(bundle_copy):
    path = bundle_copy / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="newer than this edge-moss reads"):
        verify_bundle(bundle_copy)


def test_missing_file_and_missing_bundle(bundle_copy, tmp_path):
    (bundle_copy / "audio.onnx").unlink()
    with pytest.raises(BundleError, match="audio.onnx is missing"):
        verify_bundle(bundle_copy)
    with pytest.raises(BundleError, match="no bundle at"):
        verify_bundle(tmp_path / "nowhere")
    (tmp_path / "file.onnx").write_text("x")
    with pytest.raises(BundleError, match="is a file, not a bundle"):
        verify_bundle(tmp_path / "file.onnx")


def test_export_refuses_to_overwrite(tmp_path, tiny_checkpoint):
    from edge_runtime.errors import EdgeMossError
    from edge_moss_export.bundle_export import ExportOptions, export_bundle

    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(EdgeMossError, match="not empty"):
        export_bundle(tiny_checkpoint, out, ExportOptions(quant="int8", progress=False))
    assert (out / "keep.txt").read_text() == "mine"
