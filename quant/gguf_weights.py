"""Read a CrispASR MOSS-Audio GGUF back into the checkpoint's tensor names, dequantized.

CrispASR's converter (models/convert-moss-audio-to-gguf.py in its tree) writes every checkpoint
tensor under a renamed key, in the checkpoint's own layout (numpy order, no transposes or head
permutations; ggml lists the dimensions reversed, which GGUFReader undoes): 2-D+ tensors as F16,
1-D ones as F32. Its quantizer then turns the language model's matrices (embedding and lm_head
included) into Q4_K and keeps the audio encoder, adapter and DeepStack mergers at F16.

`GGUFWeights` is a tensor source (`.names()`, `.numpy(name)`) like export.checkpoint.Checkpoint,
so the torch reference or the graph builders can take Q4_K weights as they take a checkpoint's.
`quantize_q4_k` is a plain numpy Q4_K encoder (min/max per sub-block, not ggml's search) for tests
that need a GGUF without the peer's quantizer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np

# (pattern, replacement) applied in order to a checkpoint name; mirrors the converter's renaming.
_RULES: tuple[tuple[str, str], ...] = (
    (r"^audio_encoder\.layer_norm\.", "enc.norm."),
    (r"^audio_encoder\.layers\.", "enc.blk."),
    (r"^audio_encoder\.", "enc."),  # conv1..3, stem_proj
    (r"\.self_attn_layer_norm\.", ".attn_norm."),
    (r"\.final_layer_norm\.", ".ffn_norm."),
    (r"\.self_attn\.out_proj\.", ".attn.o."),
    (r"\.self_attn\.([qkvo])_proj\.", r".attn.\1."),
    (r"\.self_attn\.([qk])_norm\.", r".attn.\1_norm."),
    (r"\.(fc[12])\.", r".ffn.\1."),
    (r"^audio_adapter\.(gate|up|down)_proj\.", r"adapter.\1."),
    (r"^deepstack_audio_merger_list\.(\d+)\.(gate|up|down)_proj\.", r"deepstack.\1.\2."),
    (r"^language_model\.embed_tokens\.", "llm.embed."),
    (r"^language_model\.norm\.", "llm.final_norm."),
    (r"^language_model\.layers\.", "llm.blk."),
    (r"\.mlp\.(gate|up|down)_proj\.", r".ffn.\1."),
    (r"\.input_layernorm\.", ".attn_norm."),
    (r"\.post_attention_layernorm\.", ".ffn_norm."),
    (r"^lm_head\.", "llm.lm_head."),
)

QK_K = 256  # values per Q4_K super-block (8 sub-blocks of 32)


def gguf_name(checkpoint_name: str) -> str:
    """The GGUF key CrispASR's converter gives a checkpoint tensor."""
    name = checkpoint_name
    for pattern, repl in _RULES:
        name = re.sub(pattern, repl, name)
    return name


class GGUFError(ValueError):
    """The GGUF does not hold the tensors the checkpoint names, or holds them in other shapes."""


