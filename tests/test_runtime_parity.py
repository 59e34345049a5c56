"""The runtime (ONNX bundle, numpy, no torch) against the torch reference, token for token."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import test_clip
from edge_runtime.api import EdgeMoss
from edge_runtime.cli import main
from edge_runtime.encoder_chunks import chunked_token_count
from edge_runtime.features import log_mel
from edge_runtime.model_facts import audio_token_count
from edge_runtime.prompt import PromptBuilder
from edge_moss_export.reference import MossAudioReference

torch.set_num_threads(1)
STEPS = 32
QUESTION = "What is said in this recording?"


def reference_tokens(ref, model: EdgeMoss, clip: np.ndarray, mode: str, question=QUESTION):
    mel = log_mel(clip)
    n = chunked_token_count(mel.shape[1]) if mode == "chunked" else audio_token_count(mel.shape[1])
    ids = PromptBuilder(model.tokenizer).build(n, question).ids.tolist()
    return ref.generate(ids, mel, mode=mode, max_new_tokens=STEPS, stop_ids=())


@pytest.fixture(scope="module")
def tiny_reference(tiny_checkpoint):
    return MossAudioReference.from_checkpoint(tiny_checkpoint)


@pytest.mark.parametrize("mode", ["chunked", "full"])
def test_fp32_bundle_greedy_tokens_equal_reference_tiny(tiny_checkpoint, tiny_reference,
                                                        bundle_factory, mode):
    model = EdgeMoss(bundle_factory(tiny_checkpoint, "fp32", mode), threads=1)
    # Shorter than a chunk, a few chunks with a short tail, exactly one chunk, 9.5 s; the second
    # and later clips start from the cached prompt prefix (cache rolled back, not rebuilt).
    for seconds, seed in [(2.5, 0), (9.5, 1), (4.0, 2), (6.3, 3)]:
        clip = test_clip(seconds, seed)
        expected = reference_tokens(tiny_reference, model, clip, mode)
        got = model.ask(clip, QUESTION, max_new_tokens=STEPS, ignore_eos=True)
        assert got.token_ids == expected, f"{mode}, {seconds} s"
        assert got.audio_tokens == (chunked_token_count if mode == "chunked"
                                    else audio_token_count)(int(seconds * 16000) // 160)


def test_full_and_chunked_bundles_differ_on_long_clips(tiny_checkpoint, bundle_factory):
    clip = test_clip(9.5, 1)
    full = EdgeMoss(bundle_factory(tiny_checkpoint, "fp32", "full"), threads=1)
    chunked = EdgeMoss(bundle_factory(tiny_checkpoint, "fp32", "chunked"), threads=1)
    a = full.encode(clip)
    b = chunked.encode(clip)
    assert a.embeds.shape == b.embeds.shape
    assert not np.allclose(a.embeds, b.embeds, atol=1e-4)


@pytest.fixture(scope="module")
def small_reference(small_checkpoint):
    return MossAudioReference.from_checkpoint(small_checkpoint)


@pytest.mark.parametrize("mode", ["chunked", "full"])
def test_fp32_bundle_greedy_tokens_equal_reference_small(small_checkpoint, small_reference,
                                                         bundle_factory, mode):
    ref = small_reference
    model = EdgeMoss(bundle_factory(small_checkpoint, "fp32", mode), threads=1)
    clip = test_clip(9.5, 4)
    expected = reference_tokens(ref, model, clip, mode)
    assert model.ask(clip, QUESTION, max_new_tokens=STEPS, ignore_eos=True).token_ids == expected


def test_ask_json_cli_matches_reference_and_streamed_text_joins(tmp_path, tiny_checkpoint,
                                                               tiny_reference, bundle_factory,
                                                               capsys):
    import soundfile as sf

    bundle = bundle_factory(tiny_checkpoint, "fp32", "chunked")
    clip = test_clip(5.0, 5)
    wav = tmp_path / "clip.wav"
    sf.write(wav, clip, 16000, subtype="FLOAT")
    assert main(["ask", str(wav), QUESTION, "--model", str(bundle), "--json", "--temperature", "0",
                 "--max-new-tokens", str(STEPS), "--ignore-eos", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    model = EdgeMoss(bundle, threads=1)
    assert out["token_ids"] == reference_tokens(tiny_reference, model, clip, "chunked")
    assert set(out["timings"]) >= {"load_s", "encode_s", "prefill_s", "decode_s",
                                   "decode_tokens_per_s"}
    assert out["audio_tokens"] == chunked_token_count(clip.size // 160)
    assert out["prompt_tokens"] > out["audio_tokens"]
    stream = model.ask(clip, QUESTION, stream=True, max_new_tokens=STEPS, ignore_eos=True)
    pieces = list(stream)
    assert "".join(pieces) == stream.result.text == out["text"]
    assert stream.result.token_ids == out["token_ids"]


def test_sampling_is_reproducible_with_a_seed(tiny_checkpoint, bundle_factory):
    model = EdgeMoss(bundle_factory(tiny_checkpoint, "fp32", "chunked"), threads=1)
    clip = test_clip(3.0, 6)
    kw = dict(max_new_tokens=16, ignore_eos=True, temperature=1.0, top_p=0.9, top_k=50)
    a = model.ask(clip, QUESTION, seed=11, **kw).token_ids
    b = model.ask(clip, QUESTION, seed=11, **kw).token_ids
    greedy = model.ask(clip, QUESTION, max_new_tokens=16, ignore_eos=True).token_ids
    assert a == b
    assert a != greedy  # temperature 1 on random weights leaves the argmax path
