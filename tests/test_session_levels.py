"""Sessions keep every ONNX Runtime graph optimization: a CUDA-targeted decoder (fp16
activations) run on the CPU computes garbage below the last level (ORT 1.32, measured), and on
an idle machine the lower levels did not load the 4B decoder any faster (benchmarks/NOTES.md)."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from edge_runtime.decoder import Decoder
from edge_runtime.ort_session import session_options


def test_sessions_use_every_optimization_level(tiny_checkpoint, bundle_factory):
    assert session_options(1).graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    decoder = Decoder(bundle_factory(tiny_checkpoint, "int4", "chunked") / "decoder.onnx", max_context=64,
                      threads=1)
    level = decoder.session.get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_other_levels_by_name_for_the_benchmarks():
    assert (session_options(1, optimization="extended").graph_optimization_level
            == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    with pytest.raises(KeyError):
        session_options(1, optimization="fastest")
