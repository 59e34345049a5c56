"""The benchmark's inputs: a fixture checkpoint, its bundles (built once, reused), their sizes, and
the bytes a decode step must read (the decode roofline's denominator).

Everything lives under the cache folder (benchmarks/cache/, ignored by git). Each bundle export
runs `edge-moss export` in a child process whose wall time and peak RSS are saved next to the
bundle, so a reused bundle still reports how long and how much memory its export took.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .subproc import run_tracked

AUDIO_INT8_DIR = "audio-int8"


def link_bundle_except(base: Path, out: Path, graph: str) -> None:
    """Hard-link every file of bundle `base` into `out` but graph `graph` (and its .data file) and
    the manifest: the start of a variant bundle that differs in that one graph."""
    for src in base.rglob("*"):
        rel = src.relative_to(base)
        if src.is_dir() or rel.name.startswith(graph) or rel.name == "manifest.json":
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(src, out / rel)


def ensure_checkpoint(size: str, cache: Path, checkpoint: str | None = None) -> Path:
    """The fixture checkpoint to use: `checkpoint` if given, else cache/ckpt-SIZE (written once)."""
    if checkpoint:
        path = Path(checkpoint)
        if not (path / "config.json").is_file():
            raise SystemExit(f"--checkpoint {path}: no config.json there")
        return path
    path = cache / f"ckpt-{size}"
    if not (path / "model.safetensors.index.json").is_file():
        from edge_moss_export.fixture import write_fixture

        print(f"[bench] writing the {size} fixture checkpoint to {path}", flush=True)
        write_fixture(path, size=size, seed=0)
    return path


def ensure_bundle(checkpoint: Path, out: Path, quant: str, log: Path | None = None) -> dict[str, Any]:
    """Export (or reuse) the bundle for `quant`; returns {path, export: {wall_s, peak_rss_mb, ...}}."""
    stats_path = out.with_name(out.name + ".export.json")
    if (out / "manifest.json").is_file() and stats_path.is_file():
        return {"path": str(out), "export": {**json.loads(stats_path.read_text()), "reused": True}}
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "edge_runtime.cli", "export", str(checkpoint), "-o", str(out),
           "--quant", quant]
    print(f"[bench] exporting {quant} bundle -> {out}", flush=True)
    res = run_tracked(cmd, log=log)
    if res["returncode"] != 0 or not (out / "manifest.json").is_file():
        raise RuntimeError(f"export {quant} failed (exit {res['returncode']}): {res['tail'][-600:]}")
    stats = {"wall_s": round(res["wall_s"], 2), "peak_rss_mb": round(res["peak_rss_mb"], 1),
             "command": "edge-moss export CHECKPOINT -o BUNDLE --quant " + quant}
    manifest = json.loads((out / "manifest.json").read_text())
    stats["steps_s"] = manifest.get("export_seconds", {})
    stats_path.write_text(json.dumps(stats, indent=2))
    return {"path": str(out), "export": {**stats, "reused": False}}


def ensure_int8_audio_graph(fp32_graph: Path, out_dir: Path, log: Path | None = None) -> dict[str, Any]:
    """An int8 audio graph derived from the fp32 one with ONNX Runtime's dynamic quantization
    (int8 weights for MatMul/Gemm, activations quantized per call)."""
    out = out_dir / "audio.onnx"
    if out.is_file():
        return {"path": str(out), "method": "onnxruntime.quantization.quantize_dynamic", "reused": True}
    out_dir.mkdir(parents=True, exist_ok=True)
    # The exported graph carries value_info that ONNX shape inference disagrees with; quantize a
    # copy of the graph without it, next to a temporary copy of the weights (onnx refuses links).
    import onnx

    src_dir = out_dir / "source"
    shutil.rmtree(src_dir, ignore_errors=True)
    src_dir.mkdir()
    src = src_dir / "source.onnx"
    model = onnx.load(str(fp32_graph), load_external_data=False)
    del model.graph.value_info[:]
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    for loc in locations:
        shutil.copyfile(fp32_graph.parent / loc, src_dir / loc)
    onnx.save(model, str(src))
    tmp = out_dir / "audio.partial.onnx"
    code = ("import sys, onnx; from onnxruntime.quantization import quantize_dynamic, QuantType; "
            "quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, "
            "op_types_to_quantize=['MatMul', 'Gemm'], use_external_data_format=True); "
            # re-save as audio.onnx + audio.onnx.data (quantize_dynamic names the data file oddly)
            "m = onnx.load(sys.argv[2]); "
            "onnx.save(m, sys.argv[3], save_as_external_data=True, all_tensors_to_one_file=True, "
            "location='audio.onnx.data', size_threshold=1024)")
    res = run_tracked([sys.executable, "-c", code, str(src), str(tmp), str(out)], log=log)
    shutil.rmtree(src_dir, ignore_errors=True)
    for stale in out_dir.glob("audio.partial.onnx*"):
        stale.unlink()
    if res["returncode"] != 0 or not out.is_file():
        raise RuntimeError(f"int8 audio quantization failed: {res['tail'][-400:]}")
    return {"path": str(out), "method": "onnxruntime.quantization.quantize_dynamic (MatMul/Gemm int8)",
            "seconds": round(res["wall_s"], 1), "peak_rss_mb": round(res["peak_rss_mb"], 1),
            "reused": False}


def _size(paths: list[Path]) -> int:
    """Bytes of the files, each hard-linked file counted once."""
    seen: dict[tuple[int, int], int] = {}
    for p in paths:
        if p.is_file():
            st = p.stat()
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def bundle_sizes(bundle: Path) -> dict[str, int]:
    """Bytes on disk per part: audio graph, decoder graph, embedding table, tokenizer, total."""
    files = [p for p in bundle.rglob("*") if p.is_file()]
    audio = [p for p in files if p.name.startswith("audio.onnx")]
    decoder = [p for p in files if p.name.startswith("decoder.onnx")]
    emb = [p for p in files if p.name.startswith("embed_tokens")]
    tok = [p for p in files if "tokenizer" in p.relative_to(bundle).parts]
    return {"audio": _size(audio), "decoder": _size(decoder), "embeddings": _size(emb),
            "tokenizer": _size(tok), "total": _size(files)}


def decoder_weight_bytes(decoder_onnx: Path) -> dict[str, int]:
    """Bytes of the decoder's weights: on disk, and as a decode step reads them.

    fp16 weights feeding a Cast to float are folded to float32 when the session loads, so they are
    counted twice over as read. The RoPE tables are excluded (a step reads one row of each); the
    embedding table is not in the graph (the runtime gathers one row of it outside).
    """
    import onnx

    model = onnx.load(str(decoder_onnx), load_external_data=False)
    cast_inputs = {n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    disk = read = 0
    for init in model.graph.initializer:
        size = len(init.raw_data)
        for entry in init.external_data:
            if entry.key == "length":
                size = int(entry.value)
        if not size:
            dims = 1
            for d in init.dims:
                dims *= d
            size = dims * 4
        disk += size
        if init.name in ("cos_cache", "sin_cache"):
            continue
        read += size * 2 if (init.name in cast_inputs and init.data_type == onnx.TensorProto.FLOAT16) \
            else size
    return {"disk": disk, "read_per_token": read}


def backbone_params(config_path: Path) -> dict[str, int]:
    """Parameter counts of the Qwen3 backbone from config.json (matmul weights only)."""
    cfg = json.loads(Path(config_path).read_text())
    lang = cfg["language_config"]
    h, inter = lang["hidden_size"], lang["intermediate_size"]
    nh, kvh, hd = lang["num_attention_heads"], lang["num_key_value_heads"], lang["head_dim"]
    per_layer = h * nh * hd * 2 + h * kvh * hd * 2 + 3 * h * inter
    layers = per_layer * lang["num_hidden_layers"]
    vocab = cfg.get("vocab_size", lang["vocab_size"])
    return {"layers": layers, "lm_head": h * vocab, "embeddings": h * vocab, "hidden": h,
            "kv_values_per_token": lang["num_hidden_layers"] * kvh * hd * 2}
