"""The KV-cached ONNX decoder at run time: preallocated cache buffers bound in place.

Each layer's key and value cache is one buffer [1, kv_heads, capacity, head_dim] (float32, or
float16 for a bundle exported with `--target cuda`), bound with IOBinding to both `past_key_values.{i}.*` and `present.{i}.*`. GroupQueryAttention
sees the same pointer on both sides and appends the new positions in place, so a step copies no
cache. The number of valid positions lives here (`length`); rolling back just lowers it: the
stale tail is never read (attention only looks at the first `length` positions) and is
overwritten by the next forward. On the host the capacity grows with the context used (copying
the valid positions into a larger buffer, a few times per request at most) up to max_context.

On CUDA the cache and the per-step inputs live in device memory (OrtValues made by ONNX Runtime
on 'cuda'); a step uploads one embedding row and the two lengths and downloads only the logits.
ONNX Runtime copies a host value bound to a device input once, when it is bound, so device inputs
are refreshed with OrtValue.update_inplace and host scalars are bound again at every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
import numpy as np
import onnxruntime as ort

from .errors import BundleError, EdgeMossError
from .ort_session import make_session
from .providers import session_device, warn_once

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
FP32_CACHE_ON_CUDA = ("this bundle's decoder has a float32 KV cache (exported for CPU) and ONNX Runtime's "
                      "CUDA GroupQueryAttention needs fp16: re-export with `edge-moss export --target "
                      "cuda`; running the decoder on CPU")


def _input_dtype(session: ort.InferenceSession, name: str) -> type:
    kind = {i.name: i.type for i in session.get_inputs()}[name]
    if kind not in _NP_TYPES:
        raise BundleError(f"decoder input {name} has unsupported type {kind}")
    return _NP_TYPES[kind]


# Host KV caches grow in multiples of this many positions (see Decoder._reserve).
CACHE_STEP = 256


class ContextLengthError(EdgeMossError):
    """The prompt plus the generated tokens would not fit the decoder's context."""


