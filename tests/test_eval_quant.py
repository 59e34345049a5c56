"""`edge-moss eval-quant` and quant.eval: the metrics, the comparison, the manifest record, the CLI.

The metric code is checked against torch's own log_softmax / KL, and the whole pipeline against
a case whose answer is known: an fp32 bundle is the torch reference up to float rounding, so it
must agree on every position with KL ~ 0. The quantized bundles' bounds sit below the values
measured on the random tiny fixture (int8 vs fp32: top1 ~0.95, KL ~5e-4; int4: top1 ~0.67,
KL ~0.03) with margin; random weights have tiny top-2 logit gaps, which exaggerates flips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_runtime.bundle import read_manifest, verify_bundle
from edge_runtime.cli import main
from edge_moss_quant.eval import (BundleModel, compare_logits, evaluate, first_divergence, open_reference,
                        record_in_manifest, reference_run, score)

torch.set_num_threads(1)
CLIPS = 2  # 2.5 s (under one encoder chunk) and 10 s, x 3 questions
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundles(tiny_checkpoint, bundle_factory):
    return {q: bundle_factory(tiny_checkpoint, q, "chunked") for q in ("fp32", "int8", "int4")}


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    return open_reference(tiny_checkpoint, "chunked")


def _run_of(reference_model, bundles):
    """reference_run() on CLIPS clips with the bundles' prompts (one tokenizer for all of them)."""
    builder = BundleModel(bundles["fp32"], threads=1).model.prompt_builder()
    return reference_run(reference_model, builder, "chunked", clips=CLIPS)


# evaluate() is reference_run() + score(); test_reference_run_scores_like_evaluate pins that both
# give the same numbers. The reference runs (greedy answers + logits, the slow part) are the same
# for every bundle scored against them, so each is computed once per module.
@pytest.fixture(scope="module")
def checkpoint_run(reference, bundles):
    return _run_of(reference, bundles)


@pytest.fixture(scope="module")
def fp32_bundle_run(bundles):
    return _run_of(BundleModel(bundles["fp32"], threads=1), bundles)


def test_metrics_equal_torch():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((7, 50)).astype(np.float32) * 3
    got = ref + rng.standard_normal((7, 50)).astype(np.float32) * 0.5
    got[2] = ref[2]  # one identical row
    m = compare_logits(ref, got)
    lp = torch.log_softmax(torch.from_numpy(ref).double(), -1)
    lq = torch.log_softmax(torch.from_numpy(got).double(), -1)
    kl = torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="none").sum(-1).mean()
    assert m["kl"] == pytest.approx(float(kl), rel=1e-9)
    assert m["top1"] == pytest.approx(float((ref.argmax(1) == got.argmax(1)).mean()))
    assert m["rel"] == pytest.approx(float(torch.linalg.norm(torch.from_numpy(got - ref))
                                           / torch.linalg.norm(torch.from_numpy(ref))), rel=1e-6)
    same = compare_logits(ref, ref)
    assert same == {"top1": 1.0, "kl": 0.0, "rel": 0.0}
    with pytest.raises(ValueError):
        compare_logits(ref, got[:3])


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([4, 2], [1, 2]) == 0


def test_fp32_bundle_matches_reference_exactly(bundles, checkpoint_run):
    """The metric's own check: fp32 bundle == torch reference up to rounding."""
    result = score(BundleModel(bundles["fp32"], threads=1), checkpoint_run)
    s = result.summary
    assert s["cases"] == 6 and s["positions"] == 6 * 32
    assert s["top1"] == 1.0
    assert s["kl"] < 1e-8
    assert s["rel"] < 1e-4
    assert s["diverged_cases"] == 0
    assert {c.clip_seconds for c in result.cases} == {2.5, 10.0}


def test_quantized_bundles_vs_checkpoint_and_fp32_bundle(bundles, checkpoint_run, fp32_bundle_run):
    results = {}
    for quant in ("int8", "int4"):
        model = BundleModel(bundles[quant], threads=1)
        results[quant] = score(model, checkpoint_run).summary
        # The fp32 bundle is the reference up to rounding, so it gives the same numbers.
        via_bundle = score(model, fp32_bundle_run).summary
        assert via_bundle["top1"] == pytest.approx(results[quant]["top1"], abs=1 / 192 + 1e-9)
        assert via_bundle["kl"] == pytest.approx(results[quant]["kl"], rel=1e-2)
    print("eval-quant vs checkpoint (tiny):", results)
    int8, int4 = results["int8"], results["int4"]
    # measured: int8 top1 0.917, KL 5.6e-4, rel 0.033; int4 top1 0.63, KL 0.034, rel 0.26
    assert int8["top1"] >= 0.85
    assert 0 < int8["kl"] <= 2e-3
    assert int8["rel"] < 0.06
    assert int4["kl"] <= 0.06
    assert int4["rel"] < 0.4
    assert int4["kl"] > int8["kl"] and int4["rel"] > int8["rel"]
    assert int4["top1"] <= int8["top1"]


def test_reference_run_scores_like_evaluate(bundles, reference):
    """One reference run scored against a bundle gives evaluate()'s numbers, and can be reused."""
    model = BundleModel(bundles["int4"], threads=1)
    run = reference_run(reference, model.model.prompt_builder(), model.encoder_mode, clips=1,
                        answer_tokens=8)
    assert len(run.cases) == 3 and all(len(c.answer) == 8 for c in run.cases)
    assert all(c.logits.shape[0] == 8 for c in run.cases)
    direct = evaluate(model, reference, clips=1, answer_tokens=8).summary
    assert score(model, run).summary == direct
    assert score(BundleModel(bundles["int8"], threads=1), run).summary["cases"] == 3


