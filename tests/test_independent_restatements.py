"""Rules the runtime and the torch reference share, restated here in plain numpy.

The reference and the exported audio graph both use edge_runtime.encoder_chunks (the chunking
rule) and export.reference.GatedMLP (the adapter and the DeepStack mergers), so a mistake there
would pass every parity test between them. These tests check the shared code against a second
statement of the rule, written from the authors' description (../shared/model-facts.md: 400-frame
chunks, a short last chunk zero-padded when there is more than one; upstream
`GatedMLP.forward` = down_proj(silu(gate_proj(x)) * up_proj(x)), no biases) and the checkpoint's
own tensors.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edge_runtime.encoder_chunks import chunk_mel, chunked_token_count
from edge_moss_export.audio_graph import export_audio_graph
from edge_moss_export.checkpoint import open_checkpoint
from edge_moss_export.reference import MossAudioReference


def stem_tokens(frames: int) -> int:
    """Three stride-2, padding-1, kernel-3 convolutions: L -> floor((L + 2 - 3) / 2) + 1, thrice."""
    for _ in range(3):
        frames = (frames + 2 * 1 - 3) // 2 + 1
    return frames


def chunks_by_hand(mel: np.ndarray) -> tuple[np.ndarray, int]:
    total = mel.shape[1]
    if total <= 400:
        return mel[None].astype(np.float32), total
    starts = list(range(0, total, 400))
    batch = np.zeros((len(starts), mel.shape[0], 400), np.float32)
    for i, start in enumerate(starts):
        piece = mel[:, start:start + 400]
        batch[i, :, :piece.shape[1]] = piece
    return batch, total - starts[-1]


@pytest.mark.parametrize("frames", [1, 2, 7, 8, 9, 399, 400, 401, 407, 799, 800, 801, 1999, 3000])
def test_chunking_rule_restated(frames):
    mel = np.random.default_rng(frames).standard_normal((128, frames)).astype(np.float32)
    batch, last = chunk_mel(mel)
    want_batch, want_last = chunks_by_hand(mel)
    np.testing.assert_array_equal(batch, want_batch)
    assert last == want_last
    count = sum(stem_tokens(min(400, frames - s)) for s in range(0, frames, 400))
    assert chunked_token_count(frames) == count


def gated_mlp(ckpt, prefix: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    gate = x @ ckpt.numpy(f"{prefix}.gate_proj.weight").T.astype(np.float64)
    up = x @ ckpt.numpy(f"{prefix}.up_proj.weight").T.astype(np.float64)
    silu = gate / (1.0 + np.exp(-gate))
    return (silu * up) @ ckpt.numpy(f"{prefix}.down_proj.weight").T.astype(np.float64)


def test_adapter_and_mergers_restated(tiny_checkpoint, tmp_path):
    # The encoder's outputs (reference) through a numpy GatedMLP must give what the exported
    # graph gives: the adapter and the mergers are then right on both sides, not just alike.
    ckpt = open_checkpoint(tiny_checkpoint)
    ref = MossAudioReference.from_checkpoint(tiny_checkpoint)
    mel = np.random.default_rng(5).standard_normal((128, 950)).astype(np.float32)
    last, taps = (t.numpy() for t in ref.encoder_outputs(mel, "chunked"))
    path = export_audio_graph(tiny_checkpoint, tmp_path / "audio.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    batch, last_frames = chunks_by_hand(mel)
    audio, deepstack = session.run(None, {"mel": batch, "last_frames": np.array(last_frames, np.int64)})
    want_audio = gated_mlp(ckpt, "audio_adapter", last)
    scale = np.abs(want_audio).max()
    assert np.abs(audio - want_audio).max() <= 1e-4 * scale
    for k in range(deepstack.shape[0]):
        want = gated_mlp(ckpt, f"deepstack_audio_merger_list.{k}", taps[k])
        assert np.abs(deepstack[k] - want).max() <= 1e-4 * np.abs(want).max()
