"""GGUF round trip: a tiny checkpoint written the way CrispASR's converter + Q4_K quantizer lay it
out, read back under the checkpoint's names with the right shapes and a small error."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from edge_moss_quant.gguf_weights import GGUFError, GGUFWeights, gguf_name, quantize_q4_k, write_gguf  # noqa: E402


def test_names_follow_the_converter():
    expected = {
        "audio_encoder.conv1.weight": "enc.conv1.weight",
        "audio_encoder.stem_proj.bias": "enc.stem_proj.bias",
        "audio_encoder.layer_norm.weight": "enc.norm.weight",
        "audio_encoder.layers.3.self_attn.out_proj.weight": "enc.blk.3.attn.o.weight",
        "audio_encoder.layers.3.self_attn.k_proj.weight": "enc.blk.3.attn.k.weight",
        "audio_encoder.layers.3.self_attn_layer_norm.bias": "enc.blk.3.attn_norm.bias",
        "audio_encoder.layers.3.final_layer_norm.weight": "enc.blk.3.ffn_norm.weight",
        "audio_encoder.layers.3.fc2.weight": "enc.blk.3.ffn.fc2.weight",
        "audio_adapter.gate_proj.weight": "adapter.gate.weight",
        "deepstack_audio_merger_list.2.down_proj.weight": "deepstack.2.down.weight",
        "language_model.embed_tokens.weight": "llm.embed.weight",
        "language_model.norm.weight": "llm.final_norm.weight",
        "language_model.layers.7.self_attn.q_norm.weight": "llm.blk.7.attn.q_norm.weight",
        "language_model.layers.7.self_attn.o_proj.weight": "llm.blk.7.attn.o.weight",
        "language_model.layers.7.mlp.up_proj.weight": "llm.blk.7.ffn.up.weight",
        "language_model.layers.7.input_layernorm.weight": "llm.blk.7.attn_norm.weight",
        "language_model.layers.7.post_attention_layernorm.weight": "llm.blk.7.ffn_norm.weight",
        "lm_head.weight": "llm.lm_head.weight",
    }
    assert {k: gguf_name(k) for k in expected} == expected


def test_q4_k_encoder_matches_ggml_layout():
    """Our packing, dequantized by the gguf package's Q4_K reader, is the reconstruction we meant."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 512)).astype(np.float32) * 0.05
    w[0, :32] += 0.3  # a sub-block with no negative values (its minimum is clamped to 0)
    blocks = quantize_q4_k(w)
    assert blocks.shape == (6, 2 * 144) and blocks.dtype == np.uint8
    got = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_K).reshape(w.shape)
    rel = np.linalg.norm(got - w) / np.linalg.norm(w)
    assert 0.02 < rel < 0.12  # 4-bit error: present, and small
    # every value lies within one step of its sub-block's grid
    step = (w.reshape(-1, 32).max(1) - np.minimum(w.reshape(-1, 32).min(1), 0)) / 15
    assert np.all(np.abs(got - w).reshape(-1, 32).max(1) <= step * 1.6 + 1e-6)
    with pytest.raises(ValueError):
        quantize_q4_k(np.zeros((2, 100), np.float32))


def test_tiny_checkpoint_round_trip(tiny_checkpoint, tmp_path):
    from edge_moss_export.checkpoint import open_checkpoint

    ckpt = open_checkpoint(tiny_checkpoint)
    tensors, kinds = {}, {}
    for name in ckpt.names():
        array = ckpt.numpy(name)
        if array.ndim == 1:
            kind = "F32"
        elif array.shape[-1] % 256 == 0 and array.ndim == 2:
            kind = "Q4_K"
        elif array.shape[-1] % 32 == 0 and array.ndim == 2 and name.startswith(("language_model", "lm_head")):
            kind = "Q8_0"
        else:
            kind = "F16"
        tensors[name], kinds[name] = (array, kind), kind
    # tiny rows are narrower than a Q4_K super-block: add one that is not, under a real name
    wide = "language_model.layers.0.mlp.down_proj.weight"
    rng = np.random.default_rng(1)
    wide_values = rng.standard_normal((64, 512)).astype(np.float32) * 0.04
    path = write_gguf(tmp_path / "tiny.gguf", {**tensors, wide: (wide_values, "Q4_K")})

    names = [n for n in ckpt.names() if n != wide]
    weights = GGUFWeights(path, names + [wide])
    assert set(weights.names()) == set(names) | {wide}
    counts = weights.types()
    assert counts.get("Q4_K") == 1 and counts.get("Q8_0", 0) > 0 and counts.get("F16", 0) > 0
    for name in names:
        ref = tensors[name][0]
        got = weights.numpy(name)
        assert got.shape == ref.shape, name
        rel = np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12)
        assert rel < {"F32": 1e-7, "F16": 1e-3, "Q8_0": 1e-2}[kinds[name]], (name, rel)
    got = weights.numpy(wide)
    assert got.shape == (64, 512)
    assert 0.02 < np.linalg.norm(got - wide_values) / np.linalg.norm(wide_values) < 0.12

    with pytest.raises(GGUFError):
        GGUFWeights(path, names + ["language_model.layers.99.mlp.up_proj.weight"])
