"""INT8 audio graph (quant.audio_quant) and `export --audio-quant int8`.

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
from quant.audio_quant import audio_graph_error, quantize_audio_graph, relative_error
from quant.blockwise import dequantize_blockwise, quantize_blockwise

ERROR_BOUND = 0.08


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
