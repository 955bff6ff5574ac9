"""A small ONNX graph builder: unique readable names, deduplicated constants, opset-aware op forms.

Every other ``onnx_*`` module emits nodes only through ``Builder``, so names never collide and the few
ops whose signature changed inside the supported opset range are written in one place.

>>> b = Builder(opset=13)
>>> b.op("Relu", ["x"], "dense/relu")
'dense/relu'
>>> b.op("Relu", ["x"], "dense/relu")
'dense/relu_1'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from onnx import GraphProto, TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32
BOOL = TensorProto.BOOL

#: Slice "to the end" / "past the start" bounds (ONNX clamps them to the axis).
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


@dataclass
class ExternalData:
    """Where weights go instead of the protobuf (ONNX external data): an open binary file, and its name as
    the model refers to it (relative to the model file). Tensors smaller than ``threshold`` bytes stay inline."""

    file: BinaryIO
    location: str
    threshold: int = 1024


@dataclass(frozen=True)
class Stacked:
    """A tensor of ``shape`` whose C-order bytes are the ``blocks`` stacked along their first axis.

    ONNX's W and R are the Keras gate kernels transposed and reordered: written to external data block by
    block, in slices of at most ``SLICE_BYTES``, such a tensor never exists whole in memory.
    """

    shape: tuple[int, ...]
    blocks: Sequence[np.ndarray]

    @property
    def nbytes(self) -> int:
        return 4 * int(np.prod(self.shape))

    def join(self) -> np.ndarray:
        return np.concatenate([np.asarray(b, "<f4") for b in self.blocks], axis=0).reshape(self.shape)

    def write_to(self, file: BinaryIO) -> int:
        """Write the bytes to ``file`` a slice at a time; return how many were written."""
        written = 0
        buffer = np.empty(0, "<f4")  # one scratch slice, reused: fresh pages cost more than the copy
        for block in self.blocks:
            row_bytes = max(1, block[:1].size * 4)
            step = max(1, SLICE_BYTES // row_bytes)
            for start in range(0, block.shape[0], step):
                part = block[start : start + step]
                if not (part.flags.c_contiguous and part.dtype == "<f4"):
                    if buffer.size < part.size:
                        buffer = np.empty(part.size, "<f4")
                    part = _copy_tiled(buffer[: part.size].reshape(part.shape), part)
                part.tofile(file)
                written += part.nbytes
        return written


def _copy_tiled(out: np.ndarray, src: np.ndarray) -> np.ndarray:
    """``out[...] = src`` for a transposed view, in tiles that stay in cache: a plain copy of a transposed
    8192 x 8192 kernel misses the cache on every element and runs ten times slower."""
    if src.ndim != 2:
        out[...] = src
        return out
    rows, cols = src.shape
    for i in range(0, rows, 1024):
        for j in range(0, cols, 16):
            out[i : i + 1024, j : j + 16] = src[i : i + 1024, j : j + 16]
    return out


#: The largest temporary copy ``Stacked.write_to`` makes.
SLICE_BYTES = 64 * 2**20


class Builder:
    """Writes nodes and initializers straight into ``graph`` (helper.make_graph would copy every weight)."""

    def __init__(self, opset: int, graph: GraphProto | None = None, external: ExternalData | None = None) -> None:
        self.opset = opset
        self.graph = GraphProto() if graph is None else graph
        self.external = external
        self._names: set[str] = set()
        self._node_names: set[str] = set()
        self._consts: dict[tuple, str] = {}

    def reserve(self, name: str) -> str:
        """Claim an exact name (graph inputs and outputs); they are unique already in the IR."""
        if name in self._names:
            raise ValueError(f"duplicate tensor name {name!r}")
        self._names.add(name)
        return name

    def fresh(self, name: str, used: set[str] | None = None) -> str:
        """``name``, or ``name_1``, ``name_2``... when taken."""
        used = self._names if used is None else used
        candidate, k = name, 0
        while candidate in used:
            k += 1
            candidate = f"{name}_{k}"
        used.add(candidate)
        return candidate

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        """Emit a one-output node; its output tensor and the node share the readable ``name``."""
        return self.op_n(op_type, inputs, name, [name], **attrs)[0]

    def op_n(self, op_type: str, inputs: list[str], name: str, outputs: list[str], **attrs) -> list[str]:
        """Emit a node with several outputs; an empty output name leaves that output unused."""
        outs = [self.fresh(o) if o else "" for o in outputs]
        self.node(op_type, inputs, outs, name, **attrs)
        return outs

    def node(self, op_type: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> None:
        """Emit a node writing to exactly ``outputs`` (names the caller reserved)."""
        node_name = self.fresh(name, self._node_names)
        self.graph.node.append(helper.make_node(op_type, inputs, outputs, name=node_name, **attrs))

    def weight(self, name: str, array: np.ndarray | Stacked, exact: bool = False) -> str:
        """A float32 initializer, serialised in place (no proto copies).

        A ``Stacked`` tensor streams to external data slice by slice; inline, it is joined once and the
        joined copy is dropped before the proto takes its bytes, so it costs two copies at peak, not three.
        """
        tensor = self.graph.initializer.add()
        tensor.name = name if exact else self.fresh(name)
        tensor.data_type = FLOAT
        if isinstance(array, Stacked):
            if self._goes_external(array.nbytes):
                tensor.dims.extend(array.shape)
                offset = self.external.file.tell()  # type: ignore[union-attr]
                self._external(tensor, offset, array.write_to(self.external.file))  # type: ignore[union-attr]
                return tensor.name
            array = array.join()
        made = np.asarray(array, "<f4")
        del array
        tensor.dims.extend(made.shape)
        if self._goes_external(made.nbytes):
            # Straight to the external data file: the model never holds these bytes, so a model past
            # protobuf's 2 GiB limit costs no more memory than its weights.
            offset = self.external.file.tell()  # type: ignore[union-attr]
            made.tofile(self.external.file)  # type: ignore[union-attr]
            self._external(tensor, offset, made.nbytes)
            return tensor.name
        raw = made.tobytes()
        del made  # drop a temporary (joined gates) before the proto takes its copy of the bytes
        tensor.raw_data = raw
        return tensor.name

    def _goes_external(self, nbytes: int) -> bool:
        return self.external is not None and nbytes >= self.external.threshold

    def _external(self, tensor: TensorProto, offset: int, length: int) -> None:
        assert self.external is not None
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.external.location), ("offset", offset), ("length", length)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)

    def const(self, value, dtype: type = np.int64) -> str:
        """A small constant initializer, shared by every user of the same value."""
        array = np.asarray(value, dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            label = "_".join(str(v) for v in array.ravel()[:4]) if array.size else "empty"
            name = self.fresh(f"const/{array.dtype.name}_{label}".replace("-", "m"))
            self.graph.initializer.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def i64(self, *values: int) -> str:
        """A 1-D int64 constant (axes, shapes, slice bounds)."""
        return self.const(list(values), np.int64)

    def scalar(self, value: float | int, dtype: type = np.float32) -> str:
        """A 0-D constant: broadcasts against anything."""
        return self.const(value, dtype)

    # Ops whose form depends on the opset ------------------------------------------------------------

    def reduce_max(self, x: str, axes: list[int], keepdims: bool, name: str) -> str:
        """ReduceMax: ``axes`` is an attribute before opset 18 and an input from 18 on."""
        if self.opset >= 18:
            return self.op("ReduceMax", [x, self.i64(*axes)], name, keepdims=int(keepdims))
        return self.op("ReduceMax", [x], name, axes=axes, keepdims=int(keepdims))

    def reduce_mean(self, x: str, axes: list[int], keepdims: bool, name: str) -> str:
        """ReduceMean: ``axes`` is an attribute before opset 18 and an input from 18 on."""
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.i64(*axes)], name, keepdims=int(keepdims))
        return self.op("ReduceMean", [x], name, axes=axes, keepdims=int(keepdims))

    def reduce_sum(self, x: str, axes: list[int], keepdims: bool, name: str) -> str:
        """ReduceSum: ``axes`` is an input from opset 13 on (every opset this exporter writes)."""
        return self.op("ReduceSum", [x, self.i64(*axes)], name, keepdims=int(keepdims))

    def unsqueeze(self, x: str, axes: list[int], name: str) -> str:
        """Unsqueeze with axes as an input (opset >= 13, the lowest this exporter supports)."""
        return self.op("Unsqueeze", [x, self.i64(*axes)], name)

    def slice(self, x: str, starts: list[int], ends: list[int], axes: list[int], name: str, steps=None) -> str:
        inputs = [x, self.i64(*starts), self.i64(*ends), self.i64(*axes)]
        if steps is not None:
            inputs.append(self.i64(*steps))
        return self.op("Slice", inputs, name)

    def batch_size(self, x: str, name: str) -> str:
        """The batch size of ``x`` as a 1-D int64 tensor of length 1."""
        return self.slice(self.op("Shape", [x], f"{name}/shape"), [0], [1], [0], name)
