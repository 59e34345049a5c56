"""The torch reference with some of its weights replaced, scored like a bundle (quant.eval).

Rows of the quality benchmark that are not a bundle on ONNX Runtime:
  - the reference itself: the checkpoint's weights;
  - "gguf:PATH": the language model's weights from a GGUF (CrispASR's Q4_K), dequantized with
    the gguf package (quant.gguf_weights), the audio path from the checkpoint;
  - "bundle:PATH": a bundle's decoder weights dequantized (quant.bundle_weights): the bundle's
    weight error alone, in float32 math (= MatMulNBits at accuracy level 0);
  - any of these with "+audio=GRAPH": the audio embeddings from an ONNX audio graph instead of
    torch, which isolates that graph's error with the decoder held at the reference.

Memory at 4B: the checkpoint's weights stay in their bf16 storage (exact: the checkpoint is bf16)
and replaced ones are stored as fp16 (their rounding, ~5e-4 relative, is ~100x below 4-bit
error); every matmul widens its weight to float32 for the call, so all arithmetic is float32
while the model holds ~10 GB instead of ~20.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from edge_runtime.audio_encoder import AudioFeatures
from edge_runtime.prompt import Prompt
from edge_moss_export.checkpoint import open_checkpoint
from edge_moss_export.reference import MossAudioReference

# Linears at least this large keep their low-precision storage and widen per call.
_WIDEN_PER_CALL = 1 << 20


class _Float32Math(MossAudioReference):
    """The reference whose inputs (mel, masks) are float32 whatever its weights' storage."""

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32


def _linear_float32(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    bias = None if self.bias is None else self.bias.float()
    return nn.functional.linear(x.float(), self.weight.float(), bias)


def _embedding_float32(self: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    return nn.functional.embedding(ids, self.weight).float()


def float32_math(model: MossAudioReference) -> MossAudioReference:
    """Make every operation float32: large linears and the embedding widen per call, the rest
    (norms, convolutions, biases, small linears) is widened once."""
    for module in model.modules():
        big_linear = isinstance(module, nn.Linear) and module.weight.numel() >= _WIDEN_PER_CALL
        if big_linear:
            module.forward = types.MethodType(_linear_float32, module)
        elif isinstance(module, nn.Embedding):
            module.forward = types.MethodType(_embedding_float32, module)
        for pname, param in list(module.named_parameters(recurse=False)):
            keep = (big_linear and pname == "weight") or isinstance(module, nn.Embedding)
            if not keep and param.dtype != torch.float32:
                setattr(module, pname, nn.Parameter(param.float(), requires_grad=False))
    model.__class__ = _Float32Math
    return model


def load_model(checkpoint: str | Path, replace: Any = None) -> MossAudioReference:
    """The reference from `checkpoint` (bf16 storage), with the tensors `replace` names (a source
    with .names() and .numpy(name, dtype)) taken from it instead, stored as fp16."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    ckpt = open_checkpoint(checkpoint)
    replaced = set(replace.names()) if replace is not None else set()
    with torch.device("meta"):
        model = MossAudioReference(ckpt.config)
    state = {}
    for name in ckpt.names():
        if name in replaced:
            state[name] = torch.from_numpy(replace.numpy(name, np.float16))
        else:
            state[name] = ckpt.torch(name, torch.bfloat16)
        expected = tuple(ckpt.shape(name))
        if tuple(state[name].shape) != expected:
            raise ValueError(f"{name}: replacement has shape {tuple(state[name].shape)}, "
                             f"the checkpoint {expected}")
    model.load_state_dict(state, strict=True, assign=True)
    model.language_model.rotary_emb = Qwen3RotaryEmbedding(model.language_model.config)
    return float32_math(model.eval().requires_grad_(False))


def replacement(spec: str, checkpoint: str | Path):
    """'gguf:PATH' -> its language-model tensors; 'bundle:PATH' -> its decoder weights; '' -> None."""
    if not spec or spec == "checkpoint":
        return None
    kind, _, path = spec.partition(":")
    if kind == "gguf":
        from edge_moss_quant.gguf_weights import GGUFWeights

        names = [n for n in open_checkpoint(checkpoint).names()
                 if n.startswith(("language_model.", "lm_head."))]
        return GGUFWeights(path, names)
    if kind == "bundle":
        from edge_moss_quant.bundle_weights import BundleWeights

        return BundleWeights(path)
    raise ValueError(f"unknown weight source {spec!r}: use gguf:PATH, bundle:PATH or checkpoint")


class TorchRow:
    """A ScoredModel (quant.eval) over the float32-math torch reference."""

    def __init__(self, checkpoint: str | Path, encoder_mode: str, weights: str = "checkpoint",
                 audio_graph: str | None = None):
        source = replacement(weights, checkpoint)
        self.ref = load_model(checkpoint, source)
        self.encoder_mode = encoder_mode
        self._audio_graph = None
        if audio_graph:
            from edge_runtime.audio_encoder import AudioEncoder

            self._audio_graph = AudioEncoder(audio_graph, mode=encoder_mode)
        kinds = getattr(source, "types", None)
        self.description = {"kind": "torch", "path": str(Path(checkpoint).resolve()),
                            "weights": weights, "decoder": _describe(weights, kinds),
                            "audio": f"graph {audio_graph}" if audio_graph else "torch (checkpoint)"}

    @property
    def config(self):
        return self.ref.config

    def prepare(self, clip: np.ndarray) -> AudioFeatures:
        from edge_runtime.features import log_mel

        mel = log_mel(clip)
        if self._audio_graph is not None:
            return self._audio_graph.encode(mel)
        embeds, deepstack = self.ref.encode_audio(mel, self.encoder_mode)
        return AudioFeatures(embeds.float().numpy(), deepstack.float().numpy())

    @staticmethod
    def _tensors(audio: AudioFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.asarray(audio.embeds)), torch.from_numpy(np.asarray(audio.deepstack))

    @torch.no_grad()
    def greedy(self, prompt: Prompt, audio: AudioFeatures, steps: int) -> list[int]:
        embeds, deepstack = self._tensors(audio)
        logits, cache = self.ref(torch.tensor([prompt.ids.tolist()]), embeds, deepstack)
        tokens: list[int] = []
        while True:
            tokens.append(int(torch.argmax(logits[0, -1])))
            if len(tokens) >= steps:
                return tokens
            logits, cache = self.ref(torch.tensor([[tokens[-1]]]), past_key_values=cache)

    @torch.no_grad()
    def teacher_forced(self, prompt: Prompt, answer: Sequence[int], audio: AudioFeatures) -> np.ndarray:
        embeds, deepstack = self._tensors(audio)
        ids = prompt.ids.tolist() + [int(t) for t in answer]
        logits, _ = self.ref(torch.tensor([ids]), embeds, deepstack, use_cache=False)
        p = prompt.ids.size
        return logits[0, p - 1:p - 1 + len(answer)].float().numpy()


def _describe(weights: str, kinds) -> str:
    if not weights or weights == "checkpoint":
        return "checkpoint (bf16), fp32 math"
    counts = kinds() if callable(kinds) else None
    what = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) if counts else weights.split(":")[0]
    return f"{weights.split(':')[0]} weights ({what}), fp32 math"


__all__ = ["TorchRow", "float32_math", "load_model", "replacement"]
