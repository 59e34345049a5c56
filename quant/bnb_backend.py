"""The torch backend: the reference model with bitsandbytes NF4 / LLM.int8 linear layers.

`BnbMoss(checkpoint, bnb="4bit")` loads a Hugging Face MOSS-Audio checkpoint directly (no export),
swaps the linear layers of the Qwen3 backbone and the audio adapters (optionally the encoder's) for
bitsandbytes `Linear4bit` (NF4) or `Linear8bitLt` (LLM.int8), and answers with the same
`.ask(...)` / `.transcribe(...)` as `edge_runtime.api.EdgeMoss`: it *is* an EdgeMoss whose audio
encoder, decoder and embedding table are torch modules, so the front end (audio loading, log-mel,
tokenizer, prompt and time markers, sampling, timestamp parsing, windowing) is the runtime's own.

Useful on CUDA hosts that already have torch, and as a second opinion on 4-bit quality:
`load_bnb_reference(...)` returns the quantized MossAudioReference, whose
`teacher_forced_logits(ids, mel, mode)` an evaluation can compare with the ONNX INT4 bundle.
lm_head stays in the compute dtype (as transformers' bitsandbytes integration does by default).
bitsandbytes >= 0.45 also runs on the CPU (slowly), which is what the tests use.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import model_facts as facts
from edge_runtime.api import EdgeMoss
from edge_runtime.errors import MissingExtraError

BNB_MODES = ("4bit", "8bit", "none")
GPU_EXTRA_HINT = "pip install 'edge-moss[gpu,export]'"
# Linear layers replaced by default: the backbone and the adapters. lm_head is left alone.
DEFAULT_TARGETS = ("language_model.layers.", "audio_adapter.", "deepstack_audio_merger_list.")
ENCODER_TARGET = "audio_encoder."


def require_torch(bnb: str = "none") -> None:
    """MissingExtraError (one line, with the pip hint) when torch or bitsandbytes is absent."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"--backend torch needs torch and transformers ({exc.name} is missing): "
                                f"{GPU_EXTRA_HINT}") from None
    if bnb != "none":
        _import_bnb()


def _import_bnb():
    # bitsandbytes logs a warning about an optional CPU kernel package at import: not news to a user.
    noisy = logging.getLogger("bitsandbytes")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError:
        raise MissingExtraError(f"--bnb 4bit/8bit needs bitsandbytes: {GPU_EXTRA_HINT}") from None
    finally:
        noisy.setLevel(level)
    return bitsandbytes


def _bnb_linear(linear, bnb: str, compute_dtype, device):
    """A bitsandbytes copy of nn.Linear `linear`, quantized on `device` (moving it there does it)."""
    import torch

    bitsandbytes = _import_bnb()
    weight = linear.weight.data.to(torch.float32 if device.type == "cpu" else torch.float16)
    has_bias = linear.bias is not None
    if bnb == "8bit":
        layer = bitsandbytes.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                             has_fp16_weights=False, threshold=6.0)
        layer.weight = bitsandbytes.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bitsandbytes.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                           compute_dtype=compute_dtype, quant_type="nf4",
                                           quant_storage=torch.uint8)
        layer.weight = bitsandbytes.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    if has_bias:
        layer.bias = torch.nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
    return layer.to(device)


def quantize_linears(model, bnb: str, compute_dtype, device,
                     targets: tuple[str, ...] = DEFAULT_TARGETS) -> int:
    """Replace every nn.Linear whose qualified name starts with one of `targets`; returns the count."""
    import torch

    if bnb not in BNB_MODES:
        raise ValueError(f"bnb must be one of {BNB_MODES}, not {bnb!r}")
    if bnb == "none":
        return 0
    chosen = [name for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and name.startswith(targets)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _bnb_linear(getattr(parent, child), bnb, compute_dtype, device))
    return len(chosen)


def torch_device(device: str = "cpu"):
    """torch.device for an edge-moss --device; CPU (with one message) when torch has no CUDA."""
    import torch

    from edge_runtime.providers import LABEL_OF, check_device, warn_once

    check_device(device)
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    warn_once(f"{LABEL_OF[device]} requested but this torch has no CUDA device; running on CPU")
    return torch.device("cpu")


