"""Build the Qwen3 backbone of MOSS-Audio as a KV-cached ONNX decoder with DeepStack inputs.

The graph is written node by node with onnx.helper, using ONNX Runtime's contrib ops
(com.microsoft): SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization for RMSNorm,
GroupQueryAttention for attention with the rotary embedding inside (rotate-half form, like
Qwen3) and a KV cache that is one preallocated buffer per layer shared between past and present,
and MatMulNBits for weight-only int8/int4 linears. Weights stream tensor by tensor into one
`.onnx.data` file, so a 4B model builds in bounded memory.

Graph interface (batch 1):
  inputs   inputs_embeds            float32 [1, S, hidden]
           deepstack_embeds         float32 [k, 1, S, hidden]  (zeros where nothing is injected)
           seqlens_k                int32   [1]   total valid length - 1 (after this step)
           total_sequence_length    int32   []    total valid length (after this step)
           num_logits_to_keep       int64   []    logits are computed for the last n positions
           past_key_values.{i}.key / .value  float32 [1, kv_heads, max_context, head_dim]
  outputs  logits                   float32 [1, n, vocab]
           present.{i}.key / .value (bind to the same buffers as past: GQA then writes in place)
After decoder layer i < k, deepstack_embeds[i] is added to the hidden states.
With io_dtype="fp16" (for CUDA) the cache buffers are float16 and everything between the float32
edges runs in fp16.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from edge_runtime.model_config import MossAudioConfig
from edge_moss_quant.blockwise import METHODS, quantize_blockwise

from .embedding_table import write_embedding_table
from .onnx_external import ExternalDataWriter, save_graph

QUANT_KINDS = ("fp32", "fp16", "int8", "int4")
IO_DTYPES = ("fp32", "fp16")
LM_HEAD_KINDS = ("fp32", "fp16", "int8", "int4")
MS = "com.microsoft"
OPSET = 21
GRAPH_FORMAT = "edge-moss-decoder/1"

TensorSource = Callable[[str], np.ndarray]


def tensor_source(source: Any) -> TensorSource:
    """Adapt a Checkpoint (has .numpy), a mapping name -> array, or a callable to get(name)."""
    if hasattr(source, "numpy") and callable(source.numpy):
        return lambda name: source.numpy(name, np.float32)
    if isinstance(source, Mapping):
        return lambda name: np.asarray(source[name], dtype=np.float32)
    if callable(source):
        return lambda name: np.asarray(source(name), dtype=np.float32)
    raise TypeError(f"not a tensor source: {type(source).__name__}")


def rope_caches(rows: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin caches [rows, head_dim/2] for GroupQueryAttention (non-interleaved RoPE).

    Computed in float32 the way transformers' Qwen3RotaryEmbedding does, so positions round
    identically to the reference.
    """
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (1.0 / (np.float32(theta) ** exponent)).astype(np.float32)
    angles = np.arange(rows, dtype=np.float32)[:, None] * inv_freq[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class _GraphWriter:
    """Collects nodes and initializers; initializers go straight to the external-data file."""

    def __init__(self, writer: ExternalDataWriter):
        self.writer = writer
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._consts: dict[tuple, str] = {}
        self._count = 0
        # float32, or float16 for io_dtype="fp16" (norm gains, fp weights, scales follow it)
        self.act_dtype = np.float32

    def init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.writer.tensor(name, array))
        return name

    def const(self, values, dtype=np.int64) -> str:
        """A small shared constant initializer (shapes, axes, indices)."""
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(f"const_{len(self._consts)}", array)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, domain: str = "",
           name: str | None = None, **attrs) -> list[str]:
        self._count += 1
        name = name or f"{op_type}_{self._count}"
        if isinstance(outputs, int):
            outputs = [f"{name}/out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, domain=domain or None,
                                           **attrs))
        return outputs


@dataclass(frozen=True)
class _LinearSpec:
    kind: str  # fp32 | fp16 | int8 | int4
    block_size: int
    symmetric: bool
    method: str
    accuracy_level: int | None


