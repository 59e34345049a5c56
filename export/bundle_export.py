"""`edge-moss export`: checkpoint directory -> self-contained bundle folder.

Steps: audio graph (torch.onnx), decoder graph (written directly, quantized tensor by tensor),
embedding table, tokenizer files, manifest with sizes and hashes. The bundle is built in a
staging folder next to the target and renamed into place at the end, so an interrupted export
never leaves something that looks like a bundle.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime import __version__
from edge_runtime import model_facts as facts
from edge_runtime.bundle import (AUDIO_GRAPH, DECODER_GRAPH, TOKENIZER_DIR, default_special_ids,
                                 describe_files, write_manifest)
from edge_runtime.errors import EdgeMossError

from .checkpoint import Checkpoint, open_checkpoint

QUANT_KINDS = ("fp32", "fp16", "int8", "int4")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json",
                   "special_tokens_map.json", "chat_template.jinja", "generation_config.json",
                   "processor_config.json")


@dataclass
class ExportOptions:
    quant: str = "fp32"
    encoder_mode: str = "chunked"
    audio_quant: str | None = None  # None: fp32 for fp32 bundles, else fp16; "int8" on request
    block_size: int | None = None
    symmetric: bool | None = None  # None: the measured best per kind (asymmetric int4, symmetric int8)
    accuracy_level: int | None = None
    lm_head_bits: int | None = None
    embeddings: str | None = None  # "fp16" or "int8"; default by quant
    max_context: int = 4096
    method: str | None = None  # None: "mse" clip search for int4, round-to-nearest for int8
    target: str = "cpu"  # "cuda": fp16 decoder activations/KV cache (CUDA GQA needs them), fp16 audio graph
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.quant not in QUANT_KINDS:
            raise EdgeMossError(f"--quant must be one of {', '.join(QUANT_KINDS)}, not {self.quant!r}")
        if self.encoder_mode not in ("chunked", "full"):
            raise EdgeMossError("--encoder-mode must be 'chunked' or 'full'")
        if self.audio_quant not in (None, "fp32", "fp16", "int8"):
            raise EdgeMossError("--audio-quant must be fp32, fp16 or int8")
        if self.embeddings not in (None, "fp16", "int8", "fp32"):
            raise EdgeMossError("--embeddings must be fp32, fp16 or int8")
        if self.target not in ("cpu", "cuda"):
            raise EdgeMossError(f"--target must be cpu or cuda, not {self.target!r}")
        if self.max_context < 64:
            raise EdgeMossError("--max-context must be at least 64 tokens")


def export_bundle(checkpoint: str | Path, out: str | Path, options: ExportOptions | None = None,
                  force: bool = False) -> Path:
    """Export `checkpoint` into the bundle folder `out`; returns its path."""
    from .audio_graph import export_audio_graph
    from .decoder_graph import build_decoder, write_embeddings

    options = options or ExportOptions()
    options.validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise EdgeMossError(f"{out} exists and is not empty (use --force to replace it)")
    ckpt = open_checkpoint(checkpoint)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    steps: dict[str, float] = {}
    try:
        t = time.perf_counter()
        # Quantized bundles store the audio graph in fp16: half the disk for ~1e-3 relative error
        # (measured at 4B shape); fp32 bundles stay the exact reference form.
        audio_dtype = options.audio_quant or ("fp32" if options.quant == "fp32" and options.target != "cuda"
                                              else "fp16")
        audio_int8 = None
        if audio_dtype == "int8":  # fp32 export, then 8-bit MatMulNBits, error measured vs fp32
            from quant.audio_quant import export_int8_audio_graph

            audio_int8 = export_int8_audio_graph(ckpt, staging / AUDIO_GRAPH, mode=options.encoder_mode)
        else:
            export_audio_graph(ckpt, staging / AUDIO_GRAPH, dtype=audio_dtype)
        steps["audio_graph_s"] = time.perf_counter() - t

        t = time.perf_counter()
        decoder_info = build_decoder(
            ckpt.numpy, ckpt.config, staging / DECODER_GRAPH, quant=options.quant,
            block_size=options.block_size, symmetric=options.symmetric,
            accuracy_level=options.accuracy_level, lm_head_bits=options.lm_head_bits,
            method=options.method, max_context=options.max_context, progress=options.progress,
            io_dtype="fp16" if options.target == "cuda" else "fp32",
        )
        steps["decoder_graph_s"] = time.perf_counter() - t

        t = time.perf_counter()
        emb_kind = options.embeddings or ("fp32" if options.quant == "fp32" else
                                          "fp16" if options.quant == "fp16" else "int8")
        emb_files = write_embeddings(ckpt.numpy("language_model.embed_tokens.weight"), staging,
                                     emb_kind)
        steps["embeddings_s"] = time.perf_counter() - t

        tok_files = _copy_tokenizer(ckpt, staging / TOKENIZER_DIR)
        files = [p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()]
        manifest = _manifest(ckpt, options, audio_dtype, decoder_info, emb_kind, emb_files,
                             tok_files, steps)
        if audio_int8:
            manifest["quantization"]["audio_int8"] = audio_int8
        manifest["files"] = describe_files(staging, files)
        write_manifest(staging, manifest)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _copy_tokenizer(ckpt: Checkpoint, dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        src = ckpt.tokenizer_dir / name
        if src.is_file():
            shutil.copyfile(src, dest / name)
            copied.append(name)
    return copied


def _manifest(ckpt: Checkpoint, options: ExportOptions, audio_dtype: str,
              decoder_info: dict[str, Any], emb_kind: str, emb_files: list[str],
              tok_files: list[str], steps: dict[str, float]) -> dict[str, Any]:
    proc = ckpt.processor_config
    return {
        "created_by": f"edge-moss {__version__}",
        "source": {"name": ckpt.name, "path": str(Path(ckpt.path).resolve())},
        "model": ckpt.config.to_dict(),
        "special_ids": {**default_special_ids(),
                        "audio_token": int(proc.get("audio_token_id", facts.AUDIO_TOKEN_ID)),
                        "audio_start": int(proc.get("audio_start_id", facts.AUDIO_START_ID)),
                        "audio_end": int(proc.get("audio_end_id", facts.AUDIO_END_ID))},
        "time_markers": {
            "enabled": bool(proc.get("enable_time_marker", True)),
            "every_seconds": facts.MARKER_EVERY_SECONDS,
            "audio_tokens_per_second": facts.AUDIO_TOKENS_PER_SECOND,
        },
        "mel": {"sample_rate": int(proc.get("mel_sr", facts.SAMPLE_RATE)),
                "n_mels": int(proc.get("mel_dim", facts.N_MELS)),
                "n_fft": int(proc.get("n_fft", facts.N_FFT)),
                "hop_length": int(proc.get("hop", proc.get("hop_length", facts.HOP_LENGTH)))},
        "encoder_mode": options.encoder_mode,
        "target": options.target,
        "max_context": options.max_context,
        "quantization": {"audio": audio_dtype, "decoder": decoder_info},
        "embeddings": {"kind": emb_kind, "files": emb_files},
        "tokenizer": tok_files,
        "export_seconds": {k: round(v, 2) for k, v in steps.items()},
    }