class _DropCastNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "inputs will be cast" not in record.getMessage()


def _quiet_cast_notice() -> None:
    """LLM.int8 casts float32 activations to fp16 and logs it at every call: expected, not news."""
    noisy = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropCastNotice) for f in noisy.filters):
        noisy.addFilter(_DropCastNotice())


def load_bnb_reference(checkpoint, bnb: str = "4bit", device: str = "cpu",
                       quantize_encoder: bool = False, compute_dtype=None):
    """MossAudioReference of `checkpoint` with bitsandbytes linears, on `device` ('cpu' | 'cuda').

    compute_dtype: float32 on the CPU, float16 on CUDA unless given. Returns the model (eval mode).
    """
    require_torch(bnb)
    import torch

    from edge_moss_export.reference import MossAudioReference

    dev = torch_device(device)
    _quiet_cast_notice()
    dtype = compute_dtype or (torch.float32 if dev.type == "cpu" else torch.float16)
    model = MossAudioReference.from_checkpoint(checkpoint, dtype=dtype)
    targets = DEFAULT_TARGETS + ((ENCODER_TARGET,) if quantize_encoder else ())
    model.quantized_linears = quantize_linears(model, bnb, dtype, dev, targets)
    model.bnb = bnb
    if dev.type != "cpu":
        # The reference builds the mel batch with torch.from_numpy (host memory): move it over.
        # Its other tensors come from factory calls, placed by `on_device(model)` (below).
        model.audio_encoder.register_forward_pre_hook(
            lambda _module, args: (args[0].to(dev), *args[1:]))
    return model.to(dev).eval().requires_grad_(False)


def on_device(model):
    """Context making the reference's factory-made tensors (positions, masks, ids) land on the
    model's device: wrap calls such as `model.teacher_forced_logits(...)` in it."""
    import torch

    return torch.device(model.lm_head.weight.device)


# ---------------------------------------------------------------------- runtime adapters


class TorchAudioEncoder:
    """edge_runtime.audio_encoder.AudioEncoder's `encode` on the torch reference."""

    def __init__(self, model, mode: str = "chunked"):
        self.model, self.mode = model, mode

    def encode(self, mel: np.ndarray):
        from edge_runtime.audio_encoder import AudioFeatures

        with on_device(self.model):
            embeds, deepstack = self.model.encode_audio(mel, self.mode)
        return AudioFeatures(embeds=embeds.float().cpu().numpy(), deepstack=deepstack.float().cpu().numpy())


class TorchEmbeddings:
    """edge_runtime.embeddings.EmbeddingTable's `lookup` on the model's embed_tokens."""

    def __init__(self, model):
        self.table = model.language_model.embed_tokens

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        import torch

        index = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.table.weight.device)
        with torch.no_grad():
            return self.table(index).float().cpu().numpy()


