"""Read a MOSS-Audio checkpoint in the Hugging Face release layout, without a model hub or torch.

The safetensors headers are parsed here and each tensor is memory-mapped from its shard on
demand, so the export can stream the 10 GB model one tensor at a time.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import model_facts
from edge_runtime.errors import CheckpointError
from edge_runtime.model_config import ConfigError, MossAudioConfig

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
REQUIRED_TOKENIZER_FILES = ("vocab.json", "merges.txt")

# safetensors dtype tag -> (bytes per element, numpy dtype used to view the raw bytes).
_DTYPES: dict[str, tuple[int, np.dtype]] = {
    "F32": (4, np.dtype("<f4")),
    "F16": (2, np.dtype("<f2")),
    "BF16": (2, np.dtype("<u2")),  # raw bits; widened to float32 by a shift
}

# Header size sanity bound: the release headers are ~100 KB; anything past this is garbage.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def expected_tensors(cfg: MossAudioConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the release with its shape, in the model's state-dict order."""
    a, lang = cfg.audio, cfg.language
    t: dict[str, tuple[int, ...]] = {}
    c = a.downsample_hidden_size
    t["audio_encoder.conv1.weight"] = (c, 1, 3, 3)
    t["audio_encoder.conv1.bias"] = (c,)
    for i in (2, 3):
        t[f"audio_encoder.conv{i}.weight"] = (c, c, 3, 3)
        t[f"audio_encoder.conv{i}.bias"] = (c,)
    d = a.d_model
    t["audio_encoder.stem_proj.weight"] = (d, a.stem_features)
    t["audio_encoder.stem_proj.bias"] = (d,)
    for n in range(a.encoder_layers):
        p = f"audio_encoder.layers.{n}."
        # Whisper attention: k_proj has no bias, the other three do.
        t[p + "self_attn.k_proj.weight"] = (d, d)
        for proj in ("v_proj", "q_proj", "out_proj"):
            t[p + f"self_attn.{proj}.weight"] = (d, d)
            t[p + f"self_attn.{proj}.bias"] = (d,)
        t[p + "self_attn_layer_norm.weight"] = (d,)
        t[p + "self_attn_layer_norm.bias"] = (d,)
        t[p + "fc1.weight"] = (a.encoder_ffn_dim, d)
        t[p + "fc1.bias"] = (a.encoder_ffn_dim,)
        t[p + "fc2.weight"] = (d, a.encoder_ffn_dim)
        t[p + "fc2.bias"] = (d,)
        t[p + "final_layer_norm.weight"] = (d,)
        t[p + "final_layer_norm.bias"] = (d,)
    t["audio_encoder.layer_norm.weight"] = (d,)
    t["audio_encoder.layer_norm.bias"] = (d,)
    if a.output_dim != d:  # upstream uses Identity when the widths agree
        t["audio_encoder.out_proj.weight"] = (a.output_dim, d)

    h, hd = lang.hidden_size, lang.head_dim
    t["language_model.embed_tokens.weight"] = (cfg.vocab_size, h)
    for n in range(lang.num_hidden_layers):
        p = f"language_model.layers.{n}."
        t[p + "self_attn.q_proj.weight"] = (lang.num_attention_heads * hd, h)
        t[p + "self_attn.k_proj.weight"] = (lang.num_key_value_heads * hd, h)
        t[p + "self_attn.v_proj.weight"] = (lang.num_key_value_heads * hd, h)
        t[p + "self_attn.o_proj.weight"] = (h, lang.num_attention_heads * hd)
        t[p + "self_attn.q_norm.weight"] = (hd,)
        t[p + "self_attn.k_norm.weight"] = (hd,)
        t[p + "mlp.gate_proj.weight"] = (lang.intermediate_size, h)
        t[p + "mlp.up_proj.weight"] = (lang.intermediate_size, h)
        t[p + "mlp.down_proj.weight"] = (h, lang.intermediate_size)
        t[p + "input_layernorm.weight"] = (h,)
        t[p + "post_attention_layernorm.weight"] = (h,)
    t["language_model.norm.weight"] = (h,)

    mergers = ["audio_adapter"] + [f"deepstack_audio_merger_list.{i}" for i in range(cfg.num_deepstack)]
    for m in mergers:
        t[f"{m}.gate_proj.weight"] = (cfg.adapter_hidden_size, a.output_dim)
        t[f"{m}.up_proj.weight"] = (cfg.adapter_hidden_size, a.output_dim)
        t[f"{m}.down_proj.weight"] = (h, cfg.adapter_hidden_size)
    if not cfg.tie_word_embeddings:
        t["lm_head.weight"] = (cfg.vocab_size, h)
    return t


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its shard, dtype tag, shape and absolute byte range."""

    shard: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """Parse a safetensors header; return (header dict, byte offset where the data starts)."""
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"shard {path.name} is truncated ({size} bytes, no header)")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > _MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"shard {path.name} is truncated or not safetensors (header of {n} bytes)")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"shard {path.name} has an unreadable safetensors header") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"shard {path.name} has an unreadable safetensors header")
    return header, 8 + n


def _shard_entries(path: Path) -> dict[str, TensorEntry]:
    """All tensors of one shard, checking that each fits inside the file."""
    header, data_start = read_safetensors_header(path)
    size = path.stat().st_size
    out: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"shard {path.name}: malformed header entry for {name}") from None
        if dtype not in _DTYPES:
            raise CheckpointError(
                f"tensor {name} in {path.name} has dtype {dtype}; supported: {', '.join(_DTYPES)}"
            )
        nbytes = _DTYPES[dtype][0] * int(np.prod(shape, dtype=np.int64))
        if end - begin != nbytes:
            raise CheckpointError(
                f"tensor {name} in {path.name}: byte range {end - begin} does not match shape {list(shape)} {dtype}"
            )
        if data_start + end > size:
            raise CheckpointError(
                f"shard {path.name} is truncated: tensor {name} ends at byte {data_start + end}, "
                f"file has {size}"
            )
        out[name] = TensorEntry(path, dtype, shape, data_start + begin, data_start + end)
    return out


class Checkpoint:
    """A validated MOSS-Audio checkpoint directory; tensors are read lazily, one at a time."""

    def __init__(self, path: Path, config: MossAudioConfig, entries: dict[str, TensorEntry],
                 extra_names: list[str]):
        self.path = path
        self.config = config
        self._entries = entries
        self.extra_names = extra_names

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def tokenizer_dir(self) -> Path:
        return self.path

    @property
    def processor_config(self) -> dict[str, Any]:
        """processor_config.json merged over the release defaults."""
        cfg: dict[str, Any] = model_facts.release_processor_config()
        file = self.path / "processor_config.json"
        if file.is_file():
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{file} is not valid JSON: {exc}") from None
            if isinstance(data, dict):
                cfg.update(data)
        return cfg

    def names(self) -> list[str]:
        """Tensor names on disk (expected ones in state-dict order, then any extras)."""
        return list(self._entries)

    def _entry(self, name: str) -> TensorEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise CheckpointError(f"checkpoint {self.path}: no tensor named {name}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def dtype(self, name: str) -> str:
        """The safetensors dtype tag on disk: 'BF16', 'F16' or 'F32'."""
        return self._entry(name).dtype

    def shard_of(self, name: str) -> Path:
        return self._entry(name).shard

    def numpy(self, name: str, dtype: Any = np.float32) -> np.ndarray:
        """The tensor as a new numpy array (bf16 widened exactly to float32 first)."""
        e = self._entry(name)
        raw_dtype = _DTYPES[e.dtype][1]
        count = int(np.prod(e.shape, dtype=np.int64))
        if count == 0:
            return np.zeros(e.shape, dtype=dtype)
        raw = np.memmap(e.shard, dtype=raw_dtype, mode="r", offset=e.start, shape=(count,))
        if e.dtype == "BF16":
            # bf16 is the top half of a float32: widen the bits in place, reinterpret.
            bits = raw.astype(np.uint32)
            bits <<= np.uint32(16)
            arr = bits.view(np.float32).reshape(e.shape)
            # One copy only when another dtype is asked for (keeps peak memory at ~1x float32).
            return arr if np.dtype(dtype) == np.float32 else arr.astype(dtype)
        return np.array(raw, dtype=dtype).reshape(e.shape)

    def torch(self, name: str, dtype: Any = None):
        """The tensor as a torch tensor (float32 unless `dtype` says otherwise)."""
        import torch

        return torch.from_numpy(self.numpy(name)).to(dtype or torch.float32)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {len(self._entries)} tensors)"


def _load_index(path: Path) -> dict[str, str]:
    index_path = path / INDEX_FILE
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path}: {INDEX_FILE} is not valid JSON ({exc})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"checkpoint {path}: {INDEX_FILE} has no weight_map")
    return {str(k): str(v) for k, v in weight_map.items()}


def _collect_entries(path: Path) -> dict[str, TensorEntry]:
    """Read every shard header the checkpoint names; check index and shards agree."""
    if (path / INDEX_FILE).is_file():
        weight_map = _load_index(path)
        shards = sorted(set(weight_map.values()))
    elif (path / SINGLE_FILE).is_file():
        weight_map, shards = None, [SINGLE_FILE]
    else:
        raise CheckpointError(
            f"checkpoint {path}: no {INDEX_FILE} or {SINGLE_FILE} (no weights)"
        )
    entries: dict[str, TensorEntry] = {}
    for shard in shards:
        shard_path = path / shard
        if "/" in shard or "\\" in shard or not shard_path.is_file():
            raise CheckpointError(f"checkpoint {path}: shard {shard} named in the index is missing")
        for name, entry in _shard_entries(shard_path).items():
            if weight_map is not None and weight_map.get(name) != shard:
                continue  # a stray tensor the index does not point here; ignore like transformers
            entries[name] = entry
    if weight_map is not None:
        for name, shard in weight_map.items():
            if name not in entries:
                raise CheckpointError(
                    f"checkpoint {path}: tensor {name} is in the index but not in shard {shard}"
                )
    return entries


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open and validate a MOSS-Audio checkpoint directory (config, shards, tensors, tokenizer)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"checkpoint {path}: no config.json")
    try:
        config = MossAudioConfig.from_file(path / "config.json")
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    for fname in REQUIRED_TOKENIZER_FILES:
        if not (path / fname).is_file():
            raise CheckpointError(f"checkpoint {path}: tokenizer file {fname} is missing")

    found = _collect_entries(path)
    expected = expected_tensors(config)
    for name, shape in expected.items():
        entry = found.get(name)
        if entry is None:
            raise CheckpointError(f"checkpoint {path}: tensor {name} is missing")
        if entry.shape != shape:
            raise CheckpointError(
                f"checkpoint {path}: tensor {name} has shape {list(entry.shape)}, expected {list(shape)}"
            )
    extra = [n for n in found if n not in expected]
    if extra:
        log.warning("checkpoint %s: %d unexpected tensors ignored (e.g. %s)", path, len(extra), extra[0])
    ordered = {n: found[n] for n in expected}
    ordered.update({n: found[n] for n in extra})
    return Checkpoint(path.resolve(), config, ordered, extra)
