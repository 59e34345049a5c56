"""The ONNX decoder (export.decoder_graph + edge_runtime.decoder) against transformers' Qwen3Model.

The reference is export.reference.MossAudioReference's language model (transformers' Qwen3Model)
plus lm_head, with the DeepStack additions applied by forward hooks after layers 0..k-1. A causal
model's logits at position t depend only on positions <= t, so one uncached torch pass over the
whole sequence gives the expected logits of every prefill, decode step and appended chunk.
"""

from __future__ import annotations

import numpy as np
import pytest

import system_deps

torch = system_deps.importorskip("torch", "export")

from edge_runtime.decoder import ContextLengthError, Decoder  # noqa: E402
from edge_runtime.errors import BundleError  # noqa: E402
from edge_runtime.model_config import MossAudioConfig  # noqa: E402
from edge_runtime.embeddings import EmbeddingTable  # noqa: E402
from edge_moss_export.checkpoint import open_checkpoint  # noqa: E402
from edge_moss_export.decoder_graph import build_decoder, decoder_metadata, rope_caches  # noqa: E402
from edge_moss_export.embedding_table import write_embedding_table  # noqa: E402
from edge_moss_export.fixture import fixture_config  # noqa: E402
from edge_moss_export.reference import MossAudioReference  # noqa: E402

TOL = 1e-5  # max |onnx - torch| / max |torch|; measured 2.0e-6 at most (tiny and small, fp32)


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint, tmp_path_factory):
    torch.set_num_threads(1)
    ckpt = open_checkpoint(tiny_checkpoint)
    out = tmp_path_factory.mktemp("dec-tiny") / "decoder.onnx"
    info = build_decoder(ckpt, ckpt.config, out, "fp32", max_context=1024, progress=False)
    assert info["max_context"] == 1024 and info["bytes"] > out.with_name("decoder.onnx.data").stat().st_size
    return ckpt, out, MossAudioReference.from_checkpoint(ckpt)


def torch_logits(ref, embeds: np.ndarray, deepstack: np.ndarray | None, with_cache: bool = False):
    """Logits [S, vocab] of an uncached pass; with_cache also returns transformers' KV cache."""
    lm = ref.language_model
    hooks = []
    if deepstack is not None:
        ds = torch.from_numpy(deepstack)
        for i in range(ds.shape[0]):
            def add(_module, _inputs, output, i=i):
                if isinstance(output, tuple):
                    return (output[0] + ds[i][None], *output[1:])
                return output + ds[i][None]
            hooks.append(lm.layers[i].register_forward_hook(add))
    try:
        with torch.no_grad():
            out = lm(inputs_embeds=torch.from_numpy(embeds)[None], use_cache=with_cache)
            logits = ref.lm_head(out.last_hidden_state)[0].numpy()
    finally:
        for h in hooks:
            h.remove()
    return (logits, out.past_key_values) if with_cache else logits


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def random_inputs(cfg, length: int, seed: int, spans=((20, 70),)):
    rng = np.random.default_rng(seed)
    hidden, k = cfg.language.hidden_size, cfg.num_deepstack
    embeds = (rng.standard_normal((length, hidden)) * 0.5).astype(np.float32)
    deepstack = np.zeros((k, length, hidden), dtype=np.float32)
    for a, b in spans:
        b = min(b, length)
        deepstack[:, a:b] = rng.standard_normal((k, b - a, hidden)) * 0.5
    return embeds, deepstack


def test_prefill_steps_chunk_and_rollback_match_torch(tiny):
    ckpt, path, ref = tiny
    embeds, deepstack = random_inputs(ckpt.config, 178, seed=0, spans=((20, 70), (140, 160)))
    want, cache = torch_logits(ref, embeds, deepstack, with_cache=True)

    dec = Decoder(path, max_context=256, threads=1)
    got = [dec.forward(embeds[:120], deepstack[:, :120], logits_to_keep=120)]
    for t in range(120, 128):  # single-token steps (no DeepStack there: zeros)
        got.append(dec.forward(embeds[t:t + 1], deepstack[:, t:t + 1]))
    # Chunked prefill: 50 positions appended to the cache, DeepStack on part of them.
    got.append(dec.forward(embeds[128:178], deepstack[:, 128:178], logits_to_keep=50))
    got = np.concatenate(got)
    assert dec.length == 178
    assert rel_err(got[:120], want[:120]) <= TOL
    assert rel_err(got[120:128], want[120:128]) <= TOL
    assert rel_err(got[128:], want[128:]) <= TOL

    # The shared past/present buffers hold transformers' (post-RoPE) keys and values.
    for layer in (0, ckpt.config.language.num_hidden_layers - 1):
        want_k = cache.layers[layer].keys.numpy()
        want_v = cache.layers[layer].values.numpy()
        assert rel_err(dec.cache_view(layer, "key"), want_k) <= TOL
        assert rel_err(dec.cache_view(layer, "value"), want_v) <= TOL

    # Roll back to 100 and continue with different inputs: equals a fresh computation.
    dec.rollback(100)
    new_embeds, new_ds = random_inputs(ckpt.config, 30, seed=5, spans=((0, 10),))
    again = dec.forward(new_embeds, new_ds, logits_to_keep=30)
    full_embeds = np.concatenate([embeds[:100], new_embeds])
    full_ds = np.concatenate([deepstack[:, :100], new_ds], axis=1)
    assert rel_err(again, torch_logits(ref, full_embeds, full_ds)[100:]) <= TOL
    fresh = Decoder(path, max_context=256, threads=1)
    fresh_logits = fresh.forward(full_embeds, full_ds, logits_to_keep=30)
    np.testing.assert_allclose(again, fresh_logits, rtol=0, atol=TOL * np.abs(fresh_logits).max())


