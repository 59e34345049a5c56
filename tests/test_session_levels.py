"""The decoder's session is built at ORT's "extended" optimization level (a shorter load) on
the ground that the last level changes nothing in it: checked here on the exported graphs."""

from __future__ import annotations

import collections

import onnx
import pytest

from edge_runtime.ort_session import OPTIMIZATION_LEVELS, session_options


def _optimized_ops(graph, level, tmp_path):
    import onnxruntime as ort

    so = session_options(1, optimization=level)
    so.optimized_model_filepath = str(tmp_path / f"{level}.onnx")
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{level}.data")
    ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    model = onnx.load(str(tmp_path / f"{level}.onnx"), load_external_data=False)
    return collections.Counter((n.domain, n.op_type) for n in model.graph.node)


@pytest.mark.parametrize("quant", ["int4", "fp32"])
def test_decoder_graph_is_the_same_at_the_extended_and_the_last_level(tiny_checkpoint, bundle_factory,
                                                                      quant, tmp_path):
    bundle = bundle_factory(tiny_checkpoint, quant, "chunked")
    extended = _optimized_ops(bundle / "decoder.onnx", "extended", tmp_path)
    assert extended == _optimized_ops(bundle / "decoder.onnx", "all", tmp_path)
    if quant == "int4":
        assert extended[("com.microsoft", "MatMulNBits")] > 0


def test_levels_are_the_ort_enums():
    import onnxruntime as ort

    assert OPTIMIZATION_LEVELS["extended"] == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert session_options(1).graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with pytest.raises(KeyError):
        session_options(1, optimization="fastest")
