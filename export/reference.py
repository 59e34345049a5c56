"""Torch reference of the whole MOSS-Audio model, built on transformers' own layers.

Every runtime path (ONNX audio graph, ONNX decoder, quantized variants) is proven against this
module. Submodules carry the release tensor names, so a checkpoint loads 1:1 with
`load_state_dict(strict=True)`.

Encoder modes (see /work/shared/model-facts.md):
  - "full": one pass over the whole clip, positions 0..N-1 (the Hugging Face reference);
  - "chunked" (default): the 400-frame chunk batch of edge_runtime.encoder_chunks.chunk_mel,
    positions restarting at 0 in each chunk, padded keys of a short last chunk masked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from transformers import Qwen3Config, WhisperConfig
from transformers.models.qwen3.modeling_qwen3 import Qwen3Model, Qwen3RotaryEmbedding
from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

from edge_runtime.encoder_chunks import chunk_mel
from edge_runtime.model_config import AudioEncoderConfig, ConfigError, LanguageConfig, MossAudioConfig
from edge_runtime.model_facts import AUDIO_TOKEN_ID, STOP_TOKEN_IDS, audio_token_count
from edge_moss_export.checkpoint import open_checkpoint

ENCODER_MODES = ("chunked", "full")


def sinusoid_positions(length: int, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Whisper-style sinusoids [length, dim]: [sin(t*inv), cos(t*inv)], inv over dim/2 - 1 steps."""
    half = dim // 2
    inv = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32))
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1).to(dtype)


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases: the audio adapter and each DeepStack merger."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(input_size, hidden_size, bias=False)
        self.up_proj = nn.Linear(input_size, hidden_size, bias=False)
        self.down_proj = nn.Linear(hidden_size, output_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def whisper_layer_config(cfg: AudioEncoderConfig, attn_implementation: str) -> WhisperConfig:
    """The WhisperConfig that makes transformers' WhisperEncoderLayer match the release encoder."""
    wcfg = WhisperConfig(
        d_model=cfg.d_model,
        encoder_attention_heads=cfg.encoder_attention_heads,
        encoder_ffn_dim=cfg.encoder_ffn_dim,
        activation_function=cfg.activation_function,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    wcfg._attn_implementation = attn_implementation
    return wcfg


def qwen3_config(cfg: LanguageConfig, attn_implementation: str) -> Qwen3Config:
    """The transformers Qwen3Config of the language model."""
    qcfg = Qwen3Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=False,
        attention_bias=False,
        use_sliding_window=False,
    )
    qcfg._attn_implementation = attn_implementation
    return qcfg


class MossAudioEncoder(nn.Module):
    """Conv stem + Whisper encoder layers + final LayerNorm, with DeepStack taps."""

    def __init__(self, cfg: AudioEncoderConfig, num_taps: int, attn_implementation: str = "eager"):
        super().__init__()
        if cfg.output_dim != cfg.d_model:
            raise ConfigError("audio_config.output_dim != d_model (an encoder out_proj) is not supported")
        ch = cfg.downsample_hidden_size
        self.conv1 = nn.Conv2d(1, ch, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(ch, ch, kernel_size=3, stride=2, padding=1)
        self.stem_proj = nn.Linear(cfg.stem_features, cfg.d_model)
        wcfg = whisper_layer_config(cfg, attn_implementation)
        self.layers = nn.ModuleList(WhisperEncoderLayer(wcfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.tap_layers = tuple(sorted(cfg.deepstack_encoder_layer_indexes))[:num_taps]
        self.d_model = cfg.d_model

    def stem(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, 128, F] -> [B, F/8, d]: conv stem, channel-major flatten, stem_proj (no positions)."""
        x = mel.unsqueeze(1)
        for conv in (self.conv1, self.conv2, self.conv3):
            x = nn.functional.gelu(conv(x))  # exact (erf) GELU
        x = x.permute(0, 3, 1, 2).flatten(2)  # [B, C, 16, T'] -> [B, T', C*16]
        return self.stem_proj(x)

    def forward(self, mel: torch.Tensor, lengths: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode a batch [B, 128, F] whose item b has lengths[b] true frames.

        Returns the final hidden states [B, F/8, d] and the DeepStack taps (outputs of the tap
        layers, before the final LayerNorm). Padded token positions hold garbage; drop them.
        """
        x = self.stem(mel)
        x = x + sinusoid_positions(x.shape[1], self.d_model).to(x.dtype)
        valid = torch.tensor([audio_token_count(int(n)) for n in lengths])
        padded = torch.arange(x.shape[1])[None, :] >= valid[:, None]
        mask = torch.zeros(padded.shape, dtype=x.dtype).masked_fill(padded, torch.finfo(x.dtype).min)
        mask = mask[:, None, None, :]  # [B, 1, 1, keys]: padded keys masked for every query
        taps = []
        for index, layer in enumerate(self.layers):
            x = layer(x, mask)
            if index in self.tap_layers:
                taps.append(x)
        return self.layer_norm(x), taps


class MossAudioReference(nn.Module):
    """The whole MOSS-Audio model (fp32 by default), named like the release checkpoint."""

    def __init__(self, config: MossAudioConfig, attn_implementation: str = "eager"):
        super().__init__()
        self.config = config
        k = config.num_deepstack
        a, lang = config.audio, config.language
        self.audio_encoder = MossAudioEncoder(a, k, attn_implementation)
        self.language_model = Qwen3Model(qwen3_config(lang, attn_implementation))
        self.audio_adapter = GatedMLP(a.output_dim, config.adapter_hidden_size, lang.hidden_size)
        self.deepstack_audio_merger_list = nn.ModuleList(
            GatedMLP(a.output_dim, config.adapter_hidden_size, lang.hidden_size) for _ in range(k)
        )
        self.lm_head = nn.Linear(lang.hidden_size, lang.vocab_size, bias=False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, checkpoint, dtype: torch.dtype = torch.float32,
                        attn_implementation: str = "eager") -> "MossAudioReference":
        """Build from a checkpoint directory (or an opened export.checkpoint.Checkpoint)."""
        if isinstance(checkpoint, (str, Path)):
            checkpoint = open_checkpoint(checkpoint)
        # Build on the meta device: no random init, no second copy of the weights.
        with torch.device("meta"):
            model = cls(checkpoint.config, attn_implementation)
        state = {name: checkpoint.torch(name, dtype) for name in checkpoint.names()}
        model.load_state_dict(state, strict=True, assign=True)
        # Non-persistent RoPE buffers are not in the checkpoint: rebuild them on the CPU.
        model.language_model.rotary_emb = Qwen3RotaryEmbedding(model.language_model.config)
        leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
        if leftovers:
            raise RuntimeError(f"tensors left unloaded: {leftovers[:5]}")
        return model.eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # ------------------------------------------------------------------ audio
    def _mel_batch(self, mel, mode: str) -> tuple[torch.Tensor, list[int]]:
        mel = np.asarray(mel, dtype=np.float32)
        if mode == "full":
            batch, lengths = mel[None], [int(mel.shape[1])]
        elif mode == "chunked":
            batch, last = chunk_mel(mel)
            lengths = [batch.shape[2]] * (batch.shape[0] - 1) + [last]
        else:
            raise ValueError(f"unknown encoder mode {mode!r}; expected one of {ENCODER_MODES}")
        return torch.from_numpy(np.ascontiguousarray(batch)).to(self.dtype), lengths

    @torch.no_grad()
    def encoder_outputs(self, mel, mode: str = "chunked") -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output before the adapter: (last_hidden [N, d], taps [k, N, d])."""
        batch, lengths = self._mel_batch(mel, mode)
        last, taps = self.audio_encoder(batch, lengths)
        keep = [audio_token_count(n) for n in lengths]

        def valid_tokens(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x[i, :n] for i, n in enumerate(keep)], dim=0)

        return valid_tokens(last), torch.stack([valid_tokens(t) for t in taps])

    @torch.no_grad()
    def encode_audio(self, mel, mode: str = "chunked") -> tuple[torch.Tensor, torch.Tensor]:
        """Audio embeddings after the adapter and mergers: ([N, hidden], [k, N, hidden])."""
        last, taps = self.encoder_outputs(mel, mode)
        deepstack = torch.stack([m(t) for m, t in zip(self.deepstack_audio_merger_list, taps)])
        return self.audio_adapter(last), deepstack

    # ------------------------------------------------------------------ language model
    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, audio_embeds: torch.Tensor | None = None,
                deepstack: torch.Tensor | None = None, past_key_values=None,
                use_cache: bool = True):
        """Logits [1, S, vocab] and the KV cache for input_ids [1, S] (after past_key_values).

        audio_embeds replace the embeddings where input_ids == AUDIO_TOKEN_ID (in order); after
        decoder layer i < k, deepstack[i] is added to the hidden states at those positions.
        """
        embeds = self.language_model.embed_tokens(input_ids)
        audio_mask = input_ids == AUDIO_TOKEN_ID
        handles = []
        if audio_embeds is not None:
            count = int(audio_mask.sum())
            if count != audio_embeds.shape[0]:
                raise ValueError(f"{count} audio placeholders but {audio_embeds.shape[0]} audio embeddings")
            embeds = embeds.clone()
            embeds[audio_mask] = audio_embeds.to(embeds.dtype)
            if deepstack is not None:
                handles = [self.language_model.layers[i].register_forward_hook(_add_at(audio_mask, d))
                           for i, d in enumerate(deepstack)]
        try:
            out = self.language_model(inputs_embeds=embeds, past_key_values=past_key_values,
                                      use_cache=use_cache)
        finally:
            for handle in handles:
                handle.remove()
        return self.lm_head(out.last_hidden_state), out.past_key_values

    def _audio(self, input_ids: Sequence[int], mel, mode: str):
        if mel is None:
            return None, None
        audio_embeds, deepstack = self.encode_audio(mel, mode)
        placeholders = sum(1 for t in input_ids if t == AUDIO_TOKEN_ID)
        if placeholders != audio_embeds.shape[0]:
            raise ValueError(f"prompt has {placeholders} audio placeholders, the audio makes "
                             f"{audio_embeds.shape[0]} tokens in {mode} mode")
        return audio_embeds, deepstack

    @torch.no_grad()
    def generate(self, input_ids: Sequence[int], mel: np.ndarray | None, mode: str = "chunked",
                 max_new_tokens: int = 32, use_cache: bool = True,
                 stop_ids: Sequence[int] = STOP_TOKEN_IDS) -> list[int]:
        """Greedy decoding; returns the new tokens (a stop token included when reached).

        use_cache=False recomputes the whole sequence at every step (slow, the cache's check).
        """
        audio_embeds, deepstack = self._audio(input_ids, mel, mode)
        prompt = list(input_ids)
        new: list[int] = []
        logits, cache = self(torch.tensor([prompt]), audio_embeds, deepstack, use_cache=use_cache)
        while True:
            token = int(torch.argmax(logits[0, -1]))
            new.append(token)
            if token in stop_ids or len(new) >= max_new_tokens:
                return new
            if use_cache:
                logits, cache = self(torch.tensor([[token]]), past_key_values=cache)
            else:
                logits, _ = self(torch.tensor([prompt + new]), audio_embeds, deepstack, use_cache=False)

    @torch.no_grad()
    def teacher_forced_logits(self, input_ids: Sequence[int], mel: np.ndarray | None,
                              mode: str = "chunked") -> np.ndarray:
        """Logits [S, vocab] (float32) of one forward pass over the whole sequence."""
        audio_embeds, deepstack = self._audio(input_ids, mel, mode)
        logits, _ = self(torch.tensor([list(input_ids)]), audio_embeds, deepstack, use_cache=False)
        return logits[0].float().numpy()


def _add_at(mask: torch.Tensor, values: torch.Tensor):
    """Forward hook adding `values` [n, hidden] to a layer's output at the `mask` positions."""

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        hidden = hidden.clone()
        hidden[mask] = hidden[mask] + values.to(hidden.dtype)
        if isinstance(output, (tuple, list)):
            return (hidden, *output[1:])
        return hidden

    return hook
