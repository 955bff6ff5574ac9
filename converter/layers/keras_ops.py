"""Keras 3 op layers that functional models save a mask computation with: ``NotEqual`` and ``Any``.

A Keras 3 functional model records a Masking layer's mask as ``x != value`` followed by ``any(..., axis)``;
these ops compute exactly that (boolean tensors, no mask of their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from converter.layers.base import (
    BOOL,
    FLOAT,
    Array,
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
    keras_axis,
    no_weights,
    one_input,
    torch_number,
)
from converter.layers.identity import Identity
from converter.layers.pycode import PyContext, PyResult, number

if TYPE_CHECKING:
    from converter.export.onnx_builder import Builder


def reduce_any(b: Builder, x: str, axis: int, keepdims: bool, p: str) -> str:
    """``any`` of a boolean tensor along ``axis``: max of its 0/1 float form."""
    as_float = b.op("Cast", [x], f"{p}/as_float", to=FLOAT)
    return b.op("Cast", [b.reduce_max(as_float, [axis], keepdims, f"{p}/max")], f"{p}/any", to=BOOL)


def not_equal(b: Builder, x: str, x_type: int, value: float, p: str) -> str:
    const = b.scalar(value, np.float32 if x_type == FLOAT else np.int64)
    return b.op("Not", [b.op("Equal", [x, const], f"{p}/equal")], f"{p}/not_equal")


@dataclass(frozen=True)
class NotEqual(Op):
    """Keras 3 op layer ``x != value`` (elementwise, boolean); functional models save masks with it."""

    op_type: ClassVar[str] = "not_equal"
    value: float

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> NotEqual:
        no_weights(arrays, ctx)
        if len(ctx.constants) != 1 or not isinstance(ctx.constants[0], int | float):
            raise ctx.unsupported("only the comparison of a tensor with one number is supported.")
        return cls(float(ctx.constants[0]))

    def masked_input_value(self) -> float | None:
        return self.value

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        return [xs[0] != np.float32(self.value)], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        return [not_equal(g.b, xs[0].name, xs[0].type, self.value, g.p)], [None], [BOOL]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        return [f"{outs[0]} = {xs[0]} != {torch_number(self.value)}"], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        return [f"{outs[0]} = {xs[0]} != np.float32({number(self.value)})"], [None]


@dataclass(frozen=True)
class ReduceAny(Op):
    """Keras 3 op layer ``any(x, axis)`` over a boolean tensor."""

    op_type: ClassVar[str] = "reduce_any"
    axis: int
    keepdims: bool

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> ReduceAny:
        no_weights(arrays, ctx)
        axis = config.get("axis")
        if not isinstance(axis, int):
            raise ctx.unsupported(f"axis {axis!r} is not supported; only one integer axis.")
        return cls(axis, bool(config.get("keepdims", False)))

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        try:
            axis = keras_axis(self.axis, len(shape))
        except ShapeMismatch:
            raise ShapeMismatch(f"cannot reduce axis {self.axis} of shape {shape}") from None
        return [(*shape[:axis], *((1,) if self.keepdims else ()), *shape[axis + 1 :])]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        return [np.any(xs[0], axis=self.axis, keepdims=self.keepdims)], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        x = xs[0].name if xs[0].type == BOOL else g.b.op("Cast", [xs[0].name], f"{g.p}/as_bool", to=BOOL)
        return [reduce_any(g.b, x, self.axis, self.keepdims, g.p)], [None], [BOOL]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        keep = ", keepdim=True" if self.keepdims else ""
        return [f"{outs[0]} = {xs[0]}.bool().any(dim={self.axis}{keep})"], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        keep = ", keepdims=True" if self.keepdims else ""
        return [f"{outs[0]} = np.any({xs[0]}, axis={self.axis}{keep})"], [None]


def read_convert_to_tensor(config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Identity:
    """Keras 3 op layer ``convert_to_tensor(mask)``: the query mask an Attention layer passes on."""
    no_weights(arrays, ctx)
    if config.get("dtype") is not None or config.get("sparse") or config.get("ragged"):
        raise ctx.unsupported("only convert_to_tensor without a dtype, sparse or ragged option is supported.")
    return Identity()


#: Keras 3 op layers a functional model saves a Masking layer's mask with (``NotEqual`` -> ``Any``), and the
#: ``ConvertToTensor`` of a mask that Attention's ``compute_mask`` records.
READERS = {"NotEqual": NotEqual.read, "Any": ReduceAny.read, "ConvertToTensor": read_convert_to_tensor}
OPS = (NotEqual, ReduceAny)
