"""Shape layers: ``RepeatVector``, ``Flatten``, ``Reshape``, ``Permute``.

None of them supports masking in Keras 2 or Keras 3 (no ``compute_mask``, ``supports_masking`` false): an
incoming mask is dropped (Keras 3 warns), so every op here outputs no mask. They keep the element type.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from converter.errors import BadInputs
from converter.layers.base import (
    Array,
    Dim,
    Mask,
    NamedArray,
    OnnxContext,
    OnnxResult,
    OnnxTensor,
    Op,
    ReadContext,
    RunContext,
    Shape,
    ShapeMismatch,
    TorchContext,
    TorchResult,
    float32_only,
    int_option,
    known,
    no_weights,
    one_input,
)
from converter.layers.pycode import PyContext, PyResult

DATA_FORMATS = ("channels_last", "channels_first")


def read_data_format(config: Mapping[str, Any], ctx: ReadContext) -> str:
    """``data_format``; Keras saves it standardised, and None means its default, channels_last."""
    value = config.get("data_format") or "channels_last"
    if not isinstance(value, str) or value.lower() not in DATA_FORMATS:
        raise ctx.unsupported(f"data_format {value!r} is not supported; supported: {', '.join(DATA_FORMATS)}.")
    return value.lower()


def int_tuple(config: Mapping[str, Any], key: str, ctx: ReadContext) -> tuple[int, ...]:
    value = config.get(key)
    if not isinstance(value, list | tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ctx.bad(f"{key} is {value!r}, not a list of integers.")
    return tuple(value)


def _product(dims: Shape) -> Dim:
    return math.prod(dims) if all(known(d) for d in dims) else None  # type: ignore[arg-type]


@dataclass(frozen=True)
class RepeatVector(Op):
    """``(batch, features)`` -> ``(batch, n, features)``: the vector repeated ``n`` times."""

    op_type: ClassVar[str] = "repeat_vector"
    n: int

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> RepeatVector:
        no_weights(arrays, ctx)
        float32_only(config, ctx)
        return cls(int_option(config, "n", ctx))

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        if len(shape) != 1:
            raise ShapeMismatch(f"repeats a (batch, features) tensor, but it is fed shape {shape}")
        return [(self.n, shape[0])]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        return [np.repeat(xs[0][:, None, :], self.n, axis=1)], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p = g.b, g.p
        tiled = b.op("Tile", [b.unsqueeze(xs[0].name, [1], f"{p}/step"), b.i64(1, self.n, 1)], f"{p}/tile")
        return [tiled], [None], [xs[0].type]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        return [f"{outs[0]} = {xs[0]}.unsqueeze(1).repeat(1, {self.n}, 1)"], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        return [f"{outs[0]} = np.repeat({xs[0]}[:, None, :], {self.n}, axis=1)"], [None]


@dataclass(frozen=True)
class Flatten(Op):
    """Every axis but the batch axis flattened into one; channels_first first moves axis 1 to the end."""

    op_type: ClassVar[str] = "flatten"
    data_format: str = "channels_last"

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Flatten:
        no_weights(arrays, ctx)
        float32_only(config, ctx)
        return cls(read_data_format(config, ctx))

    def _moves_channels(self, rank: int) -> bool:
        # Keras transposes (0, 2, ..., r-1, 1) for channels_first; a (batch, features) tensor is unchanged.
        return self.data_format == "channels_first" and rank >= 2

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        return [(_product(shape) if shape else 1,)]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x = xs[0]
        if self._moves_channels(x.ndim - 1):
            x = np.transpose(x, (0, *range(2, x.ndim), 1))
        return [x.reshape(x.shape[0], math.prod(x.shape[1:]))], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p, x = g.b, g.p, xs[0].name
        rank = len(xs[0].shape)  # batch axis included
        if self._moves_channels(rank - 1):
            x = b.op("Transpose", [x], f"{p}/channels_last", perm=[0, *range(2, rank), 1])
        # ONNX Flatten(axis=1): (d0, d1*...*dn), and (d0, 1) for a 1-D tensor, exactly Keras' rule.
        return [b.op("Flatten", [x], f"{p}/flatten", axis=1)], [None], [xs[0].type]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        rank = len(g.shapes[0])  # batch axis excluded
        x = xs[0]
        if self._moves_channels(rank):  # channels_first: Keras moves axis 1 to the end first
            x = f"{x}.permute({', '.join(map(str, (0, *range(2, rank + 1), 1)))})"
        return [f"{outs[0]} = {x}.flatten(1)" if rank else f"{outs[0]} = {x}.reshape(-1, 1)"], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        rank, x = len(g.shapes[0]), xs[0]
        lines = []
        if self._moves_channels(rank):  # channels_first: Keras moves axis 1 to the end first
            moved = g.var("channels_last")
            lines.append(f"{moved} = np.transpose({x}, {(0, *range(2, rank + 1), 1)})")
            x = moved
        return [*lines, f"{outs[0]} = {x}.reshape({x}.shape[0], -1)"], [None]


@dataclass(frozen=True)
class Reshape(Op):
    """Reshape every sample to ``target_shape`` (batch axis excluded; at most one -1, inferred)."""

    op_type: ClassVar[str] = "reshape"
    target_shape: tuple[int, ...]

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Reshape:
        no_weights(arrays, ctx)
        float32_only(config, ctx)
        target = int_tuple(config, "target_shape", ctx)
        if not target or any(d == 0 or d < -1 for d in target) or target.count(-1) > 1:
            raise ctx.unsupported(
                f"target_shape {target!r} is not supported; it needs positive sizes and at most one -1."
            )
        return cls(target)

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        """Keras' ``compute_reshape_output_shape``: -1 is inferred where every input size is known."""
        shape = one_input(shapes)
        size, rest = _product(shape), math.prod(d for d in self.target_shape if d != -1)
        if size is None:
            return [tuple(None if d == -1 else d for d in self.target_shape)]
        if -1 not in self.target_shape:
            if size != rest:
                raise ShapeMismatch(f"cannot reshape shape {shape} ({size} values) to {self.target_shape}")
            return [self.target_shape]
        if size % rest:
            raise ShapeMismatch(f"cannot reshape shape {shape} ({size} values) to {self.target_shape}")
        return [tuple(size // rest if d == -1 else d for d in self.target_shape)]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x = xs[0]
        try:  # an open time axis is only known now
            (out,) = self.output_shapes([x.shape[1:]])
            return [x.reshape(x.shape[0], *out)], [None]
        except ValueError:
            raise BadInputs(
                f"{run.where}: a sample of shape {x.shape[1:]} cannot be reshaped to {self.target_shape}."
            ) from None

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        """Reshape to [batch, *target]: the batch size is read from the input (not the spec's 0 = copy),
        and -1 stays only where an open input axis leaves it unknown."""
        b, p = g.b, g.p
        (out,) = self.output_shapes([xs[0].shape[1:]])
        resolved = b.i64(*(d if known(d) else -1 for d in out))  # type: ignore[misc]
        shape = b.op("Concat", [b.batch_size(xs[0].name, f"{p}/batch"), resolved], f"{p}/shape", axis=0)
        return [b.op("Reshape", [xs[0].name, shape], f"{p}/reshape")], [None], [xs[0].type]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        (out,) = self.output_shapes(g.shapes)  # -1 resolved where the input's sizes are known
        target = ", ".join(str(d if known(d) else -1) for d in out)
        return [f"{outs[0]} = {xs[0]}.reshape({xs[0]}.shape[0], {target})"], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        (out,) = self.output_shapes(g.shapes)  # -1 resolved where the input's sizes are known
        target = ", ".join(str(d if known(d) else -1) for d in out)
        return [f"{outs[0]} = {xs[0]}.reshape({xs[0]}.shape[0], {target})"], [None]


@dataclass(frozen=True)
class Permute(Op):
    """Axes reordered by ``dims`` (1-based, the batch axis stays first)."""

    op_type: ClassVar[str] = "permute"
    dims: tuple[int, ...]

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Permute:
        no_weights(arrays, ctx)
        float32_only(config, ctx)
        dims = int_tuple(config, "dims", ctx)
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise ctx.bad(f"dims {dims!r} is not a permutation of 1..{len(dims)}.")
        return cls(dims)

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        if len(shape) != len(self.dims):
            raise ShapeMismatch(f"dims {self.dims} permute {len(self.dims)} axes, but it is fed shape {shape}")
        return [tuple(shape[d - 1] for d in self.dims)]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        return [np.transpose(xs[0], (0, *self.dims))], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        return [g.b.op("Transpose", [xs[0].name], f"{g.p}/transpose", perm=[0, *self.dims])], [None], [xs[0].type]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        return [f"{outs[0]} = {xs[0]}.permute({', '.join(map(str, (0, *self.dims)))})"], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        return [f"{outs[0]} = np.transpose({xs[0]}, {(0, *self.dims)})"], [None]


READERS = {
    "RepeatVector": RepeatVector.read,
    "Flatten": Flatten.read,
    "Reshape": Reshape.read,
    "Permute": Permute.read,
}
OPS = (RepeatVector, Flatten, Reshape, Permute)
