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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

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
    audio_quant: str | None = None  # None: default_audio_quant(); "int4" on request
    block_size: int | None = None
    symmetric: bool | None = None  # None: the measured best per kind (asymmetric int4, symmetric int8)
    accuracy_level: int | None = None
    lm_head_bits: int | None = None
    embeddings: str | None = None  # "fp16" or "int8"; default by quant
    max_context: int = 4096
    method: str | None = None  # None: "lsq" search for int4, round-to-nearest for int8
    fuse: bool | None = None  # None: fused q/k/v and gate/up matmuls for int4/int8
    target: str = "cpu"  # "cuda": fp16 decoder activations/KV cache (CUDA GQA needs them), fp16 audio graph
    compact: bool = False  # int4 only: the smallest bundle (see COMPACT)
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.quant not in QUANT_KINDS:
            raise EdgeMossError(f"--quant must be one of {', '.join(QUANT_KINDS)}, not {self.quant!r}")
        if self.encoder_mode not in ("chunked", "full"):
            raise EdgeMossError("--encoder-mode must be 'chunked' or 'full'")
        if self.audio_quant not in (None, "fp32", "fp16", "int8", "int4"):
            raise EdgeMossError("--audio-quant must be fp32, fp16, int8 or int4")
        if self.embeddings not in (None, "fp16", "int8", "int4", "fp32"):
            raise EdgeMossError("--embeddings must be fp32, fp16, int8 or int4")
        if self.target not in ("cpu", "cuda"):
            raise EdgeMossError(f"--target must be cpu or cuda, not {self.target!r}")
        if self.max_context < 64:
            raise EdgeMossError("--max-context must be at least 64 tokens")
        if self.compact and self.quant != "int4":
            raise EdgeMossError("--compact applies to --quant int4 only")

    def resolved(self) -> "ExportOptions":
        """These options with the --compact defaults filled in where nothing was given."""
        if not self.compact:
            return self
        given = {k: getattr(self, k) for k in COMPACT}
        return replace(self, **{k: (v if given[k] is None else given[k]) for k, v in COMPACT.items()})


# --compact: every large matrix at 4 bits, so that a 4B bundle fits in 3.2 GB: on top of the
# default int4 recipe (blocks of 128, int4 lm_head), the audio graph at int4 (0.54 GB instead of
# 0.86 at int8) and the embedding table at int4 (0.22 instead of 0.39). Its quality cost is
# measured in benchmarks/QUANT_QUALITY.md.
COMPACT = {"audio_quant": "int4", "embeddings": "int4", "block_size": 128}


def default_audio_quant(quant: str, target: str) -> str:
    """The audio graph's precision when --audio-quant is not given.

    fp32 bundles keep the exact reference form. int4 bundles for the CPU take the 8-bit audio
    graph: at 4B shape it adds 2.6 % to the int4 decoder's KL against the reference (0.0534
    against 0.0520; benchmarks/QUANT_QUALITY.md), costs 0.86 GB on disk instead of 1.62 and keeps
    its weights 8-bit in memory (ONNX Runtime's CPU provider widens an fp16 graph to float32),
    so a request peaks ~2 GB lower. Others store fp16 (half of fp32 for ~1e-3 relative error);
    CUDA keeps fp16 as it runs it.
    """
    if quant == "fp32" and target != "cuda":
        return "fp32"
    if quant == "int4" and target == "cpu":
        return "int8"
    return "fp16"


def export_bundle(checkpoint: str | Path, out: str | Path, options: ExportOptions | None = None,
                  force: bool = False, on_stage: Callable[[str], None] | None = None) -> Path:
    """Export `checkpoint` into the bundle folder `out`; returns its path.

    `on_stage(line)`, when given, hears one line as each stage starts and ends (the CLI prints
    them), so that a long export is never silent.
    """
    say = on_stage or (lambda line: None)
    from .audio_graph import export_audio_graph
    from .decoder_graph import build_decoder, write_embeddings

    options = options or ExportOptions()
    options.validate()
    options = options.resolved()
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
        audio_dtype = options.audio_quant or default_audio_quant(options.quant, options.target)
        audio_nbits = None
        say(f"[1/4] audio graph ({audio_dtype}, {ckpt.config.audio.encoder_layers} encoder layers): "
            "torch.onnx export" + (", then quantization and its error check" if audio_dtype in
                                   ("int8", "int4") else "") + " ...")
        if audio_dtype in ("int8", "int4"):  # fp32 export, then MatMulNBits, error measured vs fp32
            from edge_moss_quant.audio_quant import export_quantized_audio_graph

            audio_nbits = export_quantized_audio_graph(ckpt, staging / AUDIO_GRAPH, audio_dtype,
                                                       mode=options.encoder_mode)
        else:
            export_audio_graph(ckpt, staging / AUDIO_GRAPH, dtype=audio_dtype)
        steps["audio_graph_s"] = time.perf_counter() - t
        say(f"      audio graph done in {steps['audio_graph_s']:.1f} s")

        t = time.perf_counter()
        say(f"[2/4] decoder graph ({options.quant}, {ckpt.config.language.num_hidden_layers} "
            "layers, written tensor by tensor) ...")
        decoder_info = build_decoder(
            ckpt.numpy, ckpt.config, staging / DECODER_GRAPH, quant=options.quant,
            block_size=options.block_size, symmetric=options.symmetric,
            accuracy_level=options.accuracy_level, lm_head_bits=options.lm_head_bits,
            method=options.method, max_context=options.max_context, progress=options.progress,
            io_dtype="fp16" if options.target == "cuda" else "fp32", fuse=options.fuse,
        )
        steps["decoder_graph_s"] = time.perf_counter() - t
        say(f"      decoder graph done in {steps['decoder_graph_s']:.1f} s")

        t = time.perf_counter()
        emb_kind = options.embeddings or ("fp32" if options.quant == "fp32" else
                                          "fp16" if options.quant == "fp16" else "int8")
        say(f"[3/4] embedding table ({emb_kind}) ...")
        emb_files = write_embeddings(ckpt.numpy("language_model.embed_tokens.weight"), staging,
                                     emb_kind)
        steps["embeddings_s"] = time.perf_counter() - t
        say("[4/4] tokenizer, manifest (sizes and sha256 of every file) ...")

        tok_files = _copy_tokenizer(ckpt, staging / TOKENIZER_DIR)
        files = [p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()]
        manifest = _manifest(ckpt, options, audio_dtype, decoder_info, emb_kind, emb_files,
                             tok_files, steps)
        if audio_nbits:
            manifest["quantization"][f"audio_{audio_dtype}"] = audio_nbits
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
        "recipe": "compact" if options.compact else "default",
        "max_context": options.max_context,
        "quantization": {"audio": audio_dtype, "decoder": decoder_info},
        "embeddings": {"kind": emb_kind, "files": emb_files},
        "tokenizer": tok_files,
        "export_seconds": {k: round(v, 2) for k, v in steps.items()},
    }
