"""The torch reference (export/reference.py) and the encoder chunking rule (edge_runtime/encoder_chunks.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edge_runtime.encoder_chunks import chunk_mel, chunked_token_count
from edge_runtime.errors import AudioError
from edge_runtime.model_facts import AUDIO_END_ID, AUDIO_START_ID, AUDIO_TOKEN_ID, IM_START_ID, audio_token_count
from edge_moss_export.checkpoint import open_checkpoint
from edge_moss_export.reference import MossAudioReference

torch.set_num_threads(1)


def prompt_ids(n_audio: int, question: tuple[int, ...] = (3838, 374, 419, 30)) -> list[int]:
    """A prompt with an audio span of n_audio placeholders and digit time markers every 25 tokens."""
    seconds = int(n_audio / 12.5)
    span: list[int] = []
    for i in range(1, n_audio + 1):
        span.append(AUDIO_TOKEN_ID)
        if i % 25 == 0 and (i // 25) * 2 <= seconds:
            span += [15 + int(c) for c in str((i // 25) * 2)]
    return [IM_START_ID, 872, 198, AUDIO_START_ID, *span, AUDIO_END_ID, 198, *question, 151645, 198,
            IM_START_ID, 77091, 198]


def random_mel(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((128, frames)).astype(np.float32)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint) -> MossAudioReference:
    return MossAudioReference.from_checkpoint(tiny_checkpoint)


# ---------------------------------------------------------------- chunking rule

@pytest.mark.parametrize("frames", [1, 7, 399, 400])
def test_short_clip_is_one_unpadded_chunk(frames):
    mel = random_mel(frames)
    chunks, last = chunk_mel(mel)
    assert chunks.shape == (1, 128, frames) and last == frames
    np.testing.assert_array_equal(chunks[0], mel)


@pytest.mark.parametrize("frames", [401, 799, 800, 950])
def test_long_clip_is_cut_in_400_frame_chunks_zero_padded(frames):
    mel = random_mel(frames)
    chunks, last = chunk_mel(mel)
    count = math.ceil(frames / 400)
    assert chunks.shape == (count, 128, 400)
    assert last == frames - 400 * (count - 1)
    np.testing.assert_array_equal(np.concatenate(list(chunks), axis=1)[:, :frames], mel)
    assert not chunks[-1][:, last:].any()


@pytest.mark.parametrize("frames", [1, 7, 8, 9, 399, 400, 401, 700, 799, 1000, 3001])
def test_token_counts_follow_ceil_of_eighths(frames):
    # Three stride-2 convolutions of a length L >= 1 give ceil(L / 8) tokens.
    assert audio_token_count(frames) == math.ceil(frames / 8)
    pieces = [400] * ((frames - 1) // 400) + [frames - 400 * ((frames - 1) // 400)]
    assert chunked_token_count(frames) == sum(math.ceil(p / 8) for p in pieces)


def test_chunk_mel_rejects_bad_shapes():
    with pytest.raises(AudioError):
        chunk_mel(np.zeros((128, 0), np.float32))
    with pytest.raises(AudioError):
        chunk_mel(np.zeros((80, 100), np.float32))


# ---------------------------------------------------------------- loading

@pytest.mark.parametrize("which", ["tiny_checkpoint", "small_checkpoint"])
def test_loads_every_release_tensor_by_name(which, request):
    path = request.getfixturevalue(which)
    ckpt = open_checkpoint(path)
    model = MossAudioReference.from_checkpoint(ckpt)
    state = model.state_dict()
    assert set(state) == set(ckpt.names())
    for name in ("audio_encoder.stem_proj.weight", "language_model.layers.35.mlp.down_proj.weight",
                 "deepstack_audio_merger_list.2.up_proj.weight", "lm_head.weight"):
        torch.testing.assert_close(state[name], ckpt.torch(name, torch.float32), rtol=0, atol=0)
    assert state["lm_head.weight"].dtype == torch.float32


# ---------------------------------------------------------------- encoder

def _numpy_gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _numpy_conv_s2(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3 convolution, stride 2, zero padding 1: x [Cin, H, W] -> [Cout, ceil(H/2), ceil(W/2)]."""
    cin, h, wd = x.shape
    padded = np.zeros((cin, h + 2, wd + 2), np.float64)
    padded[:, 1:-1, 1:-1] = x
    ho, wo = (h - 1) // 2 + 1, (wd - 1) // 2 + 1
    out = np.zeros((w.shape[0], ho, wo), np.float64)
    for i in range(ho):
        for j in range(wo):
            patch = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            out[:, i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
    return out + b[:, None, None]


def test_stem_features_are_channel_major(tiny, tiny_checkpoint):
    ckpt = open_checkpoint(tiny_checkpoint)
    mel = random_mel(20, seed=3)
    x = mel[None].astype(np.float64)
    for conv in ("conv1", "conv2", "conv3"):
        x = _numpy_gelu(_numpy_conv_s2(x, ckpt.numpy(f"audio_encoder.{conv}.weight"),
                                       ckpt.numpy(f"audio_encoder.{conv}.bias")))
    channels, rows, steps = x.shape
    assert rows == 16 and steps == audio_token_count(20)
    w, b = ckpt.numpy("audio_encoder.stem_proj.weight"), ckpt.numpy("audio_encoder.stem_proj.bias")
    channel_major = x.transpose(2, 0, 1).reshape(steps, channels * rows) @ w.T + b
    freq_major = x.transpose(2, 1, 0).reshape(steps, rows * channels) @ w.T + b
    got = tiny.audio_encoder.stem(torch.from_numpy(mel)[None])[0].numpy()
    assert rel_err(got, channel_major) < 1e-5
    assert rel_err(got, freq_major) > 1e-2  # the order matters, so the check above has teeth


@pytest.mark.parametrize("frames", [1, 7, 160, 399, 400])
def test_full_and_chunked_agree_on_short_clips(tiny, frames):
    mel = random_mel(frames, seed=frames)
    full_a, full_d = tiny.encode_audio(mel, "full")
    chunk_a, chunk_d = tiny.encode_audio(mel, "chunked")
    assert full_a.shape[0] == audio_token_count(frames)
    assert rel_err(chunk_a, full_a) <= 1e-5 and rel_err(chunk_d, full_d) <= 1e-5


@pytest.mark.parametrize("frames", [401, 700, 1000])
def test_full_and_chunked_differ_on_long_clips(tiny, frames):
    mel = random_mel(frames, seed=frames)
    full_a, full_d = tiny.encode_audio(mel, "full")
    chunk_a, chunk_d = tiny.encode_audio(mel, "chunked")
    assert full_a.shape == (audio_token_count(frames), 64)
    assert chunk_a.shape == (chunked_token_count(frames), 64)
    assert full_d.shape == (3, audio_token_count(frames), 64)
    assert chunk_d.shape == (3, chunked_token_count(frames), 64)
    if frames >= 700:
        assert rel_err(chunk_a, full_a) > 1e-3 and rel_err(chunk_d, full_d) > 1e-3


def test_chunks_are_encoded_independently(tiny):
    # Chunked mode: the first 400 frames give the same tokens whatever follows them.
    mel = random_mel(1000, seed=7)
    alone, _ = tiny.encode_audio(mel[:, :400], "chunked")
    within, _ = tiny.encode_audio(mel, "chunked")
    assert rel_err(within[:50], alone) <= 1e-5
    # ...and a padded short last chunk equals that chunk zero-padded to 400 frames, kept in part.
    padded = np.zeros((128, 400), np.float32)
    padded[:, :200] = mel[:, 800:]
    last_only, _ = tiny.encoder_outputs(mel, "chunked")
    masked_alone = tiny.audio_encoder(torch.from_numpy(padded)[None], [200])[0][0, :25]
    assert rel_err(last_only[100:], masked_alone) <= 1e-5


def test_tap_count_and_encoder_output_shapes(tiny):
    last, taps = tiny.encoder_outputs(random_mel(950), "chunked")
    assert last.shape == (chunked_token_count(950), 64)
    assert taps.shape == (3, chunked_token_count(950), 64)
    # Taps are taken before the final LayerNorm: they are not normalised.
    assert not torch.allclose(taps[-1], last)


# ---------------------------------------------------------------- language model

@pytest.mark.parametrize("mode", ["chunked", "full"])
def test_greedy_with_cache_equals_without(tiny, mode):
    mel = random_mel(530, seed=11)
    n = chunked_token_count(530) if mode == "chunked" else audio_token_count(530)
    ids = prompt_ids(n)
    cached = tiny.generate(ids, mel, mode=mode, max_new_tokens=18, stop_ids=())
    plain = tiny.generate(ids, mel, mode=mode, max_new_tokens=18, use_cache=False, stop_ids=())
    assert len(cached) == 18
    assert cached == plain


def test_generate_stops_at_stop_token(tiny):
    mel = random_mel(100, seed=2)
    ids = prompt_ids(audio_token_count(100))
    free = tiny.generate(ids, mel, max_new_tokens=6, stop_ids=())
    stopped = tiny.generate(ids, mel, max_new_tokens=6, stop_ids=(free[2],))
    assert stopped == free[: free.index(free[2]) + 1]


def test_deepstack_changes_logits(tiny):
    mel = random_mel(300, seed=5)
    ids = prompt_ids(audio_token_count(300))
    first_audio = ids.index(AUDIO_TOKEN_ID)
    with_ds = tiny.teacher_forced_logits(ids, mel)
    saved = [m.down_proj.weight.detach().clone() for m in tiny.deepstack_audio_merger_list]
    try:
        for m in tiny.deepstack_audio_merger_list:
            m.down_proj.weight.data.zero_()
        without_ds = tiny.teacher_forced_logits(ids, mel)
    finally:
        for m, w in zip(tiny.deepstack_audio_merger_list, saved):
            m.down_proj.weight.data.copy_(w)
    assert np.abs(with_ds[first_audio:] - without_ds[first_audio:]).max() > 1e-3
    # Causal: positions before the audio span cannot see the injection.
    np.testing.assert_allclose(with_ds[:first_audio], without_ds[:first_audio], rtol=0, atol=1e-6)
    # Zeroed mergers are the same as passing no DeepStack at all.
    audio, _ = tiny.encode_audio(mel)
    logits, _ = tiny(torch.tensor([ids]), audio, None, use_cache=False)
    np.testing.assert_allclose(logits[0].numpy(), without_ds, rtol=0, atol=1e-5)


def test_audio_embeddings_replace_placeholders(tiny):
    mel = random_mel(200, seed=9)
    ids = prompt_ids(audio_token_count(200))
    audio, deepstack = tiny.encode_audio(mel)
    perturbed = audio.clone()
    perturbed[-1] += 1.0
    base, _ = tiny(torch.tensor([ids]), audio, deepstack, use_cache=False)
    moved, _ = tiny(torch.tensor([ids]), perturbed, deepstack, use_cache=False)
    last_audio = len(ids) - 1 - ids[::-1].index(AUDIO_TOKEN_ID)
    diff = (base - moved)[0].abs().amax(dim=-1)
    assert float(diff[:last_audio].max()) < 1e-6 and float(diff[last_audio]) > 1e-3


def test_placeholder_count_mismatch_is_refused(tiny):
    mel = random_mel(200)
    with pytest.raises(ValueError, match="placeholders"):
        tiny.generate(prompt_ids(audio_token_count(200) + 1), mel, max_new_tokens=1)


def test_small_checkpoint_cache_matches_full_recompute(small_checkpoint):
    model = MossAudioReference.from_checkpoint(small_checkpoint)
    mel = random_mel(950, seed=4)
    ids = prompt_ids(chunked_token_count(950))
    cached = model.generate(ids, mel, max_new_tokens=16, stop_ids=())
    plain = model.generate(ids, mel, max_new_tokens=16, use_cache=False, stop_ids=())
    assert cached == plain and len(cached) == 16
    logits = model.teacher_forced_logits(ids, mel)
    assert logits.shape == (len(ids), 151936) and np.isfinite(logits).all()
