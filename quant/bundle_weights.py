"""A bundle's decoder weights as the float values its quantized form stands for, under the
checkpoint's names: what its MatMulNBits initializers and embedding table dequantize to.

Loaded into the torch reference, these give the bundle's weight error alone, computed in float32:
the same arithmetic as MatMulNBits at accuracy level 0 (dequantize, then a float matmul), without
the int8 activation rounding of level 4 and without the bundle's audio graph.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .blockwise import BlockQuantized, dequantize_blockwise

_LAYER = re.compile(r"^layers\.(\d+)\.(\w+)$")
_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")
# fused linears of export.decoder_graph (stacked along N, split after) and their parts
_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _checkpoint_names(linear: str, tied: bool) -> str:
    """'layers.3.q_proj' -> 'language_model.layers.3.self_attn.q_proj.weight' (and so on)."""
    if linear == "lm_head":
        return "language_model.embed_tokens.weight" if tied else "lm_head.weight"
    m = _LAYER.match(linear)
    if not m:
        raise ValueError(f"unexpected linear {linear!r} in the decoder graph")
    i, proj = m.groups()
    if proj in _ATTN:
        return f"language_model.layers.{i}.self_attn.{proj}.weight"
    if proj in _MLP:
        return f"language_model.layers.{i}.mlp.{proj}.weight"
    raise ValueError(f"unexpected linear {linear!r} in the decoder graph")


class BundleWeights:
    """Decoder linears, lm_head and the embedding table of a bundle, dequantized on request."""

    def __init__(self, bundle: str | Path):
        from edge_runtime.bundle import read_manifest

        self.path = Path(bundle)
        manifest = read_manifest(self.path)
        tied = bool(manifest["model"].get("tie_word_embeddings", False))
        self._read_graph(self.path / manifest["quantization"]["decoder"]["graph"], tied)
        self._embeddings: str | None = "language_model.embed_tokens.weight"

    @classmethod
    def from_decoder(cls, graph_path: str | Path, tied: bool = False) -> "BundleWeights":
        """The linears of a decoder graph alone (no embedding table)."""
        self = cls.__new__(cls)
        self.path = Path(graph_path).parent
        self._read_graph(Path(graph_path), tied)
        self._embeddings = None
        return self

    def _read_graph(self, graph_path: Path, tied: bool) -> None:
        import onnx

        model = onnx.load(str(graph_path), load_external_data=False)
        self._inits = {t.name: t for t in model.graph.initializer}
        self._graph_dir = graph_path.parent
        self._linears: dict[str, tuple] = {}
        splits = {n.input[0]: n.input[1] for n in model.graph.node if n.op_type == "Split"}
        for node in model.graph.node:
            linear = node.name.rsplit("/", 1)[0]
            if node.op_type == "MatMulNBits":
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                entry = ("nbits", list(node.input[1:]), attrs)
            elif node.op_type == "MatMul" and node.input[1] in self._inits:
                entry = ("float", [node.input[1]], {})
            else:
                continue
            proj = linear.rsplit(".", 1)[-1]
            if proj in _FUSED:  # rows [start, stop) of the stacked weight are each part's
                sizes = self._array(splits[node.output[0]]).tolist()
                bounds = np.cumsum([0, *sizes])
                for part, start, stop in zip(_FUSED[proj], bounds[:-1], bounds[1:]):
                    name = _checkpoint_names(linear[: -len(proj)] + part, tied)
                    self._linears[name] = (*entry, (int(start), int(stop)))
            else:
                self._linears[_checkpoint_names(linear, tied)] = (*entry, None)

    def names(self) -> list[str]:
        extra = [self._embeddings] if self._embeddings and self._embeddings not in self._linears else []
        return list(self._linears) + extra

    def _array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        tensor = self._inits[name]
        info = {e.key: e.value for e in tensor.external_data}
        if not info:
            return numpy_helper.to_array(tensor)
        dtype = numpy_helper.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        shape = tuple(int(d) for d in tensor.dims)
        return np.fromfile(self._graph_dir / info["location"], dtype=dtype,
                           count=int(np.prod(shape)), offset=int(info.get("offset", 0))).reshape(shape)

    def numpy(self, name: str, dtype=np.float32) -> np.ndarray:
        if self._embeddings and name == self._embeddings and name not in self._linears:
            return self._embedding_table().astype(dtype, copy=False)
        kind, inputs, attrs, rows = self._linears[name]
        if kind == "float":
            w = self._array(inputs[0]).T
        else:
            packed, scales = self._array(inputs[0]), self._array(inputs[1])
            zero_points = self._array(inputs[2]) if len(inputs) > 2 and inputs[2] else None
            if rows is not None:  # a part of a fused linear: its rows only
                packed, scales = packed[rows[0]:rows[1]], scales[rows[0]:rows[1]]
                if zero_points is not None:
                    zero_points = zero_points[rows[0]:rows[1]]
            q = BlockQuantized(packed, scales.astype(np.float32), zero_points, int(attrs["bits"]),
                               int(attrs["block_size"]), int(attrs["K"]))
            return dequantize_blockwise(q).astype(dtype, copy=False)
        if rows is not None:
            w = w[rows[0]:rows[1]]
        return np.ascontiguousarray(w).astype(dtype, copy=False)

    def _embedding_table(self) -> np.ndarray:
        from edge_runtime.embeddings import EmbeddingTable

        table = EmbeddingTable.load(self.path)
        out = np.empty((table.vocab_size, table.hidden_size), dtype=np.float32)
        for start in range(0, table.vocab_size, 16384):
            ids = np.arange(start, min(start + 16384, table.vocab_size))
            out[start:start + ids.size] = table.lookup(ids)
        return out


__all__ = ["BundleWeights"]
