"""Quantized audio graph: the exported fp32 audio graph with its linear weights as MatMulNBits.

Every MatMul (and Gemm, the adapter/mergers) whose weight is a constant initializer becomes a
block-wise 8-bit or 4-bit MatMulNBits (SETTINGS; accuracy level 4 = int8 activations on CPU),
the same kernel the decoder uses, so it runs on the CPU and CUDA providers alike. The
conv stem, LayerNorms and attention products stay fp32. Tensors are read and written one at a
time (external data in, external data out), so a 4B-shape graph converts in bounded memory.

`audio_graph_error` measures the quantized graph against the fp32 one on generated clips; the
export records that in the manifest (quantization.audio_int8.error or audio_int4.error).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_moss_export.onnx_external import ExternalDataWriter, save_graph

from .blockwise import quantize_blockwise

MS = "com.microsoft"
DEFAULT_BLOCK = 128
DEFAULT_ACCURACY_LEVEL = 4
# What `export --audio-quant int8|int4` uses. int8: symmetric, block 128 (at 4B shape 3.9 %
# error at accuracy level 4, 3.2 % at level 0; a block of 32 gives 2.6 % for 9 % more bytes).
# int4: asymmetric, block 32, HQQ zero-point fit (39 % error at 4B shape against 41 % for
# round-to-nearest and 42 % for the clip search): the smallest graph (0.54 GB at 4B shape
# against 0.86 for int8), with a large error on random weights (see benchmarks/NOTES.md).
SETTINGS = {
    "int8": {"bits": 8, "block_size": 128, "symmetric": True, "method": "rtn"},
    "int4": {"bits": 4, "block_size": 32, "symmetric": False, "method": "hqq"},
}
# Clips (seconds) the error is measured on at export time: under one chunk, and ~10 s.
ERROR_CLIPS = (2.5, 10.0)


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _quantizable(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto], uses: Counter) -> bool:
    """A MatMul/Gemm with a 2-D float32 constant weight used nowhere else (Gemm: plain A @ B(^T) + C)."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
        return False
    b = weights.get(node.input[1])
    if b is None or len(b.dims) != 2 or b.data_type != onnx.TensorProto.FLOAT or uses[b.name] != 1:
        return False
    if node.op_type == "Gemm":
        return (_attr(node, "transA", 0) == 0 and _attr(node, "alpha", 1.0) == 1.0
                and _attr(node, "beta", 1.0) == 1.0)
    return True


