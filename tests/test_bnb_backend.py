"""The torch + bitsandbytes backend against the fp32 torch reference (bitsandbytes runs on CPU).

Bounds are set from measurements on the tiny random-weight fixture (6 s clip, 104 prompt
positions), with headroom: 8-bit (LLM.int8, fp16 activations on the CPU) KL 2.0e-4, top-1 0.971,
greedy tokens identical; 4-bit (NF4) KL 3.2e-2, top-1 0.596. Random weights give nearly flat
logits, so top-1 is a harsh measure here; on a trained model both agree far better.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import system_deps

torch = system_deps.importorskip("torch", "export")
system_deps.importorskip("bitsandbytes", "test")

from conftest import test_clip  # noqa: E402
from edge_runtime.errors import MissingExtraError  # noqa: E402
from edge_runtime.features import log_mel  # noqa: E402
from edge_runtime.prompt import PromptBuilder  # noqa: E402
from edge_moss_export.reference import MossAudioReference  # noqa: E402
from edge_moss_quant import bnb_backend  # noqa: E402
from edge_moss_quant.bnb_backend import BnbMoss  # noqa: E402

QUESTION = "What is said?"


def kl_mean(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    lp = p_logits - np.logaddexp.reduce(p_logits, axis=-1, keepdims=True)
    lq = q_logits - np.logaddexp.reduce(q_logits, axis=-1, keepdims=True)
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


@pytest.fixture(scope="module")
def setup(tiny_checkpoint):
    torch.set_num_threads(1)
    ref = MossAudioReference.from_checkpoint(tiny_checkpoint)
    clip = test_clip(6.0, seed=1)
    mel = log_mel(clip)
    return tiny_checkpoint, ref, clip, mel


@pytest.fixture(scope="module")
def models(setup):
    ckpt = setup[0]
    return {mode: BnbMoss(ckpt, bnb=mode, threads=1, max_context=512) for mode in ("none", "8bit", "4bit")}


def prompt_ids(model: BnbMoss, clip: np.ndarray, question: str = QUESTION) -> list[int]:
    n = model.encode(clip).num_tokens
    built = PromptBuilder(model.tokenizer, time_markers=model.bundle.time_markers).build(n, question)
    return [int(i) for i in built.ids]


def reference_answer(ref, ids, mel, n: int) -> list[int]:
    tokens = ref.generate(ids, mel, "chunked", max_new_tokens=n)
    return [t for t in tokens if t not in (151645, 151643)]


def test_layers_replaced(models):
    import bitsandbytes as bnb

    for mode, cls in (("8bit", bnb.nn.Linear8bitLt), ("4bit", bnb.nn.Linear4bit)):
        model = models[mode].model
        kinds = {name: type(m) for name, m in model.named_modules()}
        assert kinds["language_model.layers.0.self_attn.q_proj"] is cls
        assert kinds["language_model.layers.35.mlp.down_proj"] is cls
        assert kinds["audio_adapter.gate_proj"] is cls and kinds["deepstack_audio_merger_list.2.up_proj"] is cls
        assert kinds["lm_head"] is torch.nn.Linear  # kept in the compute dtype
        assert kinds["audio_encoder.layers.0.fc1"] is torch.nn.Linear  # encoder only on request
        # 36 layers x 7 linears + 4 GatedMLPs x 3
        assert model.quantized_linears == 36 * 7 + 4 * 3


def test_unquantized_backend_equals_the_reference_and_the_onnx_bundle(setup, models, bundle_factory):
    """--bnb none: the plumbing (front end, prompt, cache, rollback) reproduces the reference.

    The backend wraps the same torch reference, so equal logits alone would compare the code with
    itself; the greedy tokens are also checked against the fp32 ONNX bundle, a separate
    implementation (graphs exported from export.audio_graph / written by export.decoder_graph).
    """
    from edge_runtime.api import EdgeMoss

    ckpt, ref, clip, mel = setup
    model = models["none"]
    model.ask(clip, "Anything else?", max_new_tokens=2)  # leaves a cache to roll back from
    got = model.ask(clip, QUESTION, max_new_tokens=10)
    want = reference_answer(ref, prompt_ids(model, clip), mel, 10)
    assert got.token_ids == want[: len(got.token_ids)] and len(got.token_ids) == min(10, len(want))
    onnx_answer = EdgeMoss(bundle_factory(ckpt, "fp32", "chunked"), threads=1).ask(
        clip, QUESTION, max_new_tokens=10)
    assert onnx_answer.token_ids == got.token_ids
    ids = prompt_ids(model, clip)
    np.testing.assert_array_equal(model.model.teacher_forced_logits(ids, mel, "chunked"),
                                  ref.teacher_forced_logits(ids, mel, "chunked"))


def quality(setup, model) -> dict[str, float]:
    _, ref, clip, mel = setup
    ids = prompt_ids(model, clip)
    want = ref.teacher_forced_logits(ids, mel, "chunked")
    got = model.model.teacher_forced_logits(ids, mel, "chunked")
    return {"kl": kl_mean(want, got), "top1": float((got.argmax(-1) == want.argmax(-1)).mean()),
            "rel": float(np.abs(got - want).max() / np.abs(want).max())}


def test_8bit_close_to_fp32(setup, models):
    q = quality(setup, models["8bit"])
    print(f"bnb 8-bit vs fp32: KL {q['kl']:.2e}, top-1 {q['top1']:.3f}, max rel {q['rel']:.3f}")
    assert q["kl"] <= 1e-3 and q["top1"] >= 0.9 and 0 < q["rel"] <= 0.1
    _, ref, clip, mel = setup
    got = models["8bit"].ask(clip, QUESTION, max_new_tokens=12).token_ids
    want = reference_answer(ref, prompt_ids(models["8bit"], clip), mel, 12)
    agree = np.mean([a == b for a, b in zip(got, want)])
    print(f"bnb 8-bit greedy agreement with fp32 over {len(got)} tokens: {agree:.2f}")
    assert agree >= 0.75


def test_4bit_error_reported_and_bounded(setup, models):
    q4 = quality(setup, models["4bit"])
    q8 = quality(setup, models["8bit"])
    print(f"bnb NF4 vs fp32: KL {q4['kl']:.2e}, top-1 {q4['top1']:.3f}, max rel {q4['rel']:.3f}")
    assert q4["kl"] <= 0.1 and q4["top1"] >= 0.4
    assert q4["kl"] > q8["kl"]  # 4 bits really quantize harder than 8


def test_cli_ask_torch_backend_json(setup, models, tmp_path, capsys):
    import soundfile as sf

    from edge_runtime.cli import main

    ckpt, _, clip, _ = setup
    wav = tmp_path / "clip.wav"
    sf.write(wav, clip, 16000)
    code = main(["ask", str(wav), QUESTION, "--backend", "torch", "--bnb", "8bit", "--model", str(ckpt),
                 "--json", "--max-new-tokens", "6", "--threads", "1", "--max-context", "512"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    # the file path goes through soundfile: same samples as the in-memory clip (float32 wav)
    direct = models["8bit"].ask(clip, QUESTION, max_new_tokens=6)
    assert result["token_ids"] == direct.token_ids and result["audio_tokens"] == direct.audio_tokens


def test_cli_errors(setup, tmp_path, capsys, monkeypatch):
    from edge_runtime.cli import main

    ckpt = setup[0]
    wav = tmp_path / "x.wav"  # inputs are checked before the model loads: give a real one
    wav.write_bytes(b"RIFF")
    assert main(["ask", str(wav), "q", "--bnb", "8bit", "--model", str(ckpt)]) == 2
    assert "--bnb applies to --backend torch only" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now fails
    with pytest.raises(MissingExtraError, match=r"pip install 'edge-moss\[gpu,export\]'"):
        bnb_backend.require_torch("4bit")
    bnb_backend.require_torch("none")  # no bitsandbytes needed without quantization
    assert main(["ask", str(wav), "q", "--backend", "torch", "--bnb", "4bit", "--model", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edge-moss: error: --bnb 4bit/8bit needs bitsandbytes: pip install 'edge-moss[gpu,export]'"]


def test_runtime_source_never_imports_torch():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "edge_runtime"
    pattern = re.compile(r"^\s*(import torch|from torch\b)", re.MULTILINE)
    offenders = [str(p) for p in root.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
