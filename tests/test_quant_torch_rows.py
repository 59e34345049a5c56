"""The torch rows of the quality benchmark (benchmarks.gguf_reference): bf16 storage with float32
math equals the float32 reference on a bf16 checkpoint, and replaced weights do change it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.gguf_reference import TorchRow  # noqa: E402
from edge_runtime.prompt import Prompt  # noqa: E402
from edge_moss_export.reference import MossAudioReference  # noqa: E402
from edge_moss_quant.eval import eval_clip  # noqa: E402


def test_float32_math_row_matches_the_reference(tiny_checkpoint, bundle_factory):
    from edge_runtime.model_facts import AUDIO_TOKEN_ID

    torch.set_num_threads(1)
    row = TorchRow(tiny_checkpoint, "chunked")
    clip = eval_clip(2.5, 0)
    audio = row.prepare(clip)
    n = audio.num_tokens
    ids = np.array([1, 2, *([AUDIO_TOKEN_ID] * n), 3, 4, 5], dtype=np.int64)
    prompt = Prompt(ids=ids, audio_positions=np.arange(2, 2 + n))
    answer = [7, 8, 9]
    got = row.teacher_forced(prompt, answer, audio)
    ref = MossAudioReference.from_checkpoint(tiny_checkpoint)  # float32 weights and math
    from edge_runtime.features import log_mel

    want = ref.teacher_forced_logits(ids.tolist() + answer, log_mel(clip), mode="chunked")
    want = want[len(ids) - 1:len(ids) - 1 + len(answer)]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert row.greedy(prompt, audio, 3) == ref.generate(ids.tolist(), log_mel(clip), max_new_tokens=3,
                                                        stop_ids=())

    # a bundle's dequantized int4 weights in the same model: close, but not equal
    bundle = bundle_factory(tiny_checkpoint, "int4", "chunked")  # the session's int4 bundle
    quantized = TorchRow(tiny_checkpoint, "chunked", weights=f"bundle:{bundle}")
    q = quantized.teacher_forced(prompt, answer, audio)
    rel = np.linalg.norm(q - want) / np.linalg.norm(want)
    assert 1e-3 < rel < 0.6
