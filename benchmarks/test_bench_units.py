"""Unit checks of the benchmark's own arithmetic and plumbing (no timings asserted).

Run: python -m pytest benchmarks/test_bench_units.py -q
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks import memory, profile, roofline
from benchmarks.bundles import backbone_params, decoder_weight_bytes
from benchmarks.stats import rate, summary


def test_summary_matches_numpy():
    values = [3.0, 1.0, 2.0, 10.0]
    s = summary(values)
    assert s["median"] == pytest.approx(np.median(values))
    assert (s["min"], s["max"], s["n"]) == (1.0, 10.0, 4)
    assert summary([])["n"] == 0
    r = rate(100, [2.0, 4.0, 5.0])
    assert r["median"] == pytest.approx(25.0) and r["min"] == pytest.approx(20.0)


def test_decoder_weight_bytes_counts_fp16_cast_twice(tmp_path):
    w32 = numpy_helper.from_array(np.ones((4, 8), np.float32), "w32")
    w16 = numpy_helper.from_array(np.ones((8, 8), np.float16), "w16")
    cos = numpy_helper.from_array(np.ones((16, 2), np.float32), "cos_cache")
    nodes = [helper.make_node("Cast", ["w16"], ["w16f"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w32"], ["h"]),
             helper.make_node("MatMul", ["h", "w16f"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w32, w16, cos])
    path = tmp_path / "decoder.onnx"
    onnx.save(helper.make_model(graph), str(path), save_as_external_data=True, location="decoder.onnx.data",
              size_threshold=0)
    got = decoder_weight_bytes(path)
    assert got["disk"] == 4 * 8 * 4 + 8 * 8 * 2 + 16 * 2 * 4
    assert got["read_per_token"] == 4 * 8 * 4 + 2 * (8 * 8 * 2)  # cos_cache excluded, fp16 widened


def test_roofline_arithmetic(tmp_path):
    from edge_moss_export.fixture import fixture_config

    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(fixture_config("4b")))
    params = backbone_params(cfg_path)
    assert params["kv_values_per_token"] == 73_728  # model-facts.md: 36 x 8 x 128 x 2
    assert params["lm_head"] == 151_936 * 2560
    b = roofline.decode_bytes_per_token(1_000_000, 2560, "int8", params["kv_values_per_token"], 100)
    assert b["kv_cache"] == 73_728 * 4 * 100 and b["embedding_row"] == 2560
    assert roofline.decode_roofline(10.0, b["total"]) == pytest.approx(10e9 / b["total"])
    assert roofline.prefill_roofline(100.0, 50) == pytest.approx(1e9)


def test_profile_split_and_summary():
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
        {"cat": "Node", "name": "a_kernel_time", "ts": 10, "dur": 30, "args": {"op_name": "MatMul"}},
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        {"cat": "Node", "name": "b_kernel_time", "ts": 210, "dur": 20, "args": {"op_name": "Add"}},
        {"cat": "Session", "name": "model_run", "ts": 400, "dur": 100},
        {"cat": "Node", "name": "c_kernel_time", "ts": 410, "dur": 50, "args": {"op_name": "MatMul"}},
        {"cat": "Node", "name": "c_fence_before", "ts": 409, "dur": 1, "args": {"op_name": "MatMul"}},
    ]
    stages = profile.split_decoder_kernels(events, prefill_runs=2)
    assert [k["node"] for k in stages["prefill"]] == ["a", "b"]
    assert [k["node"] for k in stages["decode"]] == ["c"]
    ops = profile.summarise_ops(stages["prefill"] + stages["decode"])
    assert ops[0]["op"] == "MatMul" and ops[0]["ms"] == pytest.approx(0.08) and ops[0]["calls"] == 2
    assert sum(o["share"] for o in ops) == pytest.approx(1.0)


PEAK_CHECK = """
import sys
import numpy as np
from benchmarks import memory
if not memory.reset_peak():
    sys.exit(3)
before = memory.peak_mb()
block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
assert memory.peak_mb() >= before + 60, (before, memory.peak_mb())
del block
memory.reset_peak()
assert memory.peak_mb() < memory.process_peak_mb()
"""


def test_stage_peak_sees_an_allocation():
    # In a fresh process, as the benchmark's workers measure: inside a long pytest process the
    # allocator may hand back pages that are already resident, and the peak need not move.
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", PEAK_CHECK], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    if done.returncode == 3:
        pytest.skip("this kernel refuses to reset VmHWM")
    assert done.returncode == 0, done.stderr


def test_qwen3_checkpoint_is_the_backbone(tmp_path):
    """The genai peer's input: same tensors under Qwen3 names, loadable by transformers."""
    from safetensors import safe_open
    from transformers import Qwen3ForCausalLM

    from benchmarks.genai_peer import write_qwen3_checkpoint
    from edge_moss_export.checkpoint import open_checkpoint
    from edge_moss_export.fixture import write_fixture

    src = write_fixture(tmp_path / "ckpt", size="tiny") or tmp_path / "ckpt"
    out = write_qwen3_checkpoint(tmp_path / "ckpt", tmp_path / "qwen3")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen3" and cfg["architectures"] == ["Qwen3ForCausalLM"]
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    ckpt = open_checkpoint(tmp_path / "ckpt")
    expected = {("model." + n[len("language_model."):]) if n.startswith("language_model.") else n
                for n in ckpt.names() if n.startswith("language_model.") or n == "lm_head.weight"}
    assert set(index) == expected
    name = "model.layers.3.mlp.up_proj.weight"
    with safe_open(str(out / index[name]), framework="pt") as fh:
        got = fh.get_tensor(name)
    ref = ckpt.torch("language_model.layers.3.mlp.up_proj.weight", got.dtype)
    assert got.dtype == ref.dtype and bool((got == ref).all())
    model = Qwen3ForCausalLM.from_pretrained(str(out))
    assert model.config.num_hidden_layers == cfg["num_hidden_layers"]
    assert bool((model.model.layers[3].mlp.up_proj.weight.to(ref.dtype) == ref).all())
    del src


def test_link_bundle_except_leaves_out_one_graph_and_the_manifest(tmp_path):
    from benchmarks.bundles import link_bundle_except

    base, out = tmp_path / "base", tmp_path / "out"
    for rel in ("audio.onnx", "audio.onnx.data", "decoder.onnx", "manifest.json", "tokenizer/vocab.json"):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(rel)
    out.mkdir()
    link_bundle_except(base, out, "audio.onnx")
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert got == ["decoder.onnx", "tokenizer/vocab.json"]
    assert (out / "decoder.onnx").stat().st_ino == (base / "decoder.onnx").stat().st_ino  # linked, not copied