class GGUFWeights:
    """A GGUF's tensors under checkpoint names, dequantized on request (the file is memory-mapped)."""

    def __init__(self, path: str | Path, checkpoint_names: Iterable[str]):
        import gguf

        self.path = Path(path)
        self._reader = gguf.GGUFReader(str(self.path))
        tensors = {t.name: t for t in self._reader.tensors}
        self._tensors = {}
        missing = []
        for name in checkpoint_names:
            key = gguf_name(name)
            if key in tensors:
                self._tensors[name] = tensors[key]
            else:
                missing.append(f"{name} (as {key})")
        if missing:
            raise GGUFError(f"{self.path}: {len(missing)} checkpoint tensors are not in the GGUF, "
                            f"e.g. {missing[0]}")

    def names(self) -> list[str]:
        return list(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape in numpy (checkpoint) order."""
        return tuple(int(d) for d in reversed(self._tensors[name].shape))

    def type_name(self, name: str) -> str:
        return self._tensors[name].tensor_type.name

    def numpy(self, name: str, dtype=np.float32) -> np.ndarray:
        import gguf

        t = self._tensors[name]
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        return np.asarray(values, dtype=dtype).reshape(self.shape(name))

    def types(self) -> dict[str, int]:
        """How many tensors of each GGML type (e.g. {'Q4_K': 253, 'F16': 420, 'F32': 700})."""
        counts: dict[str, int] = {}
        for name in self._tensors:
            counts[self.type_name(name)] = counts.get(self.type_name(name), 0) + 1
        return counts


# ---------------------------------------------------------------------------- Q4_K encoding

def _pack_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins per super-block -> the 12 bytes ggml stores ([n, 8] -> [n, 12])."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (mn[:, 0:4] & 0x3F) | ((mn[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    return out


def quantize_q4_k(weight: np.ndarray) -> np.ndarray:
    """Q4_K blocks (uint8 [rows, cols / 256 * 144]) of a [rows, cols] matrix, cols % 256 == 0.

    Each 32-value sub-block maps its [min(0, lo), hi] range onto 0..15; the 8 sub-block scales
    and minimums of a super-block are 6-bit multiples of fp16 super-block factors d and dmin.
    """
    w = np.asarray(weight, dtype=np.float32)
    rows, cols = w.shape
    if cols % QK_K:
        raise ValueError(f"Q4_K needs a row length divisible by {QK_K}, got {cols}")
    x = w.reshape(-1, 8, 32)
    lo = np.minimum(x.min(axis=-1), 0.0)
    hi = x.max(axis=-1)
    scale = (hi - lo) / 15.0  # [n, 8]
    minimum = -lo  # >= 0
    d = (scale.max(axis=-1) / 63.0).astype(np.float16)
    dmin = (minimum.max(axis=-1) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.clip(np.rint(scale / np.where(d32 > 0, d32, 1)), 0, 63).astype(np.uint8)
    mn = np.clip(np.rint(minimum / np.where(dmin32 > 0, dmin32, 1)), 0, 63).astype(np.uint8)
    step = (d32 * sc)[..., None]
    offset = (dmin32 * mn)[..., None]
    q = np.clip(np.rint((x + offset) / np.where(step > 0, step, 1)), 0, 15).astype(np.uint8)
    # qs: per 64 values, 32 bytes: sub-block 2j in the low nibbles, 2j+1 in the high ones.
    q = q.reshape(-1, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    blocks = np.concatenate([d.reshape(-1, 1).view(np.uint8), dmin.reshape(-1, 1).view(np.uint8),
                             _pack_scales(sc, mn), qs], axis=1)
    return blocks.reshape(rows, -1)


def write_gguf(path: str | Path, tensors: dict[str, tuple[np.ndarray, str]],
               arch: str = "moss_audio") -> Path:
    """Write `tensors` (checkpoint name -> (array, 'Q4_K' | 'Q8_0' | 'F16' | 'F32')) under the
    converter's names: a small stand-in for CrispASR's convert + quantize, for tests."""
    import gguf

    types = gguf.GGMLQuantizationType
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch)
    for name, (array, kind) in tensors.items():
        array = np.asarray(array, dtype=np.float32)
        if kind == "Q4_K":
            writer.add_tensor(gguf_name(name), quantize_q4_k(array), raw_dtype=types.Q4_K)
        elif kind == "Q8_0":
            writer.add_tensor(gguf_name(name), gguf.quants.quantize(array, types.Q8_0),
                              raw_dtype=types.Q8_0)
        elif kind == "F16":
            writer.add_tensor(gguf_name(name), array.astype(np.float16), raw_dtype=types.F16)
        elif kind == "F32":
            writer.add_tensor(gguf_name(name), array, raw_dtype=types.F32)
        else:
            raise ValueError(f"unsupported GGUF type {kind!r}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


__all__ = ["GGUFError", "GGUFWeights", "QK_K", "gguf_name", "quantize_q4_k", "write_gguf"]