class TorchDecoder:
    """edge_runtime.decoder.Decoder's interface on transformers' Qwen3Model + a DynamicCache."""

    def __init__(self, model, max_context: int = 4096):
        self.model = model
        self.max_context = int(max_context)
        self.length = 0
        self._cache = None

    @property
    def remaining(self) -> int:
        return self.max_context - self.length

    def reset(self) -> None:
        self.length, self._cache = 0, None

    def rollback(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back to {length}: the cache holds {self.length} positions")
        if length == 0:
            self.reset()
            return
        if length < self.length:
            self._cache.crop(length - self.length)  # negative: tokens to drop from the end
        self.length = int(length)

    def forward(self, embeds: np.ndarray, deepstack: np.ndarray | None = None,
                logits_to_keep: int = 1) -> np.ndarray:
        """Append S positions (embeds [S, hidden], deepstack [k, S, hidden] or None); returns the
        float32 logits [logits_to_keep, vocab] of the last positions."""
        import torch

        from edge_runtime.decoder import ContextLengthError
        from edge_moss_export.reference import _add_at

        s = int(embeds.shape[0])
        if self.length + s > self.max_context:
            raise ContextLengthError(f"context full: {self.length} cached + {s} new positions exceed "
                                     f"max_context {self.max_context}; use a larger --max-context")
        lm = self.model.language_model
        weight = lm.embed_tokens.weight
        x = torch.as_tensor(np.asarray(embeds), device=weight.device).to(weight.dtype)[None]
        hooks = []
        if deepstack is not None:  # zeros on text positions: adding everywhere is adding at audio
            ds = torch.as_tensor(np.asarray(deepstack), device=weight.device)
            everywhere = torch.ones((1, s), dtype=torch.bool, device=weight.device)
            hooks = [lm.layers[i].register_forward_hook(_add_at(everywhere, ds[i]))
                     for i in range(ds.shape[0])]
        try:
            with torch.no_grad():
                out = lm(inputs_embeds=x, past_key_values=self._cache, use_cache=True)
                logits = self.model.lm_head(out.last_hidden_state[:, -logits_to_keep:])
        finally:
            for hook in hooks:
                hook.remove()
        self._cache = out.past_key_values
        self.length += s
        return logits[0].float().cpu().numpy()


@dataclass(frozen=True)
class CheckpointPromptInfo:
    """What EdgeMoss reads from a bundle's manifest, taken from the checkpoint instead."""

    time_markers: bool
    encoder_mode: str


class BnbMoss(EdgeMoss):
    """EdgeMoss on a checkpoint directory with torch + bitsandbytes instead of an ONNX bundle."""

    def __init__(self, checkpoint: str | Path, bnb: str = "4bit", device: str = "cpu",
                 threads: int | None = None, max_context: int | None = None,
                 system: str | None = None, encoder_mode: str = "chunked",
                 quantize_encoder: bool = False):
        from edge_runtime.generation import CachedLM
        from edge_runtime.offline import enforce_offline
        from edge_runtime.tokenizer import load_tokenizer
        from edge_moss_export.checkpoint import open_checkpoint

        require_torch(bnb)
        import torch

        enforce_offline()
        if threads:
            torch.set_num_threads(int(threads))
        start = time.perf_counter()
        ckpt = open_checkpoint(checkpoint)
        proc = ckpt.processor_config
        self.checkpoint = ckpt
        self.config = ckpt.config
        self.bnb = bnb
        self.model = load_bnb_reference(ckpt, bnb=bnb, device=device, quantize_encoder=quantize_encoder)
        self.device = str(self.model.lm_head.weight.device.type)
        self.bundle = CheckpointPromptInfo(time_markers=bool(proc.get("enable_time_marker", True)),
                                           encoder_mode=encoder_mode)
        self.tokenizer = load_tokenizer(ckpt.tokenizer_dir)
        self.stop_ids = (facts.IM_END_ID, facts.ENDOFTEXT_ID)
        self.encoder = TorchAudioEncoder(self.model, encoder_mode)
        self.decoder = TorchDecoder(self.model, max_context=int(max_context or 4096))
        self.embeddings = TorchEmbeddings(self.model)
        self.lm = CachedLM(self.decoder, self.embeddings, ckpt.config.num_deepstack, self.stop_ids)
        self.system = system or facts.DEFAULT_SYSTEM_PROMPT
        self.load_s = time.perf_counter() - start


def load_torch_model(model: str | Path, bnb: str | None = None, device: str = "cpu",
                     threads: int | None = None, max_context: int | None = None,
                     **kwargs: Any) -> BnbMoss:
    """The CLI's entry (`--backend torch`): --model names the checkpoint directory."""
    return BnbMoss(model, bnb=bnb or "4bit", device=device, threads=threads,
                   max_context=max_context, **kwargs)


def bnb_teacher_forced_logits(checkpoint, input_ids, mel, bnb: str = "4bit",
                              mode: str = "chunked", device: str = "cpu") -> np.ndarray:
    """Logits [S, vocab] of one pass of the bitsandbytes model (for eval-quant comparisons)."""
    model = load_bnb_reference(checkpoint, bnb=bnb, device=device)
    with on_device(model):
        return model.teacher_forced_logits(list(input_ids), mel, mode)


