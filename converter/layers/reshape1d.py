"""Layers that change the length of a sequence: ``UpSampling1D`` (repeat each step), ``ZeroPadding1D``
(zero steps added at the start and end) and ``Cropping1D`` (steps removed at the start and end).

Masks: none of them supports masking in Keras 3 or Keras 2; both drop an incoming mask, and so do these ops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from converter.layers._spatial import read_data_format
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
    int_option,
    known,
    no_weights,
    one_input,
)
from converter.layers.pycode import PyContext, PyResult

_TO_END = int(np.iinfo(np.int64).max)  # a Slice end that ONNX clamps to the axis length


def _pair(config: Mapping[str, Any], key: str, default: Any, ctx: ReadContext) -> tuple[int, int]:
    value = config.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) and v >= 0 for v in value)):
        raise ctx.bad(f"{key} is {value!r}, not one or two whole numbers >= 0.")
    return int(value[0]), int(value[1])


def _rank3(shape: Shape) -> None:
    if len(shape) != 2:
        raise ShapeMismatch(f"needs inputs of rank 3 (batch, steps, features), gets shape {shape}")


@dataclass(frozen=True)
class UpSampling1D(Op):
    op_type: ClassVar[str] = "upsampling1d"
    size: int

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> UpSampling1D:
        no_weights(arrays, ctx)
        return cls(int_option(config, "size", ctx, 2))

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        _rank3(shape)
        return [(shape[0] * self.size if known(shape[0]) else None, shape[1])]  # type: ignore[operator]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        return [np.repeat(xs[0], self.size, axis=1)], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        return [f"{outs[0]} = np.repeat({xs[0]}, {self.size}, axis=1)"], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p, x = g.b, g.p, xs[0].name
        tiled = b.op("Tile", [b.unsqueeze(x, [2], f"{p}/steps"), b.i64(1, 1, self.size, 1)], f"{p}/tile")
        features = xs[0].shape[-1]  # (B, T, size, C) -> (B, T*size, C)
        if known(features):
            shape = b.i64(0, -1, features)  # type: ignore[arg-type]
        else:
            tail = b.slice(b.op("Shape", [x], f"{p}/shape"), [2], [3], [0], f"{p}/features")
            shape = b.op("Concat", [b.i64(0, -1), tail], f"{p}/new_shape", axis=0)
        return [b.op("Reshape", [tiled, shape], f"{p}/upsampled")], [None], [xs[0].type]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        return [f"{outs[0]} = {xs[0]}.repeat_interleave({self.size}, dim=1)"], [None]


@dataclass(frozen=True)
class ZeroPadding1D(Op):
    op_type: ClassVar[str] = "zero_padding1d"
    padding: tuple[int, int]
    data_format: str = "channels_last"

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> ZeroPadding1D:
        no_weights(arrays, ctx)
        return cls(_pair(config, "padding", 1, ctx), read_data_format(config, ctx))

    @property
    def axis(self) -> int:
        """The steps axis, batch included."""
        return 2 if self.data_format == "channels_first" else 1

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = list(one_input(shapes))
        _rank3(tuple(shape))
        n: Dim = shape[self.axis - 1]
        shape[self.axis - 1] = n + sum(self.padding) if known(n) else None  # type: ignore[operator]
        return [tuple(shape)]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        widths = [(0, 0)] * 3
        widths[self.axis] = self.padding
        return [np.pad(xs[0], widths)], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        widths = [(0, 0)] * 3
        widths[self.axis] = self.padding
        return [f"{outs[0]} = np.pad({xs[0]}, {widths})"], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        pads = [0] * 6
        pads[self.axis], pads[3 + self.axis] = self.padding
        out = g.b.op("Pad", [xs[0].name, g.b.i64(*pads)], f"{g.p}/pad", mode="constant")
        return [out], [None], [xs[0].type]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        # F.pad's pairs start at the last axis: the steps axis is the last (channels_first) or the one before
        pads = (*self.padding, 0, 0) if self.axis == 2 else (0, 0, *self.padding)
        return [f"{outs[0]} = F.pad({xs[0]}, {pads})"], [None]


@dataclass(frozen=True)
class Cropping1D(Op):
    op_type: ClassVar[str] = "cropping1d"
    cropping: tuple[int, int]

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Cropping1D:
        no_weights(arrays, ctx)
        return cls(_pair(config, "cropping", (1, 1), ctx))

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        _rank3(shape)
        if not known(shape[0]):
            return [(None, shape[1])]
        length = shape[0] - sum(self.cropping)  # type: ignore[operator]
        if length <= 0:
            raise ShapeMismatch(f"cropping {self.cropping} leaves no steps of {shape[0]}")
        return [(length, shape[1])]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        start, end = self.cropping
        return [xs[0][:, start : xs[0].shape[1] - end]], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        start, end = self.cropping
        return [f"{outs[0]} = {xs[0]}[:, {start} : {xs[0]}.shape[1] - {end}]"], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        start, end = self.cropping
        out = g.b.slice(xs[0].name, [start], [-end if end else _TO_END], [1], f"{g.p}/crop")
        return [out], [None], [xs[0].type]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        start, end = self.cropping
        return [f"{outs[0]} = {xs[0]}[:, {start}:{f'-{end}' if end else ''}]"], [None]


READERS = {"UpSampling1D": UpSampling1D.read, "ZeroPadding1D": ZeroPadding1D.read, "Cropping1D": Cropping1D.read}
OPS = (UpSampling1D, ZeroPadding1D, Cropping1D)