def test_greedy_tokens_match_torch(tiny, tmp_path):
    ckpt, path, ref = tiny
    write_embedding_table(ckpt.numpy("language_model.embed_tokens.weight"), tmp_path, "fp16")
    table = EmbeddingTable.load(tmp_path, "fp16")
    cfg = ckpt.config
    prompt_embeds, prompt_ds = random_inputs(cfg, 24, seed=2, spans=((4, 16),))

    dec = Decoder(path, max_context=128, threads=1)
    logits = dec.forward(prompt_embeds, prompt_ds)
    onnx_tokens = []
    for _ in range(32):
        token = int(np.argmax(logits[-1]))
        onnx_tokens.append(token)
        logits = dec.forward(table.lookup([token]))

    # torch: recompute the whole sequence at every step from the same fp16-table embeddings.
    embeds, torch_tokens = prompt_embeds, []
    pad = np.zeros((cfg.num_deepstack, 32, cfg.language.hidden_size), dtype=np.float32)
    for step in range(32):
        ds = np.concatenate([prompt_ds, pad[:, :step]], axis=1)
        token = int(np.argmax(torch_logits(ref, embeds, ds)[-1]))
        torch_tokens.append(token)
        embeds = np.concatenate([embeds, table.lookup([token])])
    assert onnx_tokens == torch_tokens


def test_logits_to_keep_selects_last_positions(tiny):
    ckpt, path, _ = tiny
    embeds, deepstack = random_inputs(ckpt.config, 40, seed=3, spans=((5, 25),))
    a = Decoder(path, max_context=64, threads=1)
    all_logits = a.forward(embeds, deepstack, logits_to_keep=40)
    b = Decoder(path, max_context=64, threads=1)
    last = b.forward(embeds, deepstack)  # default: the last position only
    assert last.shape == (1, ckpt.config.vocab_size)
    np.testing.assert_allclose(last[0], all_logits[-1], rtol=0, atol=1e-5 * np.abs(last).max())


def test_context_overflow_is_a_clear_error(tiny):
    ckpt, path, _ = tiny
    embeds, _ = random_inputs(ckpt.config, 40, seed=4)
    dec = Decoder(path, max_context=48, threads=1)
    dec.forward(embeds[:30])
    with pytest.raises(ContextLengthError, match="max_context 48"):
        dec.forward(embeds[:20])
    assert dec.length == 30  # the failed call changed nothing
    dec.forward(embeds[:18])
    assert dec.length == 48 and dec.remaining == 0
    with pytest.raises(ContextLengthError):
        Decoder(path, max_context=4096, threads=1)  # beyond the graph's 1024 RoPE rows
    with pytest.raises(ValueError):
        dec.rollback(49)


def test_config_mismatch_is_refused(tiny):
    _, path, _ = tiny
    small = MossAudioConfig.from_dict(fixture_config("small"))
    with pytest.raises(BundleError, match="does not match"):
        Decoder(path, small, max_context=64, threads=1)
    assert Decoder(path, tiny[0].config, max_context=64, threads=1).dims.hidden_size == 64


def test_graph_metadata_and_rope(tiny):
    ckpt, path, _ = tiny
    meta = decoder_metadata(path)
    lang = ckpt.config.language
    assert meta["max_context"] == "1024" and meta["num_layers"] == str(lang.num_hidden_layers)
    cos, sin = rope_caches(8, lang.head_dim, lang.rope_theta)
    inv = 1.0 / lang.rope_theta ** (np.arange(0, lang.head_dim, 2) / lang.head_dim)
    np.testing.assert_allclose(cos, np.cos(np.arange(8)[:, None] * inv), atol=1e-6)
    np.testing.assert_allclose(sin, np.sin(np.arange(8)[:, None] * inv), atol=1e-6)


