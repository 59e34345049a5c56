"""Random-weight MOSS-Audio checkpoints in exactly the Hugging Face release layout.

Every size keeps all 901 release tensor names (32 encoder layers, 36 decoder layers, 3 DeepStack
mergers, the full 151,936-token vocabulary); only the widths shrink. Tensors are generated one at
a time just before they are written, each from its own seeded generator, so the 4b size streams
shard by shard in bounded memory and the output is identical for a given seed.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_runtime import model_facts
from edge_runtime.model_config import MossAudioConfig

from .checkpoint import INDEX_FILE, expected_tensors
from .tokenizer_files import write_tokenizer_files

# Widths per size: (audio d_model, heads, ffn, downsample_hidden, output_dim, adapter_hidden,
#                   LLM hidden, intermediate, heads, kv heads, head_dim)
_WIDTHS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, enc_heads=4, enc_ffn=128, down_hidden=8, output_dim=64, adapter=128,
                 hidden=64, intermediate=128, heads=4, kv_heads=2, head_dim=16),
    "small": dict(d_model=256, enc_heads=4, enc_ffn=512, down_hidden=32, output_dim=256, adapter=512,
                  hidden=256, intermediate=512, heads=8, kv_heads=4, head_dim=32),
    "4b": dict(d_model=1280, enc_heads=20, enc_ffn=5120, down_hidden=480, output_dim=1280, adapter=8192,
               hidden=2560, intermediate=9728, heads=32, kv_heads=8, head_dim=128),
    # Qwen3-8B backbone behind the same audio encoder; adapter_hidden_size as in the 4B release.
    "8b": dict(d_model=1280, enc_heads=20, enc_ffn=5120, down_hidden=480, output_dim=1280, adapter=8192,
               hidden=4096, intermediate=12288, heads=32, kv_heads=8, head_dim=128),
}
SIZES = tuple(_WIDTHS)

# Default shard limits: small enough that tiny/small are sharded too (the index path is exercised),
# ~4 GB for 4b and 8b like the releases.
_DEFAULT_SHARD_BYTES = {"tiny": 16 << 20, "small": 96 << 20, "4b": 4 * 10**9, "8b": 4 * 10**9}

# Rows generated per step when streaming a tensor: bounds memory for the 389M-value embeddings.
_CHUNK_VALUES = 8 << 20


def fixture_config(size: str = "tiny") -> dict[str, Any]:
    """The config.json dict of a fixture checkpoint of `size` (release dims for '4b' and '8b')."""
    if size not in _WIDTHS:
        raise ValueError(f"unknown fixture size {size!r}; choose one of {', '.join(SIZES)}")
    w = _WIDTHS[size]
    layers = 36
    audio = {
        "d_model": w["d_model"],
        "output_dim": w["output_dim"],
        "num_mel_bins": model_facts.N_MELS,
        "encoder_layers": 32,
        "encoder_attention_heads": w["enc_heads"],
        "encoder_ffn_dim": w["enc_ffn"],
        "downsample_rate": 8,
        "downsample_hidden_size": w["down_hidden"],
        "encoder_attention_window_size": 100,
        "max_source_positions": 1500,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "activation_function": "gelu",
        "layer_norm_eps": 1e-5,
        "deepstack_encoder_layer_indexes": [8, 16, 24],
    }
    language = {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": model_facts.ENDOFTEXT_ID,
        "eos_token_id": model_facts.IM_END_ID,
        "head_dim": w["head_dim"],
        "hidden_act": "silu",
        "hidden_size": w["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": w["intermediate"],
        "max_position_embeddings": 40960,
        "max_window_layers": layers,
        "model_type": "qwen3",
        "num_attention_heads": w["heads"],
        "num_hidden_layers": layers,
        "num_key_value_heads": w["kv_heads"],
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    }
    return {
        "architectures": ["MossAudioModel"],
        "model_type": "moss_audio",
        "dtype": "bfloat16",
        "adapter_hidden_size": w["adapter"],
        "deepstack_num_inject_layers": 3,
        "ignore_index": -100,
        "num_hidden_layers": layers,
        "tie_word_embeddings": False,
        "vocab_size": 151936,
        "bos_token_id": model_facts.ENDOFTEXT_ID,
        "eos_token_id": model_facts.IM_END_ID,
        "audio_config": audio,
        "language_config": language,
    }


def processor_config() -> dict[str, Any]:
    """processor_config.json of the release."""
    return model_facts.release_processor_config()


def generation_config() -> dict[str, Any]:
    return {"bos_token_id": model_facts.ENDOFTEXT_ID, "eos_token_id": model_facts.IM_END_ID}


# ---------------------------------------------------------------- weights


def _init_rule(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(offset, scale) so that a tensor is offset + scale * N(0, 1)."""
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("embed_tokens.weight"):
        return 0.0, 0.5
    if leaf == "bias":
        return 0.0, 0.02
    if len(shape) == 1:  # LayerNorm / RMSNorm gains
        return 1.0, 0.02
    fan_in = int(np.prod(shape[1:]))  # in_features, or in_ch * 3 * 3 for a conv
    return 0.0, 1.0 / float(np.sqrt(fan_in))


