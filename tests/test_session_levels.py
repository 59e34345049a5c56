"""The CPU decoder with float32 activations is built at ORT's "extended" optimization level (a
shorter load) on the ground that the last level changes nothing in it; a CUDA-targeted fp16
graph run on the CPU keeps every level, because below the last one it computes garbage."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_runtime.decoder import Decoder
from edge_runtime.ort_session import FAST_LOAD_OPTIMIZATION, make_session, session_options


def _optimized_ops(graph, level, tmp_path):
    so = session_options(1, optimization=level)
    so.optimized_model_filepath = str(tmp_path / f"{level}.onnx")
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{level}.data")
    ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    model = onnx.load(str(tmp_path / f"{level}.onnx"), load_external_data=False)
    return collections.Counter((n.domain, n.op_type) for n in model.graph.node)


def _logits(decoder: Decoder, hidden: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    embeds = (rng.standard_normal((24, hidden)) * 0.5).astype(np.float32)
    deepstack = (rng.standard_normal((k, 24, hidden)) * 0.5).astype(np.float32)
    out = [decoder.forward(embeds[:20], deepstack[:, :20])]
    out += [decoder.forward(embeds[i:i + 1]) for i in range(20, 24)]
    return np.concatenate(out)


def _level(decoder: Decoder):
    return decoder.session.get_session_options().graph_optimization_level


@pytest.mark.parametrize("quant", ["int4", "fp32"])
def test_cpu_decoder_is_the_same_graph_and_logits_at_the_quicker_level(tiny_checkpoint, bundle_factory,
                                                                       quant, tmp_path):
    bundle = bundle_factory(tiny_checkpoint, quant, "chunked")
    graph = bundle / "decoder.onnx"
    fast = _optimized_ops(graph, FAST_LOAD_OPTIMIZATION, tmp_path)
    assert fast == _optimized_ops(graph, "all", tmp_path)
    if quant == "int4":
        assert fast[("com.microsoft", "MatMulNBits")] > 0
    chosen = Decoder(graph, max_context=64, threads=1)
    assert _level(chosen) == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    every = Decoder(graph, max_context=64, threads=1, session=make_session(graph, threads=1))
    assert _level(every) == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    d = chosen.dims
    np.testing.assert_array_equal(_logits(chosen, d.hidden_size, d.num_deepstack),
                                  _logits(every, d.hidden_size, d.num_deepstack))


def test_fp16_activation_graph_on_the_cpu_keeps_every_level(tiny_checkpoint, tmp_path):
    from edge_moss_export.checkpoint import open_checkpoint
    from edge_moss_export.decoder_graph import build_decoder

    ckpt = open_checkpoint(tiny_checkpoint)
    paths = {}
    for io in ("fp32", "fp16"):
        paths[io] = tmp_path / io / "decoder.onnx"
        paths[io].parent.mkdir()
        build_decoder(ckpt, ckpt.config, paths[io], "int4", max_context=128, progress=False, io_dtype=io)
    half = Decoder(paths["fp16"], ckpt.config, max_context=64, threads=1)
    assert half.cache_dtype == np.float16
    assert _level(half) == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    full = Decoder(paths["fp32"], ckpt.config, max_context=64, threads=1)
    h, k = ckpt.config.language.hidden_size, ckpt.config.num_deepstack
    want, got = _logits(full, h, k), _logits(half, h, k)
    assert np.abs(got - want).max() < 0.15 * np.abs(want).max()  # fp16 rounding, not garbage


def test_levels_are_the_ort_enums():
    assert session_options(1).graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert (session_options(1, optimization="extended").graph_optimization_level
            == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    with pytest.raises(KeyError):
        session_options(1, optimization="fastest")