def quantize_audio_graph(src: str | Path, dst: str | Path, bits: int = 8,
                         block_size: int = DEFAULT_BLOCK, symmetric: bool = True,
                         accuracy_level: int = DEFAULT_ACCURACY_LEVEL, method: str = "rtn"
                         ) -> dict[str, Any]:
    """Write `dst` (+ `dst.data`): the graph `src` with constant-weight MatMul/Gemm as MatMulNBits.

    Returns a JSON-ready description (counts, bytes, seconds).
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError("write the quantized graph next to the fp32 one, not over it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    uses = Counter(name for n in graph.node for name in n.input)

    def load(t: onnx.TensorProto) -> np.ndarray:
        return numpy_helper.to_array(t, base_dir=str(src.parent))

    nodes: list[onnx.NodeProto] = []
    replaced: set[str] = set()
    new_inits: list[onnx.TensorProto] = []
    counts = Counter()
    with ExternalDataWriter(dst) as writer:
        for node in graph.node:
            if not _quantizable(node, weights, uses):
                nodes.append(node)
                continue
            b = load(weights[node.input[1]])
            # MatMul's B is [K, N]; Gemm's is [K, N], or [N, K] with transB. MatMulNBits wants [N, K].
            w = b if node.op_type == "Gemm" and _attr(node, "transB", 0) else b.T
            n, k = w.shape
            q = quantize_blockwise(np.ascontiguousarray(w), bits=bits, block_size=block_size,
                                   symmetric=symmetric, method=method)
            base = node.name or node.output[0]
            names = [f"{base}.q{bits}", f"{base}.scales", f"{base}.zero_points"]
            new_inits.append(writer.tensor(names[0], q.packed))
            new_inits.append(writer.tensor(names[1], q.scales))
            inputs = [node.input[0], names[0], names[1]]
            if q.zero_points is not None:
                new_inits.append(writer.tensor(names[2], q.zero_points))
                inputs.append(names[2])
            bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 else ""
            out = node.output[0] if not bias else f"{base}/nbits_out"
            nodes.append(helper.make_node("MatMulNBits", inputs, [out], name=f"{base}/MatMulNBits",
                                          domain=MS, K=k, N=n, bits=bits, block_size=block_size,
                                          accuracy_level=accuracy_level))
            if bias:
                nodes.append(helper.make_node("Add", [out, bias], [node.output[0]],
                                              name=f"{base}/bias"))
            replaced.add(node.input[1])
            counts[node.op_type] += 1
        for t in graph.initializer:
            if t.name not in replaced:
                new_inits.append(writer.tensor(t.name, load(t)))
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.initializer[:]
        graph.initializer.extend(new_inits)
        if not any(o.domain == MS for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS, 1))
        save_graph(model, dst)
        data_bytes = writer.bytes_written
    return {
        "op": "MatMulNBits", "method": method, "bits": bits, "block_size": block_size,
        "symmetric": symmetric, "accuracy_level": accuracy_level, "quantized": dict(counts),
        "bytes": dst.stat().st_size + data_bytes, "seconds": round(time.perf_counter() - start, 2),
    }


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    """||other - reference|| / ||reference|| in float64."""
    ref = np.asarray(reference, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(other, dtype=np.float64) - ref) / max(np.linalg.norm(ref), 1e-30))


def audio_graph_error(fp32_graph: str | Path, quant_graph: str | Path, mode: str = "chunked",
                      seconds: Sequence[float] = ERROR_CLIPS, threads: int | None = 1
                      ) -> dict[str, Any]:
    """Relative error of audio_embeds / deepstack_embeds of `quant_graph` vs `fp32_graph` (worst clip)."""
    from edge_runtime.audio_encoder import AudioEncoder
    from edge_runtime.features import log_mel

    from .eval import eval_clip

    ref_enc = AudioEncoder(fp32_graph, mode=mode, threads=threads)
    q_enc = AudioEncoder(quant_graph, mode=mode, threads=threads)
    per_clip = []
    for seed, s in enumerate(seconds):
        mel = log_mel(eval_clip(s, seed))
        a, b = ref_enc.encode(mel), q_enc.encode(mel)
        per_clip.append({"seconds": s, "audio_embeds_rel": relative_error(a.embeds, b.embeds),
                         "deepstack_rel": relative_error(a.deepstack, b.deepstack)})
    return {
        "audio_embeds_rel": float(f"{max(c['audio_embeds_rel'] for c in per_clip):.4g}"),
        "deepstack_rel": float(f"{max(c['deepstack_rel'] for c in per_clip):.4g}"),
        "clips": [{k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in c.items()}
                  for c in per_clip],
        "mode": mode,
    }


def export_quantized_audio_graph(checkpoint, out_path: str | Path, kind: str = "int8",
                                 mode: str = "chunked",
                                 accuracy_level: int = DEFAULT_ACCURACY_LEVEL) -> dict[str, Any]:
    """Export the fp32 audio graph next to `out_path`, quantize it (`kind`: int8 or int4, see
    SETTINGS) into `out_path`, measure the error against the fp32 graph, delete the fp32 files;
    returns the description with the error."""
    from edge_moss_export.audio_graph import export_audio_graph

    if kind not in SETTINGS:
        raise ValueError(f"unknown audio graph quantization {kind!r}; choose one of {sorted(SETTINGS)}")
    out_path = Path(out_path)
    fp32 = out_path.with_name(out_path.stem + ".fp32.onnx")
    try:
        export_audio_graph(checkpoint, fp32, dtype="fp32")
        info = quantize_audio_graph(fp32, out_path, accuracy_level=accuracy_level, **SETTINGS[kind])
        info["error"] = audio_graph_error(fp32, out_path, mode=mode)
    finally:
        for path in (fp32, fp32.with_name(fp32.name + ".data")):
            path.unlink(missing_ok=True)
    return info