@pytest.mark.parametrize("kind, tol", [("fp32", 0.0), ("fp16", 2e-3), ("int8", 1e-2), ("int4", 0.12)])
def test_embedding_table_roundtrip(tiny, tmp_path, kind, tol):
    ckpt, _, _ = tiny
    weight = ckpt.numpy("language_model.embed_tokens.weight")
    write_embedding_table(weight, tmp_path, kind)
    table = EmbeddingTable.load(tmp_path)
    assert table.kind == kind and table.vocab_size == weight.shape[0]
    ids = [0, 15, 151643, 151669, 151935, 15]
    got = table.lookup(ids)
    assert got.dtype == np.float32 and got.shape == (len(ids), weight.shape[1])
    assert rel_err(got, weight[ids]) <= tol
    with pytest.raises(ValueError):
        table.lookup([weight.shape[0]])


def test_int4_embedding_layout_and_size(tiny, tmp_path):
    """int4 rows decode as (nibble - 8) * block scale, low nibble first, and take half of int8."""
    from edge_runtime.embeddings import INT4_FILE, INT4_SCALES_FILE, INT8_FILE

    ckpt, _, _ = tiny
    weight = ckpt.numpy("language_model.embed_tokens.weight")
    write_embedding_table(weight, tmp_path / "q4", "int4")
    write_embedding_table(weight, tmp_path / "q8", "int8")
    packed = np.load(tmp_path / "q4" / INT4_FILE)
    scales = np.load(tmp_path / "q4" / INT4_SCALES_FILE)
    assert packed.dtype == np.uint8 and scales.dtype == np.float16
    row = 151644
    nibbles = np.stack([packed[row] & 15, packed[row] >> 4], axis=1).reshape(-1).astype(np.float32)
    want = (nibbles - 8).reshape(-1, 32) * scales[row].astype(np.float32)[:, None]
    np.testing.assert_array_equal(EmbeddingTable.load(tmp_path / "q4").lookup([row])[0], want.reshape(-1))
    # Every block uses the full signed range [-8, 7] at most: a symmetric scale per block.
    assert np.abs(want.reshape(-1, 32)).max(axis=1).max() <= 8 * scales[row].astype(np.float32).max()
    size4 = packed.nbytes + scales.nbytes
    size8 = np.load(tmp_path / "q8" / INT8_FILE, mmap_mode="r").nbytes
    assert 0.5 * size8 < size4 < 0.6 * size8


def test_small_fp32_matches_torch(small_checkpoint, tmp_path):
    torch.set_num_threads(1)
    ckpt = open_checkpoint(small_checkpoint)
    path = tmp_path / "decoder.onnx"
    build_decoder(ckpt, ckpt.config, path, "fp32", max_context=256, progress=False)
    ref = MossAudioReference.from_checkpoint(ckpt)
    embeds, deepstack = random_inputs(ckpt.config, 72, seed=6, spans=((8, 40),))
    want = torch_logits(ref, embeds, deepstack)
    dec = Decoder(path, max_context=128, threads=1)
    got = [dec.forward(embeds[:60], deepstack[:, :60], logits_to_keep=60)]
    got += [dec.forward(embeds[t:t + 1]) for t in range(60, 64)]
    got.append(dec.forward(embeds[64:], deepstack[:, 64:], logits_to_keep=8))
    assert rel_err(np.concatenate(got), want) <= TOL


def test_growing_cache_equals_torch_through_growth_and_rollback(tiny, monkeypatch):
    """A host cache that starts small and grows (copying its valid positions) gives the same
    logits as transformers, across several growths, single steps and a roll-back."""
    import edge_runtime.decoder as decoder_mod

    monkeypatch.setattr(decoder_mod, "CACHE_STEP", 16)
    ckpt, path, ref = tiny
    embeds, deepstack = random_inputs(ckpt.config, 150, seed=7, spans=((10, 40),))
    want = torch_logits(ref, embeds, deepstack)
    dec = Decoder(path, max_context=1024, threads=1)
    assert dec.capacity == 16
    got = [dec.forward(embeds[:40], deepstack[:, :40], logits_to_keep=40)]  # 16 -> 48
    assert dec.capacity == 48
    for t in range(40, 60):  # steps across the 48 -> 96 growth
        got.append(dec.forward(embeds[t:t + 1], deepstack[:, t:t + 1]))
    got.append(dec.forward(embeds[60:150], deepstack[:, 60:150], logits_to_keep=90))
    assert dec.capacity == 192 and dec.length == 150
    assert rel_err(np.concatenate(got), want) <= TOL
    dec.rollback(50)
    again = dec.forward(embeds[50:150], deepstack[:, 50:150], logits_to_keep=100)
    assert rel_err(again, want[50:]) <= TOL
    assert dec.capacity == 192  # roll-back keeps the buffers
