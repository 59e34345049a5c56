"""Stream ONNX initializers into one external-data file, one tensor at a time.

onnx.save with large initializers serializes every weight through protobuf at once (and refuses
graphs over 2 GB). Here each tensor's bytes go straight to `<model>.onnx.data` as it is produced,
and the graph keeps only a TensorProto that points at (location, offset, length), following
onnx.external_data_helper's conventions. Large tensors start on 64 KiB boundaries so ONNX
Runtime can memory-map them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Tensors smaller than this stay inside the .onnx file (norm gains, shape constants).
INLINE_BYTES = 2048
# Alignment of large tensors in the data file (Windows allocation granularity; a page multiple).
_ALIGN_LARGE = 64 * 1024
_ALIGN_SMALL = 64
_LARGE = 1 << 20


class ExternalDataWriter:
    """Append tensors to `<onnx_path>.data` and hand back TensorProtos that reference them."""

    def __init__(self, onnx_path: str | Path):
        self.onnx_path = Path(onnx_path)
        self.location = self.onnx_path.name + ".data"
        self.data_path = self.onnx_path.with_name(self.location)
        self._fh = open(self.data_path, "wb")
        self._offset = 0

    def __enter__(self) -> "ExternalDataWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def bytes_written(self) -> int:
        return self._offset

    def tensor(self, name: str, array: np.ndarray) -> TensorProto:
        """A TensorProto for `array`: inline when small, else appended to the data file."""
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array 1-d)
            array = array.copy(order="C")
        if array.nbytes < INLINE_BYTES:
            return numpy_helper.from_array(array, name)
        align = _ALIGN_LARGE if array.nbytes >= _LARGE else _ALIGN_SMALL
        pad = -self._offset % align
        if pad:
            self._fh.write(b"\0" * pad)
            self._offset += pad
        offset = self._offset
        # tobytes() of a C-contiguous little-endian array is exactly ONNX raw_data order.
        self._fh.write(memoryview(array.astype(array.dtype.newbyteorder("<"), copy=False)).cast("B"))
        self._offset += array.nbytes
        proto = TensorProto()
        proto.name = name
        proto.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        proto.dims.extend(array.shape)
        proto.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(offset)),
                           ("length", str(array.nbytes))):
            entry = proto.external_data.add()
            entry.key, entry.value = key, value
        return proto

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()


def save_graph(model: onnx.ModelProto, onnx_path: str | Path) -> None:
    """Write the (small) graph protobuf; its large initializers already live in the data file."""
    Path(onnx_path).write_bytes(model.SerializeToString())
