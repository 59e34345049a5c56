"""Quantized audio graphs (quant.audio_quant) and `export --audio-quant int8|int4`.

Layout check: the int8 graph at accuracy level 0 (exact dequantization, fp32 activations) must
equal the fp32 graph whose weights were replaced by numpy's dequantized copies of the same
blocks, built here independently of the pass. Error check: the int8 graph (level 4, int8
activations) against the fp32 graph stays below a bound set above the measured value (tiny
random weights: ~3.5-4.5 % relative on audio_embeds, ~2.5 % on deepstack; a random 32-layer
encoder amplifies per-matmul noise, so this is not what trained weights give).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import test_clip
from edge_runtime.api import EdgeMoss
from edge_runtime.audio_encoder import AudioEncoder
from edge_runtime.bundle import AUDIO_GRAPH, read_manifest, verify_bundle
from edge_runtime.features import log_mel
from edge_moss_quant.audio_quant import audio_graph_error, quantize_audio_graph, relative_error
from edge_moss_quant.blockwise import dequantize_blockwise, quantize_blockwise

ERROR_BOUND = 0.08  # int8: measured 3.6 % (audio_embeds) and 2.6 % (deepstack) on the tiny fixture


@pytest.fixture(scope="module")
def fp32_graph(tiny_checkpoint, bundle_factory):
    return bundle_factory(tiny_checkpoint, "fp32", "chunked") / AUDIO_GRAPH


def _fake_quant_graph(src, dst, block_size: int):
    """The fp32 graph with every MatMul/Gemm constant weight replaced by its dequantized copy."""
    model = onnx.load(str(src), load_external_data=True)
    weights = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.input[1] not in weights:
            continue
        t = weights[node.input[1]]
        b = numpy_helper.to_array(t)
        trans = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        w = b if trans else b.T  # [N, K]
        dq = dequantize_blockwise(quantize_blockwise(w, bits=8, block_size=block_size, symmetric=True))
        t.CopyFrom(numpy_helper.from_array((dq if trans else dq.T).astype(np.float32), t.name))
    onnx.save(model, str(dst), save_as_external_data=True, location=dst.name + ".data")
    return dst


def test_int8_graph_equals_dequantized_weights(fp32_graph, tmp_path):
    q8 = tmp_path / "q8" / "audio.onnx"
    info = quantize_audio_graph(fp32_graph, q8, block_size=32, accuracy_level=0)
    ops = Counter(n.op_type for n in onnx.load(str(q8), load_external_data=False).graph.node)
    src_ops = Counter(n.op_type for n in onnx.load(str(fp32_graph), load_external_data=False).graph.node)
    assert info["quantized"] == {"MatMul": 193, "Gemm": 12}  # 32 layers x 6 + stem; adapter + 3 mergers x 3
    assert ops["MatMulNBits"] == 205 and ops["Gemm"] == 0
    assert ops["MatMul"] == src_ops["MatMul"] - 193  # attention products stay
    fake = _fake_quant_graph(fp32_graph, tmp_path / "fake.onnx", block_size=32)
    a, b = AudioEncoder(fake, threads=1), AudioEncoder(q8, threads=1)
    for seconds, seed in [(2.5, 0), (9.3, 1)]:
        mel = log_mel(test_clip(seconds, seed))
        want, got = a.encode(mel), b.encode(mel)
        assert relative_error(want.embeds, got.embeds) < 1e-4
        assert relative_error(want.deepstack, got.deepstack) < 1e-4


def test_int8_graph_error_vs_fp32_is_bounded(fp32_graph, tmp_path):
    q8 = tmp_path / "audio.onnx"
    info = quantize_audio_graph(fp32_graph, q8)  # defaults: block 128, accuracy level 4
    assert info["bits"] == 8 and info["accuracy_level"] == 4
    err = audio_graph_error(fp32_graph, q8, seconds=(2.5, 6.3))
    print("int8 audio graph vs fp32 (tiny):", err)
    assert 0 < err["audio_embeds_rel"] < ERROR_BOUND
    assert 0 < err["deepstack_rel"] < ERROR_BOUND
    # An independent recomputation of the metric for one clip.
    mel = log_mel(test_clip(3.0, 4))
    want = AudioEncoder(fp32_graph, threads=1).encode(mel).embeds.astype(np.float64)
    got = AudioEncoder(q8, threads=1).encode(mel).embeds.astype(np.float64)
    assert relative_error(want, got) == pytest.approx(
        np.sqrt(((got - want) ** 2).sum() / (want ** 2).sum()), rel=1e-9)


def test_in_place_quantization_is_refused(fp32_graph):
    with pytest.raises(ValueError):
        quantize_audio_graph(fp32_graph, fp32_graph)


def test_export_with_int8_audio_graph(tiny_checkpoint, bundle_factory):
    bundle = bundle_factory(tiny_checkpoint, "int8", "chunked", audio_quant="int8")
    manifest = read_manifest(bundle)
    quant = manifest["quantization"]
    assert quant["audio"] == "int8"
    err = quant["audio_int8"]["error"]
    assert 0 < err["audio_embeds_rel"] < ERROR_BOUND and 0 < err["deepstack_rel"] < ERROR_BOUND
    assert not [f for f in manifest["files"] if "fp32" in f]  # the intermediate graph is gone
    assert not list(bundle.glob("*.fp32.onnx*"))
    verify_bundle(bundle, full=True)
    model = EdgeMoss(bundle, threads=1)
    result = model.ask(test_clip(3.0, 2), "What is this?", max_new_tokens=6, ignore_eos=True)
    assert len(result.token_ids) == 6
    # The default stays fp32.
    assert read_manifest(bundle_factory(tiny_checkpoint, "fp32", "chunked"))["quantization"]["audio"] == "fp32"


def test_int4_audio_graph_size_and_error_order(fp32_graph, tmp_path):
    """int4 (asymmetric, block 32, HQQ zero points) is ~0.6x the bytes of int8 and, on these random
    weights, has a larger error than int8: the price of the small bundle, stated not hidden."""
    from edge_moss_quant.audio_quant import SETTINGS

    q8, q4 = tmp_path / "q8" / "audio.onnx", tmp_path / "q4" / "audio.onnx"
    i8 = quantize_audio_graph(fp32_graph, q8, **SETTINGS["int8"])
    i4 = quantize_audio_graph(fp32_graph, q4, **SETTINGS["int4"])
    assert i4["bits"] == 4 and i4["method"] == "hqq" and not i4["symmetric"]
    assert i4["quantized"] == i8["quantized"]
    assert i4["bytes"] < 0.75 * i8["bytes"]
    e8 = audio_graph_error(fp32_graph, q8, seconds=(2.5,))
    e4 = audio_graph_error(fp32_graph, q4, seconds=(2.5,))
    print("audio graph error (tiny): int8", e8["audio_embeds_rel"], "int4", e4["audio_embeds_rel"])
    # measured on this fixture: int8 3.6 %, int4 33 % (audio_embeds, 2.5 s clip)
    assert e8["audio_embeds_rel"] < e4["audio_embeds_rel"] < 0.5


def test_export_compact_int4_bundle(tiny_checkpoint, tmp_path, capsys):
    """`export --compact`: int4 audio graph and embeddings, blocks of 128; records the audio
    error, verifies and runs; an explicit option wins over the preset; int8 refuses it."""
    from edge_runtime.cli import main

    bundle = tmp_path / "compact"
    assert main(["export", str(tiny_checkpoint), "-o", str(bundle), "--compact",
                 "--lm-head-bits", "8"]) == 0
    manifest = read_manifest(bundle)
    quant = manifest["quantization"]
    assert manifest["recipe"] == "compact"
    assert quant["audio"] == "int4" and manifest["embeddings"]["kind"] == "int4"
    assert quant["decoder"]["quant"] == "int4" and quant["decoder"]["block_size"] == 128
    assert quant["decoder"]["lm_head_quant"] == "int8"
    assert 0 < quant["audio_int4"]["error"]["audio_embeds_rel"] < 0.5  # measured 0.33
    verify_bundle(bundle, full=True)
    model = EdgeMoss(bundle, threads=1)
    result = model.ask(test_clip(3.0, 2), "What is this?", max_new_tokens=6, ignore_eos=True)
    assert len(result.token_ids) == 6

    from edge_moss_export.bundle_export import ExportOptions

    mixed = ExportOptions(quant="int4", compact=True, audio_quant="int8", block_size=32).resolved()
    assert (mixed.audio_quant, mixed.block_size, mixed.embeddings) == ("int8", 32, "int4")
    # In-process (a subprocess would spend seconds importing torch to print one line): main()
    # prints the error and returns; an exception would fail the test here.
    capsys.readouterr()
    assert main(["export", str(tiny_checkpoint), "-o", str(tmp_path / "x"), "--quant", "int8",
                 "--compact"]) != 0
    err = capsys.readouterr().err
    assert "--compact" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_default_audio_precision_by_bundle_kind():
    """int4 CPU bundles take the int8 audio graph (measured small end to end at 4B shape);
    fp32 stays exact, CUDA and the others keep fp16."""
    from edge_moss_export.bundle_export import default_audio_quant

    assert default_audio_quant("int4", "cpu") == "int8"
    assert default_audio_quant("fp32", "cpu") == "fp32"
    assert default_audio_quant("int8", "cpu") == "fp16"
    assert default_audio_quant("fp16", "cpu") == "fp16"
    assert default_audio_quant("int4", "cuda") == "fp16"
    assert default_audio_quant("fp32", "cuda") == "fp16"


def test_int4_bundle_defaults_to_int8_audio(tiny_checkpoint, bundle_factory):
    quant = read_manifest(bundle_factory(tiny_checkpoint, "int4", "chunked"))["quantization"]
    assert quant["audio"] == "int8"
    assert 0 < quant["audio_int8"]["error"]["audio_embeds_rel"] < ERROR_BOUND
