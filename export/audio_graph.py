"""ONNX export of the MOSS-Audio audio graph: encoder + adapter + DeepStack mergers.

One graph serves both encoder modes:
  inputs   mel          float32 [C, 128, F]   the chunk batch (chunked) or the whole clip (C = 1)
           last_frames  int64   []            true frame length of the last item (<= F)
  outputs  audio_embeds     float32 [N, hidden]
           deepstack_embeds float32 [k, N, hidden]
with N = (C - 1) * tokens(F) + tokens(last_frames). Positions restart at 0 in every item, and the
padded keys of the last item are masked, both computed in the graph. The module below is a plain
functional re-implementation (matmuls, LayerNorm, softmax with an additive mask) loading the
release weights; tests/test_audio_graph.py proves it against export.reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import onnx_ir as ir
import torch
from torch import nn

from edge_runtime.model_config import AudioEncoderConfig, ConfigError, MossAudioConfig
from edge_moss_export.checkpoint import open_checkpoint
from edge_moss_export.reference import GatedMLP

AUDIO_PREFIXES = ("audio_encoder.", "audio_adapter.", "deepstack_audio_merger_list.")
INPUT_NAMES = ["mel", "last_frames"]
OUTPUT_NAMES = ["audio_embeds", "deepstack_embeds"]
OPSET = 18
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def tokens_after_stem(frames: torch.Tensor) -> torch.Tensor:
    """Audio tokens of `frames` mel frames: (L - 1) // 2 + 1 three times (int64 tensor math)."""
    for _ in range(3):
        frames = torch.div(frames - 1, 2, rounding_mode="floor") + 1
    return frames


class _Attention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, length, self.heads, self.head_dim).transpose(1, 2)

        # Whisper scales the query before the product; keep that order for bit-closeness.
        q = split(self.q_proj(x) * self.head_dim ** -0.5)
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) + key_mask
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out_proj(context.transpose(1, 2).reshape(batch, length, width))


class _EncoderLayer(nn.Module):
    """Pre-LayerNorm Whisper encoder layer (bidirectional attention, exact-GELU MLP)."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.self_attn = _Attention(cfg.d_model, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, cfg.d_model)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), key_mask)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.final_layer_norm(x))))


class _Encoder(nn.Module):
    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        ch = cfg.downsample_hidden_size
        self.conv1 = nn.Conv2d(1, ch, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(ch, ch, kernel_size=3, stride=2, padding=1)
        self.stem_proj = nn.Linear(cfg.stem_features, cfg.d_model)
        self.layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)


class AudioGraph(nn.Module):
    """mel chunk batch -> (audio_embeds [N, hidden], deepstack_embeds [k, N, hidden]), float32 I/O."""

    def __init__(self, config: MossAudioConfig):
        super().__init__()
        a = config.audio
        if a.output_dim != a.d_model:
            raise ConfigError("audio_config.output_dim != d_model (an encoder out_proj) is not supported")
        k = config.num_deepstack
        self.audio_encoder = _Encoder(a)
        self.audio_adapter = GatedMLP(a.output_dim, config.adapter_hidden_size, config.language.hidden_size)
        self.deepstack_audio_merger_list = nn.ModuleList(
            GatedMLP(a.output_dim, config.adapter_hidden_size, config.language.hidden_size) for _ in range(k)
        )
        self.tap_layers = tuple(sorted(a.deepstack_encoder_layer_indexes))[:k]
        half = a.d_model // 2
        self.register_buffer(
            "inv_timescales",
            torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32)),
            persistent=False,
        )

    def forward(self, mel: torch.Tensor, last_frames: torch.Tensor):
        enc = self.audio_encoder
        dtype = enc.stem_proj.weight.dtype
        x = mel.to(dtype).unsqueeze(1)
        for conv in (enc.conv1, enc.conv2, enc.conv3):
            x = nn.functional.gelu(conv(x))
        chunks, _, _, tokens = x.shape
        x = enc.stem_proj(x.permute(0, 3, 1, 2).flatten(2))  # channel-major C*16 features

        # Positions 0..tokens-1 in every chunk, computed in float32 like the reference.
        steps = torch.arange(tokens, dtype=torch.float32, device=x.device)[:, None] * self.inv_timescales
        x = x + torch.cat([torch.sin(steps), torch.cos(steps)], dim=1).to(dtype)

        # Only the last item may be padded: its keys past tokens(last_frames) are masked.
        last_tokens = tokens_after_stem(last_frames.to(torch.int64).reshape(()))
        is_last = (torch.arange(chunks, device=x.device) == chunks - 1)[:, None]
        padded = is_last & (torch.arange(tokens, device=x.device)[None, :] >= last_tokens)
        key_mask = torch.where(padded, torch.finfo(dtype).min, 0.0).to(dtype)[:, None, None, :]

        taps = []
        for index, layer in enumerate(enc.layers):
            x = layer(x, key_mask)
            if index in self.tap_layers:
                taps.append(x)
        x = enc.layer_norm(x)

        # Valid tokens are a prefix of the flattened batch: all full chunks, then the last's head.
        count = (chunks - 1) * tokens + last_tokens
        n = count.item()
        torch._check(n >= 1)
        torch._check(n <= chunks * tokens)

        def valid(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(chunks * tokens, t.shape[-1])[:n]

        audio = self.audio_adapter(valid(x))
        deepstack = torch.stack([m(valid(t)) for m, t in zip(self.deepstack_audio_merger_list, taps)])
        return audio.float(), deepstack.float()

    @classmethod
    def from_checkpoint(cls, checkpoint, dtype: torch.dtype = torch.float32) -> "AudioGraph":
        """Load the audio tensors of a checkpoint (path or opened Checkpoint) in `dtype`."""
        if isinstance(checkpoint, (str, Path)):
            checkpoint = open_checkpoint(checkpoint)
        with torch.device("meta"):
            model = cls(checkpoint.config)
        names = [n for n in checkpoint.names() if n.startswith(AUDIO_PREFIXES)]
        model.load_state_dict({n: checkpoint.torch(n, dtype) for n in names}, strict=True, assign=True)
        half = checkpoint.config.audio.d_model // 2
        model.inv_timescales = torch.exp(
            -math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32))
        return model.eval()


def export_audio_graph(checkpoint, out_path: str | Path, dtype: str = "fp32") -> Path:
    """Export the audio graph of `checkpoint` to `out_path` (+ `<name>.onnx.data`); returns the path.

    dtype "fp16" stores the weights and computes in float16 with float32 inputs/outputs.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(checkpoint, (str, Path)):
        checkpoint = open_checkpoint(checkpoint)
    cache = _GraphCache.from_env(checkpoint, dtype)
    if cache is not None and cache.restore(out_path):
        return out_path
    model = AudioGraph.from_checkpoint(checkpoint, DTYPES[dtype])
    example = (torch.zeros(2, 128, 400), torch.tensor(150, dtype=torch.int64))
    chunks, frames = torch.export.Dim("chunks", min=1), torch.export.Dim("frames", min=1)
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            model, example, dynamo=True, opset_version=OPSET,
            input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
            dynamic_shapes={"mel": {0: chunks, 2: frames}, "last_frames": {}},
            external_data=True, optimize=True, verbose=False,
        )
    _name_dynamic_output_axes(program)
    for stale in (out_path, out_path.with_name(out_path.name + ".data")):
        stale.unlink(missing_ok=True)
    program.save(out_path, external_data=True)
    if cache is not None:
        cache.store(out_path)
    return out_path