@dataclass(frozen=True)
class DecoderDims:
    """The shapes the decoder graph was built with."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    num_deepstack: int
    vocab_size: int
    max_positions: int  # rows of the graph's RoPE cache: the longest context it supports

    @classmethod
    def from_session(cls, session: ort.InferenceSession) -> "DecoderDims":
        inputs = {i.name: i for i in session.get_inputs()}
        layers = sum(1 for n in inputs if n.startswith("past_key_values.") and n.endswith(".key"))
        kv_shape = inputs["past_key_values.0.key"].shape
        meta = session.get_modelmeta().custom_metadata_map
        logits = {o.name: o for o in session.get_outputs()}["logits"].shape
        return cls(
            num_layers=layers,
            num_kv_heads=int(kv_shape[1]),
            head_dim=int(kv_shape[3]),
            hidden_size=int(inputs["inputs_embeds"].shape[2]),
            num_deepstack=int(inputs["deepstack_embeds"].shape[0]),
            vocab_size=int(logits[2]),
            max_positions=int(meta.get("max_context", 0)) or 1 << 30,
        )


def _resolve_dims(dims: Any, session: ort.InferenceSession) -> DecoderDims:
    """DecoderDims from the graph, checked against a MossAudioConfig when one is given."""
    if isinstance(dims, DecoderDims):
        return dims
    found = DecoderDims.from_session(session)
    lang = getattr(dims, "language", None)
    if lang is not None:
        want = {"num_layers": lang.num_hidden_layers, "num_kv_heads": lang.num_key_value_heads,
                "head_dim": lang.head_dim, "hidden_size": lang.hidden_size,
                "num_deepstack": dims.num_deepstack, "vocab_size": lang.vocab_size}
        bad = [f"{k} {getattr(found, k)} != {v}" for k, v in want.items() if getattr(found, k) != v]
        if bad:
            raise BundleError(f"decoder graph does not match the model config: {', '.join(bad)}")
    return found


class Decoder:
    """Owns the decoder session and its KV cache; `forward` appends tokens to the cache."""

    def __init__(self, model_path: str | Path, dims: Any = None, max_context: int = 4096,
                 device: str = "cpu", threads: int | None = None,
                 session: ort.InferenceSession | None = None, device_buffers: bool | None = None):
        """dims: DecoderDims, a MossAudioConfig (checked against the graph) or None (read the graph).

        `device` picks the execution provider (CPU fallback with a message). device_buffers:
        keep the cache and step inputs in ONNX Runtime-owned OrtValues on the session's device
        and refresh them with update_inplace (None: yes on CUDA, no on CPU, where numpy buffers
        aliased by the binding are cheaper; True on CPU runs the CUDA code path on the host).
        """
        self.session = session or make_session(model_path, device=device, threads=threads)
        if (session is None and session_device(self.session) == "cuda"
                and _input_dtype(self.session, "past_key_values.0.key") == np.float32):
            warn_once(FP32_CACHE_ON_CUDA)
            self.session = make_session(model_path, device="cpu", threads=threads)
        self.dims = _resolve_dims(dims, self.session)
        if max_context > self.dims.max_positions:
            raise ContextLengthError(
                f"max_context {max_context} exceeds the {self.dims.max_positions} positions this decoder "
                "was built for"
            )
        self.max_context = int(max_context)
        d = self.dims
        self.device = session_device(self.session)
        self.cache_dtype = _input_dtype(self.session, "past_key_values.0.key")
        self._in_dtype = _input_dtype(self.session, "inputs_embeds")
        self._resident = (self.device != "cpu") if device_buffers is None else bool(device_buffers)
        self._device = "cpu"  # host numpy buffers
        self._memory = self.device  # where ORT-owned buffers live ('cpu' or 'cuda')
        self._binding = self.session.io_binding()
        # Host: numpy owns the cache memory and the OrtValues alias it (keep both alive together).
        # Resident: ORT owns it on the device; _cache stays empty.
        self._cache: list[np.ndarray] = []
        self._cache_values: list[ort.OrtValue] = []
        self.length = 0
        # Host caches start small and grow with the context actually used (a 30 s clip and 100
        # tokens fill ~530 positions: 0.16 GB in fp32 at 4B instead of 1.2 GB for 4,096).
        # A device cache is sized once: growing it would need a device-side copy.
        self.capacity = 0
        self._reserve(self.max_context if self._resident else min(self.max_context, CACHE_STEP))
        # Step buffers: scalars updated in place (host) or refreshed per step (resident).
        self._seqlens = np.zeros((1,), dtype=np.int32)
        self._total = np.zeros((), dtype=np.int32)
        if self._resident:
            self._seqlens_value = self._device_value((1,), np.int32)
            self._binding.bind_ortvalue_input("seqlens_k", self._seqlens_value)
        else:
            self._bind_array("seqlens_k", self._seqlens)
            self._bind_array("total_sequence_length", self._total)
        # Single-token buffers reused by every decode step (no per-step allocation but the logits).
        self._step_embeds = np.zeros((1, 1, d.hidden_size), dtype=self._in_dtype)
        self._step_deepstack = np.zeros((d.num_deepstack, 1, 1, d.hidden_size), dtype=self._in_dtype)
        self._keep_one = np.ones((), dtype=np.int64)
        self._step_logits = np.zeros((1, 1, d.vocab_size), dtype=np.float32)
        self._step_values: tuple[ort.OrtValue, ...] = ()
        self._step_bound = False
        self._step_ds_dirty = False

    # ------------------------------------------------------------------ state
    def _reserve(self, capacity: int) -> None:
        """Make the cache hold `capacity` positions, keeping the valid ones (bound in place)."""
        d = self.dims
        shape = (1, d.num_kv_heads, int(capacity), d.head_dim)
        old, old_values = self._cache, self._cache_values
        cache: list[np.ndarray] = []
        values: list[ort.OrtValue] = []
        zeros = np.zeros(shape, dtype=self.cache_dtype) if self._resident else None
        for i in range(d.num_layers):
            for kind in ("key", "value"):
                if self._resident:
                    value = ort.OrtValue.ortvalue_from_shape_and_type(shape, self.cache_dtype, self._memory, 0)
                    value.update_inplace(zeros)
                else:
                    # np.zeros maps fresh pages: only the positions written become resident memory.
                    buf = np.zeros(shape, dtype=self.cache_dtype)
                    if old:
                        buf[:, :, : self.length] = old[len(cache)][:, :, : self.length]
                    value = ort.OrtValue.ortvalue_from_numpy(buf, self._device, 0)
                    cache.append(buf)
                self._binding.bind_ortvalue_input(f"past_key_values.{i}.{kind}", value)
                self._binding.bind_ortvalue_output(f"present.{i}.{kind}", value)
                if old:  # free each old buffer once it is copied: growing never holds two caches
                    old[len(values)] = old_values[len(values)] = None
                values.append(value)
        self._cache, self._cache_values = cache, values
        self.capacity = int(capacity)

    def _grow_for(self, needed: int) -> None:
        """Grow a host cache to hold `needed` positions: doubling, in steps of CACHE_STEP."""
        target = max(needed, 2 * self.capacity)
        target = -(-target // CACHE_STEP) * CACHE_STEP
        self._reserve(min(target, self.max_context))

    def reset(self) -> None:
        """Forget every cached position."""
        self.length = 0

    def rollback(self, length: int) -> None:
        """Keep only the first `length` cached positions (O(1): the tail is simply ignored)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back to {length}: the cache holds {self.length} positions")
        self.length = int(length)

    @property
    def remaining(self) -> int:
        """Positions still free in the cache."""
        return self.max_context - self.length

    def cache_view(self, layer: int, kind: str = "key") -> np.ndarray:
        """The valid part of one layer's cache [1, kv_heads, length, head_dim] (a view on the host;
        a copy downloaded from the device when the cache is resident)."""
        index = 2 * layer + (0 if kind == "key" else 1)
        buf = self._cache_values[index].numpy() if self._resident else self._cache[index]
        return buf[:, :, : self.length]

    # ------------------------------------------------------------------ running
    def _device_value(self, shape: tuple[int, ...], dtype: type) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, self._memory, 0)

    def _bind_array(self, name: str, array: np.ndarray, output: bool = False) -> None:
        value = ort.OrtValue.ortvalue_from_numpy(array, self._device, 0)
        if output:
            self._binding.bind_ortvalue_output(name, value)
        else:
            self._binding.bind_ortvalue_input(name, value)
        # Rebinding replaces the previous value; keep the current one referenced.
        setattr(self, f"_ov_{name}", (value, array))

    def forward(self, embeds: np.ndarray, deepstack: np.ndarray | None = None,
                logits_to_keep: int = 1) -> np.ndarray:
        """Append S positions: embeds [S, hidden], deepstack [k, S, hidden] or None.

        Returns the logits of the last `logits_to_keep` positions, float32 [logits_to_keep, vocab].
        """
        d = self.dims
        embeds = np.asarray(embeds, dtype=self._in_dtype)
        if embeds.ndim != 2 or embeds.shape[1] != d.hidden_size:
            raise ValueError(f"embeds must be [S, {d.hidden_size}], got {list(embeds.shape)}")
        s = embeds.shape[0]
        if s == 0:
            raise ValueError("forward needs at least one position")
        if not 1 <= logits_to_keep <= s:
            raise ValueError(f"logits_to_keep must be in 1..{s}, got {logits_to_keep}")
        if self.length + s > self.max_context:
            raise ContextLengthError(
                f"context full: {self.length} cached + {s} new positions exceed max_context "
                f"{self.max_context}; use a shorter input or a larger --max-context"
            )
        if deepstack is not None:
            deepstack = np.asarray(deepstack, dtype=self._in_dtype)
            if deepstack.shape != (d.num_deepstack, s, d.hidden_size):
                raise ValueError(f"deepstack must be [{d.num_deepstack}, {s}, {d.hidden_size}], "
                                 f"got {list(deepstack.shape)}")
        if self.length + s > self.capacity:
            self._grow_for(self.length + s)
        self._seqlens[0] = self.length + s - 1
        self._total[()] = self.length + s
        if self._resident:
            return self._forward_resident(embeds, deepstack, s, logits_to_keep)

        if s == 1 and logits_to_keep == 1:
            self._step_embeds[0] = embeds
            if deepstack is not None:
                self._step_deepstack[:, 0] = deepstack
                self._step_ds_dirty = True
            elif self._step_ds_dirty:
                self._step_deepstack.fill(0.0)
                self._step_ds_dirty = False
            if not self._step_bound:
                self._bind_array("inputs_embeds", self._step_embeds)
                self._bind_array("deepstack_embeds", self._step_deepstack)
                self._bind_array("num_logits_to_keep", self._keep_one)
                self._bind_array("logits", self._step_logits, output=True)
                self._step_bound = True
            logits = self._step_logits
        else:
            ds = np.zeros((d.num_deepstack, 1, s, d.hidden_size), dtype=self._in_dtype) if deepstack is None \
                else np.ascontiguousarray(deepstack[:, None])
            logits = np.empty((1, logits_to_keep, d.vocab_size), dtype=np.float32)
            self._bind_array("inputs_embeds", np.ascontiguousarray(embeds[None]))
            self._bind_array("deepstack_embeds", ds)
            self._bind_array("num_logits_to_keep", np.asarray(logits_to_keep, dtype=np.int64))
            self._bind_array("logits", logits, output=True)
            self._step_bound = False
        self.session.run_with_iobinding(self._binding)
        self.length += s
        return logits[0].copy() if logits is self._step_logits else logits[0]

    def _forward_resident(self, embeds: np.ndarray, deepstack: np.ndarray | None, s: int,
                          logits_to_keep: int) -> np.ndarray:
        """forward() with device-owned buffers: upload the step's inputs, download the logits."""
        d = self.dims
        self._seqlens_value.update_inplace(self._seqlens)
        # Host scalars: bound again every call, as a bound value is copied when it is bound.
        self._bind_array("total_sequence_length", self._total.copy())
        if s == 1 and logits_to_keep == 1:
            if not self._step_values:  # allocated once on the device, then reused
                self._step_values = (self._device_value(self._step_embeds.shape, self._in_dtype),
                                     self._device_value(self._step_deepstack.shape, self._in_dtype),
                                     self._device_value(self._step_logits.shape, np.float32))
                self._step_values[1].update_inplace(self._step_deepstack)
            embeds_v, ds_v, logits_v = self._step_values
            if not self._step_bound:
                self._binding.bind_ortvalue_input("inputs_embeds", embeds_v)
                self._binding.bind_ortvalue_input("deepstack_embeds", ds_v)
                self._binding.bind_ortvalue_output("logits", logits_v)
                self._step_bound = True
            self._bind_array("num_logits_to_keep", self._keep_one)
            self._step_embeds[0] = embeds
            embeds_v.update_inplace(self._step_embeds)
            if deepstack is not None:
                self._step_deepstack[:, 0] = deepstack
                ds_v.update_inplace(self._step_deepstack)
                self._step_ds_dirty = True
            elif self._step_ds_dirty:
                self._step_deepstack.fill(0.0)
                ds_v.update_inplace(self._step_deepstack)
                self._step_ds_dirty = False
        else:
            ds = np.zeros((d.num_deepstack, 1, s, d.hidden_size), dtype=self._in_dtype) if deepstack is None \
                else np.ascontiguousarray(deepstack[:, None])
            logits_v = self._device_value((1, logits_to_keep, d.vocab_size), np.float32)
            self._binding.bind_ortvalue_input(
                "inputs_embeds", ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(embeds[None]),
                                                                  self._memory, 0))
            self._binding.bind_ortvalue_input(
                "deepstack_embeds", ort.OrtValue.ortvalue_from_numpy(ds, self._memory, 0))
            self._bind_array("num_logits_to_keep", np.asarray(logits_to_keep, dtype=np.int64))
            self._binding.bind_ortvalue_output("logits", logits_v)
            self._step_bound = False
        self.session.run_with_iobinding(self._binding)
        self.length += s
        logits = logits_v.numpy()[0]  # a download from a device; a view of the buffer on the CPU
        return logits.copy() if self._memory == "cpu" else logits
