"""The torch reference against the authors' own modelling code, when a checkout of it is at hand.

Set EDGE_MOSS_UPSTREAM to a clone of github.com/OpenMOSS/MOSS-Audio (the folder holding `src/`)
to run it; otherwise it skips (the upstream code is not a package, and not installed by CI). The
upstream encoder takes `layer_outputs[0]` of each WhisperEncoderLayer; since transformers 5 the
layer returns a tensor, so `[0]` would keep the first batch row only: the one adaptation made
here wraps each layer's output in a tuple (and drops `layer_head_mask`, an argument the layer no
longer takes). Upstream encodes the whole clip in one pass, so the comparison is in `full` mode.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

UPSTREAM = os.environ.get("EDGE_MOSS_UPSTREAM")
if not UPSTREAM or not (Path(UPSTREAM) / "src" / "modeling_moss_audio.py").is_file():
    pytest.skip("set EDGE_MOSS_UPSTREAM to a clone of github.com/OpenMOSS/MOSS-Audio to compare "
                "the reference with the authors' modelling code", allow_module_level=True)

import torch  # noqa: E402

from conftest import test_clip  # noqa: E402
from edge_runtime.features import log_mel  # noqa: E402
from edge_runtime.model_facts import AUDIO_TOKEN_ID, audio_token_count  # noqa: E402
from edge_runtime.prompt import PromptBuilder  # noqa: E402
from edge_runtime.tokenizer import load_tokenizer  # noqa: E402
from edge_moss_export.checkpoint import open_checkpoint  # noqa: E402
from edge_moss_export.reference import MossAudioReference  # noqa: E402


def upstream_model(checkpoint):
    sys.path.insert(0, str(Path(UPSTREAM).resolve()))
    try:
        from src.configuration_moss_audio import MossAudioConfig
        from src.modeling_moss_audio import MossAudioModel
    finally:
        sys.path.pop(0)
    config = MossAudioConfig(**json.loads((Path(checkpoint) / "config.json").read_text()))
    model = MossAudioModel(config).eval()
    ckpt = open_checkpoint(checkpoint)
    state = {name: ckpt.torch(name, torch.float32) for name in ckpt.names()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m or "inv_freq" in m for m in missing), (missing, unexpected)
    for layer in model.audio_encoder.layers:
        forward = layer.forward

        def as_tuple(*args, _forward=forward, **kwargs):
            kwargs.pop("layer_head_mask", None)
            out = _forward(*args, **kwargs)
            return out if isinstance(out, tuple) else (out,)

        layer.forward = as_tuple
    return model.float()


@torch.no_grad()
def test_reference_equals_upstream_modelling_code(tiny_checkpoint):
    torch.set_num_threads(1)
    ref = MossAudioReference.from_checkpoint(tiny_checkpoint)
    model = upstream_model(tiny_checkpoint)
    mel = log_mel(test_clip(6.0, seed=3))
    frames = mel.shape[1]
    ids = PromptBuilder(load_tokenizer(Path(tiny_checkpoint))).build(
        audio_token_count(frames), "What is said?").ids.tolist()
    want = ref.teacher_forced_logits(ids, mel, "full")
    input_ids = torch.tensor([ids])
    got = model(input_ids=input_ids, audio_data=torch.from_numpy(mel)[None],
                audio_data_seqlens=torch.tensor([frames]),
                audio_input_mask=input_ids == AUDIO_TOKEN_ID, use_cache=False).logits[0].numpy()
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"reference vs upstream: largest logit difference {rel:.2e} of the largest logit")
    assert rel <= 1e-5
    assert (got.argmax(-1) == want.argmax(-1)).all()
