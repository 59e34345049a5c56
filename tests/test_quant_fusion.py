"""Fused q/k/v and gate/up linears in the decoder graph: the same model as the separate ones.

fp32: the fused graph matches transformers' Qwen3Model as the unfused one does. int4/int8: the
stacked weight quantizes to exactly the parts' codes, so the logits and greedy tokens agree with
the unfused graph's, and quant.bundle_weights reads the parts back out of the stacked weight.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_runtime.decoder import Decoder  # noqa: E402
from edge_moss_export.checkpoint import open_checkpoint  # noqa: E402
from edge_moss_export.decoder_graph import build_decoder, decoder_metadata  # noqa: E402
from edge_moss_export.reference import MossAudioReference  # noqa: E402


def _inputs(cfg, length=40, seed=0):
    rng = np.random.default_rng(seed)
    hidden, k = cfg.language.hidden_size, cfg.num_deepstack
    embeds = (rng.standard_normal((length, hidden)) * 0.5).astype(np.float32)
    deepstack = np.zeros((k, length, hidden), dtype=np.float32)
    deepstack[:, 5:20] = rng.standard_normal((k, 15, hidden)) * 0.5
    return embeds, deepstack


def _logits(path, embeds, deepstack):
    dec = Decoder(path, max_context=128, threads=1)
    return dec.forward(embeds, deepstack, logits_to_keep=len(embeds))


def _greedy(path, embeds, deepstack, steps=8):
    dec = Decoder(path, max_context=128, threads=1)
    logits = dec.forward(embeds, deepstack, logits_to_keep=1)[-1]
    table = np.random.default_rng(5).standard_normal((logits.shape[-1], embeds.shape[1])).astype(np.float32)
    tokens = []
    for _ in range(steps):
        tokens.append(int(np.argmax(logits)))
        step = table[tokens[-1]][None] * 0.5
        logits = dec.forward(step, np.zeros((deepstack.shape[0], 1, embeds.shape[1]), np.float32),
                             logits_to_keep=1)[-1]
    return tokens


def _torch_logits(ckpt, embeds, deepstack):
    ref = MossAudioReference.from_checkpoint(ckpt)
    lm, ds = ref.language_model, torch.from_numpy(deepstack)
    hooks = []
    for i in range(ds.shape[0]):
        def add(_module, _inputs, output, i=i):
            return (output[0] + ds[i][None], *output[1:]) if isinstance(output, tuple) else output + ds[i][None]
        hooks.append(lm.layers[i].register_forward_hook(add))
    try:
        with torch.no_grad():
            out = lm(inputs_embeds=torch.from_numpy(embeds)[None], use_cache=False)
            return ref.lm_head(out.last_hidden_state)[0].numpy()
    finally:
        for h in hooks:
            h.remove()


def test_fused_fp32_matches_torch_and_unfused(tiny_checkpoint, tmp_path):
    torch.set_num_threads(1)
    ckpt = open_checkpoint(tiny_checkpoint)
    fused = tmp_path / "fused" / "decoder.onnx"
    plain = tmp_path / "plain" / "decoder.onnx"
    build_decoder(ckpt, ckpt.config, fused, "fp32", max_context=128, progress=False, fuse=True)
    build_decoder(ckpt, ckpt.config, plain, "fp32", max_context=128, progress=False, fuse=False)
    assert decoder_metadata(fused)["fused"] == "1" and decoder_metadata(plain)["fused"] == "0"
    embeds, deepstack = _inputs(ckpt.config)
    want = _torch_logits(ckpt, embeds, deepstack)
    got = _logits(fused, embeds, deepstack)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
    np.testing.assert_allclose(got, _logits(plain, embeds, deepstack), rtol=0,
                               atol=1e-5 * np.abs(want).max())
    assert _greedy(fused, embeds, deepstack) == _greedy(plain, embeds, deepstack)


@pytest.mark.parametrize("quant", ["int4", "int8"])
def test_fused_quantized_equals_unfused(tiny_checkpoint, tmp_path, quant):
    from edge_moss_quant.bundle_weights import BundleWeights

    ckpt = open_checkpoint(tiny_checkpoint)
    paths = {}
    for fuse in (True, False):
        paths[fuse] = tmp_path / f"fuse{int(fuse)}" / "decoder.onnx"
        info = build_decoder(ckpt, ckpt.config, paths[fuse], quant, max_context=128, progress=False,
                             fuse=fuse)
        assert info["fused"] is fuse
    embeds, deepstack = _inputs(ckpt.config, seed=1)
    a, b = _logits(paths[True], embeds, deepstack), _logits(paths[False], embeds, deepstack)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max())
    assert _greedy(paths[True], embeds, deepstack) == _greedy(paths[False], embeds, deepstack)

    # the parts read back from the stacked weights are the separate linears' weights
    fused, plain = BundleWeights.from_decoder(paths[True]), BundleWeights.from_decoder(paths[False])
    names = plain.names()
    assert sorted(fused.names()) == sorted(names) and len(names) == 7 * ckpt.config.language.num_hidden_layers + 1
    for name in ("language_model.layers.0.self_attn.k_proj.weight",
                 "language_model.layers.1.mlp.up_proj.weight", "lm_head.weight"):
        got = fused.numpy(name)
        assert got.shape == ckpt.shape(name)
        np.testing.assert_array_equal(got, plain.numpy(name))
        err = np.linalg.norm(got - ckpt.numpy(name)) / np.linalg.norm(ckpt.numpy(name))
        assert err < (0.15 if quant == "int4" else 0.01)