def _tensor_chunks(name: str, shape: tuple[int, ...], seed: int):
    """Yield the tensor's bf16 bits (uint16, flat) in chunks; own generator per tensor."""
    offset, scale = _init_rule(name, shape)
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(name.encode())]))
    total = int(np.prod(shape))
    done = 0
    while done < total:
        n = min(_CHUNK_VALUES, total - done)
        x = rng.standard_normal(n, dtype=np.float32)
        x *= np.float32(scale)
        if offset:
            x += np.float32(offset)
        yield float32_to_bf16_bits(x)
        done += n


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bf16 (nearest, ties to even) and return the raw uint16 bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((u >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
    return ((u + rounding) >> np.uint32(16)).astype(np.uint16)


def _plan_shards(shapes: dict[str, tuple[int, ...]], shard_bytes: int) -> list[list[str]]:
    """Group tensors in state-dict order into shards of at most `shard_bytes` (bf16)."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, shape in shapes.items():
        nbytes = 2 * int(np.prod(shape))
        if shards[-1] and used + nbytes > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    return shards


def _write_shard(path: Path, names: list[str], shapes: dict[str, tuple[int, ...]], seed: int,
                 progress: Callable[[int], None] | None) -> int:
    """Write one bf16 safetensors shard, generating each tensor as it goes; returns data bytes."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    pos = 0
    order = sorted(names)  # safetensors lays tensors out by name
    for name in order:
        nbytes = 2 * int(np.prod(shapes[name]))
        header[name] = {"dtype": "BF16", "shape": list(shapes[name]), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for name in order:
            for bits in _tensor_chunks(name, shapes[name], seed):
                fh.write(bits.tobytes())
                if progress:
                    progress(bits.nbytes)
    return pos


def write_fixture(out: str | Path, size: str = "tiny", seed: int = 0,
                  shard_bytes: int | None = None) -> Path:
    """Write a random-weight checkpoint of `size` ('tiny', 'small', '4b', '8b') into `out`; return it.

    The directory holds config.json, generation_config.json, processor_config.json, sharded bf16
    model-0000N-of-0000M.safetensors with model.safetensors.index.json, and the tokenizer files.
    """
    config = fixture_config(size)
    shapes = expected_tensors(MossAudioConfig.from_dict(config))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Tokenizer first: a missing vocabulary package fails before gigabytes are written.
    write_tokenizer_files(out)
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", generation_config())
    _write_json(out / "processor_config.json", processor_config())

    for stale in out.glob("model*.safetensors"):  # from an earlier write with other shard counts
        stale.unlink()
    groups = _plan_shards(shapes, shard_bytes or _DEFAULT_SHARD_BYTES[size])
    total_bytes = sum(2 * int(np.prod(s)) for s in shapes.values())
    bar = None
    if size in ("4b", "8b"):
        from tqdm import tqdm

        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"fixture {size}")
    weight_map: dict[str, str] = {}
    try:
        for i, names in enumerate(groups):
            shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
            _write_shard(out / shard, names, shapes, seed, bar.update if bar else None)
            weight_map.update({n: shard for n in names})
    finally:
        if bar:
            bar.close()
    index = {"metadata": {"total_size": total_bytes},
             "weight_map": dict(sorted(weight_map.items()))}
    _write_json(out / INDEX_FILE, index)
    return out


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