def test_cli_json_records_in_manifest_and_bundle_still_verifies(bundles, capsys, tmp_path):
    import shutil

    bundle = tmp_path / "int8"
    shutil.copytree(bundles["int8"], bundle)
    assert main(["eval-quant", str(bundle), "--reference", str(bundles["fp32"]), "--clips", "1",
                 "--tokens", "8", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["cases"] == 3 and out["summary"]["positions"] == 24
    assert out["bundle"]["decoder"].startswith("int8 (rtn, symmetric, blocks of 128")
    assert out["reference"]["kind"] == "bundle"
    assert read_manifest(bundle)["eval_quant"] == out
    verify_bundle(bundle, full=True)  # the manifest is not in its own file list


def test_cli_table(bundles, capsys, tmp_path):
    import shutil

    bundle = tmp_path / "int4"
    shutil.copytree(bundles["int4"], bundle)
    before = read_manifest(bundle)
    assert main(["eval-quant", str(bundle), "-r", str(bundles["fp32"]), "--clips", "1",
                 "--tokens", "4", "--threads", "1", "--no-record"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert any(line.split()[:3] == ["clip", "s", "q"] for line in lines)
    rows = [line for line in lines if line.strip().startswith("2.5")]
    assert len(rows) == 3
    assert any(line.strip().startswith("all") for line in lines)
    assert read_manifest(bundle) == before  # --no-record


def test_record_is_atomic_and_replaces_previous(bundles, tmp_path, reference):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(bundles["fp32"], bundle)
    result = evaluate(BundleModel(bundle, threads=1), reference, clips=1, answer_tokens=2)
    record_in_manifest(bundle, result)
    record_in_manifest(bundle, result)
    assert read_manifest(bundle)["eval_quant"]["summary"] == result.summary
    assert not list(bundle.glob("*.tmp"))
    verify_bundle(bundle, full=True)


def test_cli_errors(bundles, tmp_path, capsys, tiny_checkpoint, bundle_factory):
    assert main(["eval-quant", str(bundles["int8"]), "--reference", str(bundles["int8"])]) == 2
    assert main(["eval-quant", str(bundles["int8"]), "--reference", str(tmp_path)]) == 2
    assert main(["eval-quant", str(bundles["int8"]), "--reference", str(bundles["fp32"]),
                 "--clips", "0"]) == 2
    full = bundle_factory(tiny_checkpoint, "fp32", "full")
    assert main(["eval-quant", str(bundles["int8"]), "--reference", str(full)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "encoder" in err


BLOCKER = """
import importlib.abc, sys
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _Blocker())
"""


def test_bundle_reference_runs_without_torch(bundles, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(REPO)]))
    cmd = [sys.executable, "-m", "edge_runtime.cli", "eval-quant", str(bundles["int4"]),
           "--reference", str(bundles["fp32"]), "--clips", "1", "--tokens", "4", "--threads", "1",
           "--json", "--no-record"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["positions"] == 12
    # ... and a checkpoint reference there is a clear one-line error, not a traceback.
    cmd[cmd.index("--reference") + 1] = str(Path(read_manifest(bundles["fp32"])["source"]["path"]))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "build tools" in done.stderr


# ----------------------------------------------------------------------------- int4 methods

def test_hqq_method_packs_for_matmul_nbits_and_beats_rtn():
    """--method hqq: integer zero points (the fast kernel path), reconstruction at least as good
    as round-to-nearest, and the same packing as the other methods (checked by dequantizing)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edge_moss_quant.blockwise import dequantize_blockwise, quantize_blockwise
    from edge_moss_quant.hqq import hqq_blocks

    rng = np.random.default_rng(5)
    w = (rng.standard_normal((64, 256)) * 0.02).astype(np.float32)
    errs = {m: np.linalg.norm(dequantize_blockwise(quantize_blockwise(w, 4, 32, False, m)) - w)
            for m in ("rtn", "mse", "hqq")}
    assert errs["hqq"] < errs["rtn"]
    # The blocks quantize_blockwise packed are hqq_blocks' codes, scales and zero points.
    codes, scales, zeros = hqq_blocks(w.reshape(64, 8, 32), 4)
    q = quantize_blockwise(w, 4, 32, False, "hqq")
    np.testing.assert_allclose(dequantize_blockwise(q),
                               ((codes.astype(np.float32) - zeros[..., None]) * scales[..., None]).reshape(64, 256),
                               rtol=0, atol=1e-7)
    assert q.zero_points is not None and q.zero_points.dtype == np.uint8
    # ORT's kernel reads the packed form the same way (exact path, accuracy level 0).
    node = helper.make_node("MatMulNBits", ["A", "B", "scales", "zp"], ["Y"], domain="com.microsoft",
                            K=256, N=64, bits=4, block_size=32, accuracy_level=0)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, 256])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 64])],
        [numpy_helper.from_array(q.packed, "B"), numpy_helper.from_array(q.scales, "scales"),
         numpy_helper.from_array(q.zero_points, "zp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    a = rng.standard_normal((3, 256)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    np.testing.assert_allclose(y, a @ dequantize_blockwise(q).T, rtol=0, atol=1e-5)
    # Symmetric blocks have no zero point to fit: hqq falls back to the clip search.
    np.testing.assert_array_equal(quantize_blockwise(w, 8, 32, True, "hqq").packed,
                                  quantize_blockwise(w, 8, 32, True, "mse").packed)