def _linear(g: _GraphWriter, x: str, weight: np.ndarray, name: str, spec: _LinearSpec,
            out: str | None = None) -> str:
    """x @ weight.T with weight [N, K] in torch layout; returns the output name."""
    n, k = weight.shape
    outputs = [out] if out else 1
    if spec.kind == "fp32" or (spec.kind == "fp16" and g.act_dtype == np.float16):
        # With fp16 activations MatMul needs fp16 weights: both kinds store them as fp16.
        b = g.init(f"{name}.weight_t", np.ascontiguousarray(weight.T, dtype=g.act_dtype))
        return g.op("MatMul", [x, b], outputs, name=f"{name}/MatMul")[0]
    if spec.kind == "fp16":
        b16 = g.init(f"{name}.weight_t.fp16", np.ascontiguousarray(weight.T).astype(np.float16))
        b = g.op("Cast", [b16], 1, name=f"{name}/Cast", to=TensorProto.FLOAT)[0]
        return g.op("MatMul", [x, b], outputs, name=f"{name}/MatMul")[0]
    bits = 8 if spec.kind == "int8" else 4
    q = quantize_blockwise(weight, bits=bits, block_size=spec.block_size, symmetric=spec.symmetric,
                           method=spec.method)
    # MatMulNBits wants scales in the activation type (fp16 on CUDA).
    inputs = [x, g.init(f"{name}.q{bits}", q.packed),
              g.init(f"{name}.scales", np.asarray(q.scales).astype(g.act_dtype))]
    if q.zero_points is not None:
        inputs.append(g.init(f"{name}.zero_points", q.zero_points))
    attrs: dict[str, Any] = dict(K=k, N=n, bits=bits, block_size=spec.block_size)
    if spec.accuracy_level is not None:
        attrs["accuracy_level"] = int(spec.accuracy_level)
    return g.op("MatMulNBits", inputs, outputs, domain=MS, name=f"{name}/MatMulNBits", **attrs)[0]


def _fused_linear(g: _GraphWriter, x: str, weights: list[np.ndarray], name: str,
                  spec: _LinearSpec) -> list[str]:
    """Several linears of the same input as one (weights stacked along N), split after: one
    activation pass and one kernel call instead of several. Block-wise quantization works along
    K within a row, so the stacked weight quantizes to exactly the parts' codes and scales."""
    stacked = np.concatenate(weights, axis=0)
    y = _linear(g, x, stacked, name, spec)
    sizes = g.const([w.shape[0] for w in weights])
    return g.op("Split", [y, sizes], len(weights), name=f"{name}/Split", axis=-1)


def _rms_norm(g: _GraphWriter, x: str, gain: np.ndarray, name: str, eps: float) -> str:
    w = g.init(f"{name}.weight", gain.astype(g.act_dtype))
    return g.op("SimplifiedLayerNormalization", [x, w], 1, name=f"{name}/SLN", axis=-1,
                epsilon=float(eps), stash_type=1)[0]


def _skip_rms_norm(g: _GraphWriter, x: str, skip: str, gain: np.ndarray, name: str,
                   eps: float) -> tuple[str, str]:
    """RMSNorm(x + skip); returns (normed, x + skip)."""
    w = g.init(f"{name}.weight", gain.astype(g.act_dtype))
    outs = g.op("SkipSimplifiedLayerNormalization", [x, skip, w],
                [f"{name}/out", "", "", f"{name}/sum"], domain=MS, name=f"{name}/SkipSLN",
                epsilon=float(eps))
    return outs[0], outs[3]


def _head_norm(g: _GraphWriter, x: str, gain: np.ndarray, name: str, eps: float, head_dim: int,
               width: int) -> str:
    """Qwen3's per-head RMSNorm over head_dim: [1, S, heads*hd] -> [1, S*heads, hd] -> back."""
    per_head = g.op("Reshape", [x, g.const([0, -1, head_dim])], 1, name=f"{name}/Reshape1")[0]
    normed = _rms_norm(g, per_head, gain, name, eps)
    return g.op("Reshape", [normed, g.const([0, -1, width])], 1, name=f"{name}/Reshape2")[0]


DEFAULT_BLOCK_SIZE = 128  # int4 and int8 alike: see build_decoder's docstring