class _GraphCache:
    """Opt-in reuse of an exported graph: $EDGE_MOSS_EXPORT_CACHE=DIR.

    Why: the exporter's cost is per graph node, not per weight (trace, decompose, optimize), and
    MOSS-Audio's encoder keeps its 32 layers even in the tiny test fixture, so each export of the
    tiny graph takes ~20-40 s on 2 vCPUs however small its weights. Every bundle recipe of one
    checkpoint (int4, int8, --compact, both encoder modes) starts from the same fp32 graph; with
    the cache it is exported once. The key is the content: the config, the audio tensors' bytes,
    the precision, this module's source and the torch version, so a changed
    checkpoint or exporter never reuses a stale graph. The test suite sets it for its session.
    """

    ENV = "EDGE_MOSS_EXPORT_CACHE"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def from_env(cls, checkpoint, dtype: str) -> "_GraphCache | None":
        root = os.environ.get(cls.ENV)
        if not root:
            return None
        digest = hashlib.sha256()
        for part in (json.dumps(checkpoint.config.to_dict(), sort_keys=True), dtype,
                     torch.__version__, Path(__file__).read_text()):
            digest.update(part.encode() + b"\0")
        for tensor in sorted(n for n in checkpoint.names() if n.startswith(AUDIO_PREFIXES)):
            digest.update(tensor.encode())
            digest.update(checkpoint.numpy(tensor).tobytes())
        return cls(Path(root) / f"audio-graph-{digest.hexdigest()[:32]}")

    STORED = "graph.onnx"

    def restore(self, out_path: Path) -> bool:
        """Write the cached graph as `out_path` (+ `.data`); False when there is none."""
        graph, data = self.folder / self.STORED, self.folder / (self.STORED + ".data")
        if not (graph.is_file() and data.is_file()):
            return False
        shutil.copyfile(data, out_path.with_name(out_path.name + ".data"))
        _save_pointing_to(graph, out_path, out_path.name + ".data")
        return True

    def store(self, out_path: Path) -> None:
        """Keep a copy of the files just exported (a cache that cannot be written is skipped)."""
        staging = None
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.folder.parent))
            shutil.copyfile(out_path.with_name(out_path.name + ".data"),
                            staging / (self.STORED + ".data"))
            _save_pointing_to(out_path, staging / self.STORED, self.STORED + ".data")
            staging.rename(self.folder)  # atomic; loses harmlessly to a concurrent writer
        except OSError:
            pass
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)


def _save_pointing_to(src: Path, dst: Path, data_name: str) -> None:
    """Copy the graph `src` to `dst` with its external-data references renamed to `data_name`
    (the weights file keeps its bytes; only the name the graph records changes)."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name
    onnx.save(model, str(dst))


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs warnings meant for its developers (torchvision ops it skips, deprecations);
    users of `edge-moss export` should see progress and errors only."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _name_dynamic_output_axes(program) -> None:
    """Give the data-dependent token axis a readable name in the graph outputs."""
    for value in program.model.graph.outputs:
        dims = list(value.shape) if value.shape is not None else []
        if value.name == "audio_embeds" and dims:
            dims[0] = "tokens"
        elif value.name == "deepstack_embeds" and len(dims) > 1:
            dims[1] = "tokens"
        else:
            continue
        value.shape = ir.Shape(dims)


def main(argv: list[str] | None = None) -> int:
    """python -m edge_moss_export.audio_graph CHECKPOINT OUT.onnx [--dtype fp16]"""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = export_audio_graph(args.checkpoint, args.out, args.dtype)
    size = path.stat().st_size + path.with_name(path.name + ".data").stat().st_size
    print(f"exported {path} ({size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