def build_decoder(source: Any, cfg: MossAudioConfig, out_path: str | Path, quant: str = "fp32",
                  block_size: int | None = None, symmetric: bool | None = None,
                  accuracy_level: int | None = None, lm_head_quant: str | None = None,
                  method: str | None = None, max_context: int | None = None,
                  progress: bool = True, lm_head_bits: int | None = None,
                  io_dtype: str = "fp32", fuse: bool | None = None) -> dict[str, Any]:
    """Write `out_path` (+ `out_path.data`): the Qwen3 decoder of `cfg` with weights from `source`.

    quant: fp32 | fp16 (fp16 storage, fp32 compute) | int8 | int4 (MatMulNBits, weight only).
    block_size: quantization block along K (default 128). For int4 on the CPU, blocks of 128 are
    what fits the edge targets: ONNX Runtime holds a prepacked int4 weight with an fp32 scale
    and an fp32 block sum per block, 0.56 bytes per weight at 128 against 0.75 at 32 (4B decoder
    held in 2.3 GiB instead of 3.5), and they prefill at least as fast as int8 (blocks of 32:
    ~0.8x); blocks of 32 with an int8 lm_head are ~1/3 lower in KL on random weights at 4B
    (benchmarks/QUANT_QUALITY.md).
    lm_head_quant: default int4 for int4 models (its block sums and scales as above; 0.2 GB
    held instead of 0.4 at 4B, measured +7 % KL on the small fixture), otherwise the same as
    quant; lm_head_bits (4, 8, 16, 32) is the same choice spelled as a bit width.
    symmetric: None = asymmetric (with zero points) for 4 bits, symmetric for 8 bits. Measured on
    the random tiny/small fixtures, asymmetric int4 gives ~15-20 % lower KL to fp32 than
    symmetric at about the same speed; at 8 bits the two are alike.
    method: "rtn", "mse" (per-block clipping search), "hqq" (quant.hqq zero-point fit) or "lsq"
    (least-squares scale/zero-point search, quant.blockwise); default lsq for 4 bits (lowest
    weight error of the four, never worse than rtn), rtn for 8.
    accuracy_level: MatMulNBits compute type; None = 4 (int8 activations: on CPU ~25x faster than
    level 0, which dequantizes the weights at every call; costs ~0.5 % matmul error).
    max_context: rows of the RoPE cache = the longest context the graph supports (default
    max_position_embeddings).
    io_dtype: "fp32" (CPU default) or "fp16": fp16 activations, norm gains, RoPE tables and KV
    cache, which ONNX Runtime's CUDA GroupQueryAttention requires (it has no float32 kernel).
    The edges stay float32 (inputs_embeds, deepstack_embeds and logits are cast inside), so the
    runtime feeds both variants alike; only the cache buffers' dtype differs.
    fuse: one linear for q/k/v and one for gate/up (split after); None = on for int4/int8.

    Returns a JSON-ready description (the choices made, bytes written, seconds taken).
    """
    if lm_head_bits is not None and lm_head_quant is None:
        by_bits = {4: "int4", 8: "int8", 16: "fp16", 32: "fp32"}
        if lm_head_bits not in by_bits:
            raise ValueError(f"lm_head_bits must be one of {sorted(by_bits)}, got {lm_head_bits}")
        lm_head_quant = by_bits[lm_head_bits]
    if quant not in QUANT_KINDS:
        raise ValueError(f"unknown quant {quant!r}; choose one of {QUANT_KINDS}")
    lm_head_quant = lm_head_quant or quant
    if lm_head_quant not in LM_HEAD_KINDS:
        raise ValueError(f"unknown lm_head_quant {lm_head_quant!r}; choose one of {LM_HEAD_KINDS}")
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"unknown io_dtype {io_dtype!r}; choose one of {IO_DTYPES}")
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    get = tensor_source(source)
    lang = cfg.language
    hidden, hd = lang.hidden_size, lang.head_dim
    nh, kvh = lang.num_attention_heads, lang.num_key_value_heads
    k_ds = cfg.num_deepstack
    eps = lang.rms_norm_eps
    rows = int(max_context or lang.max_position_embeddings)

    def spec(kind: str) -> _LinearSpec:
        bits = 4 if kind == "int4" else 8
        sym = (bits == 8) if symmetric is None else bool(symmetric)
        return _LinearSpec(kind, block_size or DEFAULT_BLOCK_SIZE, sym,
                           method or ("lsq" if bits == 4 else "rtn"), accuracy_level)

    if accuracy_level is None:
        accuracy_level = 4
    if fuse is None:
        fuse = quant in ("int4", "int8")
    body, head = spec(quant), spec(lm_head_quant)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ExternalDataWriter(out_path) as writer:
        g = _GraphWriter(writer)
        fp16 = io_dtype == "fp16"
        act_type = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
        if fp16:
            g.act_dtype = np.float16
        cos, sin = rope_caches(rows, hd, lang.rope_theta)
        cos_name = g.init("cos_cache", cos.astype(g.act_dtype))
        sin_name = g.init("sin_cache", sin.astype(g.act_dtype))
        del cos, sin
        embeds_in, deepstack_in = "inputs_embeds", "deepstack_embeds"
        if fp16:  # float32 at the edges, fp16 inside
            embeds_in = g.op("Cast", ["inputs_embeds"], ["inputs_embeds/fp16"], name="inputs_embeds/Cast",
                             to=act_type)[0]
            deepstack_in = g.op("Cast", ["deepstack_embeds"], ["deepstack_embeds/fp16"],
                                name="deepstack_embeds/Cast", to=act_type)[0]

        layers = range(lang.num_hidden_layers)
        if progress:
            from tqdm import tqdm

            layers = tqdm(layers, desc=f"decoder {quant}", unit="layer")
        residual, pending = embeds_in, None  # pending: the last block output, not yet added
        for i in layers:
            p = f"language_model.layers.{i}."
            if pending is None:
                x = _rms_norm(g, residual, get(p + "input_layernorm.weight"), f"layers.{i}.input_norm", eps)
            else:
                x, residual = _skip_rms_norm(g, pending, residual, get(p + "input_layernorm.weight"),
                                             f"layers.{i}.input_norm", eps)
            if fuse:
                q, k, v = _fused_linear(g, x, [get(p + f"self_attn.{n}_proj.weight") for n in "qkv"],
                                        f"layers.{i}.qkv_proj", body)
            else:
                q = _linear(g, x, get(p + "self_attn.q_proj.weight"), f"layers.{i}.q_proj", body)
                k = _linear(g, x, get(p + "self_attn.k_proj.weight"), f"layers.{i}.k_proj", body)
                v = _linear(g, x, get(p + "self_attn.v_proj.weight"), f"layers.{i}.v_proj", body)
            q = _head_norm(g, q, get(p + "self_attn.q_norm.weight"), f"layers.{i}.q_norm", eps, hd, nh * hd)
            k = _head_norm(g, k, get(p + "self_attn.k_norm.weight"), f"layers.{i}.k_norm", eps, hd, kvh * hd)
            attn = g.op("GroupQueryAttention",
                        [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k",
                         "total_sequence_length", cos_name, sin_name],
                        [f"layers.{i}.attn/out", f"present.{i}.key", f"present.{i}.value"],
                        domain=MS, name=f"layers.{i}.attn/GQA", num_heads=nh, kv_num_heads=kvh,
                        do_rotary=1, rotary_interleaved=0, scale=float(hd ** -0.5))[0]
            o = _linear(g, attn, get(p + "self_attn.o_proj.weight"), f"layers.{i}.o_proj", body)
            x, residual = _skip_rms_norm(g, o, residual, get(p + "post_attention_layernorm.weight"),
                                         f"layers.{i}.post_attn_norm", eps)
            if fuse:
                gate, up = _fused_linear(g, x, [get(p + "mlp.gate_proj.weight"),
                                                get(p + "mlp.up_proj.weight")],
                                         f"layers.{i}.gate_up_proj", body)
            else:
                gate = _linear(g, x, get(p + "mlp.gate_proj.weight"), f"layers.{i}.gate_proj", body)
                up = _linear(g, x, get(p + "mlp.up_proj.weight"), f"layers.{i}.up_proj", body)
            sig = g.op("Sigmoid", [gate], 1, name=f"layers.{i}.mlp/Sigmoid")[0]
            act = g.op("Mul", [gate, sig], 1, name=f"layers.{i}.mlp/SiLU")[0]
            h = g.op("Mul", [act, up], 1, name=f"layers.{i}.mlp/Gate")[0]
            pending = _linear(g, h, get(p + "mlp.down_proj.weight"), f"layers.{i}.down_proj", body)
            if i < k_ds:
                # DeepStack: hidden += deepstack_embeds[i] after the whole layer (MLP residual included).
                ds = g.op("Gather", [deepstack_in, g.const(i)], 1, name=f"layers.{i}.deepstack/Gather",
                          axis=0)[0]
                pending = g.op("Add", [pending, ds], 1, name=f"layers.{i}.deepstack/Add")[0]

        normed, _ = _skip_rms_norm(g, pending, residual, get("language_model.norm.weight"), "final_norm", eps)
        # Only the last num_logits_to_keep positions reach lm_head (151936-wide).
        keep = g.op("Unsqueeze", ["num_logits_to_keep", g.const([0])], 1, name="logits/Unsqueeze")[0]
        start_at = g.op("Neg", [keep], 1, name="logits/Neg")[0]
        last = g.op("Slice", [normed, start_at, g.const([np.iinfo(np.int64).max]), g.const([1])], 1,
                    name="logits/Slice")[0]
        head_name = "language_model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"
        if fp16:
            logits16 = _linear(g, last, get(head_name), "lm_head", head)
            g.op("Cast", [logits16], ["logits"], name="logits/Cast", to=TensorProto.FLOAT)
        else:
            _linear(g, last, get(head_name), "lm_head", head, out="logits")

        f32, i32, i64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
        inputs = [
            helper.make_tensor_value_info("inputs_embeds", f32, [1, "sequence_length", hidden]),
            helper.make_tensor_value_info("deepstack_embeds", f32, [k_ds, 1, "sequence_length", hidden]),
            helper.make_tensor_value_info("seqlens_k", i32, [1]),
            helper.make_tensor_value_info("total_sequence_length", i32, []),
            helper.make_tensor_value_info("num_logits_to_keep", i64, []),
        ]
        outputs = [helper.make_tensor_value_info("logits", f32, [1, "num_logits_to_keep", lang.vocab_size])]
        for i in range(lang.num_hidden_layers):
            for kind in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(
                    f"past_key_values.{i}.{kind}", act_type, [1, kvh, "max_context", hd]))
                outputs.append(helper.make_tensor_value_info(
                    f"present.{i}.{kind}", act_type, [1, kvh, "max_context", hd]))
        graph = helper.make_graph(g.nodes, "moss_audio_decoder", inputs, outputs, g.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                        helper.make_opsetid(MS, 1)],
                                  producer_name="edge-moss")
        model.ir_version = 10
        meta = {
            "format": GRAPH_FORMAT, "quant": quant, "lm_head_quant": lm_head_quant,
            "block_size": str(body.block_size), "method": body.method,
            "symmetric": str(int(body.symmetric)), "accuracy_level": str(accuracy_level),
            "max_context": str(rows), "num_layers": str(lang.num_hidden_layers),
            "num_kv_heads": str(kvh), "head_dim": str(hd), "hidden_size": str(hidden),
            "num_deepstack": str(k_ds), "vocab_size": str(lang.vocab_size), "io_dtype": io_dtype,
            "fused": str(int(fuse)),
        }
        helper.set_model_props(model, meta)
        save_graph(model, out_path)
        data_bytes = writer.bytes_written
    return {
        "graph": out_path.name, "data": writer.data_path.name, "quant": quant,
        "lm_head_quant": lm_head_quant, "block_size": body.block_size if quant.startswith("int") else None,
        "symmetric": body.symmetric, "method": body.method, "accuracy_level": accuracy_level,
        "max_context": rows, "io_dtype": io_dtype, "fused": bool(fuse), "bytes": out_path.stat().st_size + data_bytes,
        "seconds": round(time.perf_counter() - start, 2),
    }


def decoder_metadata(onnx_path: str | Path) -> dict[str, str]:
    """The metadata_props of a built decoder graph (reads the graph only, not the weights)."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def write_embeddings(weight: np.ndarray, out_dir: str | Path, kind: str = "fp16") -> list[str]:
    """Write the bundle's token embedding table; returns the file names (relative to out_dir)."""
    return [p.name for p in write_embedding_table(weight, out_dir, kind)]
