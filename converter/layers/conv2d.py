"""Image layers, for CNNs over frames that feed a recurrent layer (usually inside ``TimeDistributed``):
``Conv2D``, ``DepthwiseConv2D``, ``SeparableConv2D`` (the convolution op of ``conv.py``), ``MaxPooling2D``,
``AveragePooling2D``, ``GlobalAveragePooling2D`` and ``GlobalMaxPooling2D``, channels-last as Keras stores
them (channels-first too).

Pooling pads as Keras does: ``same`` adds TF's padding, which a max ignores and an average leaves out of its
count (ONNX ``count_include_pad=0``). None of these layers supports masking in either Keras version: an
incoming mask is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from converter.layers import _spatial as sp
from converter.layers.base import (
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
    flag,
    no_weights,
    one_input,
)
from converter.layers.conv import Conv
from converter.layers.pycode import PyContext, PyResult


def read_conv2d(config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Conv:
    return Conv.read_kind("conv", 2, config, arrays, ctx)


def read_depthwise2d(config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Conv:
    return Conv.read_kind("depthwise", 2, config, arrays, ctx)


def read_separable2d(config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Conv:
    return Conv.read_kind("separable", 2, config, arrays, ctx)


def _rank_check(shape: Shape, rank: int) -> None:
    if len(shape) != rank + 1:
        raise ShapeMismatch(f"needs inputs of rank {rank + 2} (batch included), gets shape {shape}")


@dataclass(frozen=True)
class Pool2D(Op):
    """MaxPooling2D / AveragePooling2D."""

    op_type: ClassVar[str] = "pool2d"
    mode: str  # "max" or "average"
    pool_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str
    data_format: str

    @classmethod
    def read_mode(cls, mode: str, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Pool2D:
        no_weights(arrays, ctx)
        pool = sp.int_tuple(config, "pool_size", 2, ctx, 2)
        strides = sp.int_tuple(config, "strides", 2, ctx, None) if config.get("strides") is not None else pool
        return cls(
            mode, pool, strides, sp.read_padding(config, ctx, ("valid", "same")), sp.read_data_format(config, ctx)
        )

    @property
    def channels_first(self) -> bool:
        return self.data_format == "channels_first"

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        _rank_check(shape, 2)
        spatial, channels = sp.spatial_in(shape, self.channels_first)
        lengths = tuple(
            sp.out_length(n, k, s, 1, self.padding)
            for n, k, s in zip(spatial, self.pool_size, self.strides, strict=True)
        )
        return [sp.spatial_out(lengths, channels, self.channels_first)]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x = sp.channels_last(xs[0].astype(np.float32, copy=False), self.channels_first)
        axes = (-2, -1)
        ones = (1,) * len(self.pool_size)

        def windows(a: Array, fill: float) -> Array:
            return sp.windows(a, self.pool_size, self.strides, ones, self.padding, fill, run.where)

        if self.mode == "max":
            y = windows(x, -np.inf).max(axis=axes)
        else:  # the padding is left out of the count, as TensorFlow's average pooling does
            total = windows(x.astype(np.float64), 0.0).sum(axis=axes)
            y = total / windows(np.ones_like(x[:1, ..., :1]), 0.0).sum(axis=axes)
        return [sp.back_to(y.astype(np.float32), self.channels_first)], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._conv_python import pool2d_code

        return pool2d_code(self, g, outs, xs, masks)

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p = g.b, g.p
        spatial, _ = sp.spatial_in(xs[0].shape[1:], self.channels_first)
        x = sp.onnx_channels_first(b, g.as_float(xs[0]), 4, self.channels_first, p)
        fill = -np.inf if self.mode == "max" else 0.0
        x, attrs, pads = sp.onnx_padded(b, x, spatial, self.pool_size, self.strides, (1, 1), self.padding, p, fill)
        attrs |= {"kernel_shape": list(self.pool_size), "strides": list(self.strides)}
        if self.mode == "max":
            y = b.op("MaxPool", [x], f"{p}/pool", **attrs)
        elif pads is None:  # padding left out of the count, as TensorFlow does
            y = b.op("AveragePool", [x], f"{p}/pool", count_include_pad=0, **attrs)
        else:  # padded in the graph: the mean of the padded input over the mean of its padded ones
            from onnx import helper

            first = 2 if self.channels_first else 1
            hw = b.slice(b.op("Shape", [xs[0].name], f"{p}/in_shape"), [first], [first + 2], [0], f"{p}/hw")
            ones_shape = b.op("Concat", [b.i64(1, 1), hw], f"{p}/ones_shape", axis=0)
            ones = b.op("ConstantOfShape", [ones_shape], f"{p}/ones", value=helper.make_tensor("v", 1, [1], [1.0]))
            padded_ones = b.op("Pad", [ones, pads, b.scalar(0.0)], f"{p}/padded_ones", mode="constant")
            total = b.op("AveragePool", [x], f"{p}/pool_sum", count_include_pad=1, **attrs)
            count = b.op("AveragePool", [padded_ones], f"{p}/pool_count", count_include_pad=1, **attrs)
            y = b.op("Div", [total, count], f"{p}/pool")
        return [sp.onnx_back(b, y, 4, self.channels_first, p)], [None], [1]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """torch's pools on channels-first data, padded as Keras pads: a max ignores the padding (-inf), an
        average leaves it out of its count (the mean of the padded input over the mean of padded ones)."""
        x, lines = xs[0], []
        if not self.channels_first:
            lines.append(f"{outs[0]} = {sp.torch_channels_first(x, 4)}  # channels first, as torch pools")
            x = outs[0]
        spatial, _ = sp.spatial_in(g.shapes[0], self.channels_first)
        pads = sp.torch_pads(g, x, spatial, self.pool_size, self.strides, (1, 1), self.padding)
        k, s = self.pool_size, self.strides
        if self.mode == "max":
            padded = x if pads is None else f'F.pad({x}, {pads}, value=float("-inf"))'
            y = f"F.max_pool2d({padded}, {k}, {s})"
        elif pads is None:
            y = f"F.avg_pool2d({x}, {k}, {s})"
        else:
            count = g.var("count")
            lines.append(f"{count} = F.avg_pool2d(F.pad(torch.ones_like({x}[:1, :1]), {pads}), {k}, {s})")
            y = f"(F.avg_pool2d(F.pad({x}, {pads}), {k}, {s}) / {count})"
        if not self.channels_first:
            y = sp.torch_channels_last(y, 4)
        return [*lines, f"{outs[0]} = {y}"], [None]


@dataclass(frozen=True)
class GlobalPool2D(Op):
    """GlobalAveragePooling2D / GlobalMaxPooling2D: (H, W, C) -> (C,), or (1, 1, C) with keepdims."""

    op_type: ClassVar[str] = "global_pool2d"
    mode: str
    data_format: str
    keepdims: bool

    @classmethod
    def read_mode(
        cls, mode: str, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext
    ) -> GlobalPool2D:
        no_weights(arrays, ctx)
        return cls(mode, sp.read_data_format(config, ctx), flag(config, "keepdims"))

    @property
    def channels_first(self) -> bool:
        return self.data_format == "channels_first"

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        _rank_check(shape, 2)
        _, channels = sp.spatial_in(shape, self.channels_first)
        return [sp.spatial_out((1, 1), channels, self.channels_first) if self.keepdims else (channels,)]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        axes = (2, 3) if self.channels_first else (1, 2)
        x = xs[0].astype(np.float32, copy=False)
        y = (
            x.max(axis=axes, keepdims=self.keepdims)
            if self.mode == "max"
            else x.mean(axis=axes, keepdims=self.keepdims)
        )
        return [y.astype(np.float32, copy=False)], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._conv_python import global_pool2d_code

        return global_pool2d_code(self, g, outs, xs, masks)

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p = g.b, g.p
        x = sp.onnx_channels_first(b, g.as_float(xs[0]), 4, self.channels_first, p)
        y = b.op("GlobalMaxPool" if self.mode == "max" else "GlobalAveragePool", [x], f"{p}/pool")  # (N, C, 1, 1)
        if self.keepdims:
            return [sp.onnx_back(b, y, 4, self.channels_first, p)], [None], [1]
        return [b.op("Flatten", [y], f"{p}/flatten", axis=1)], [None], [1]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        axes = (2, 3) if self.channels_first else (1, 2)
        reduce = "amax" if self.mode == "max" else "mean"
        keep = ", keepdim=True" if self.keepdims else ""
        return [f"{outs[0]} = {xs[0]}.{reduce}(dim={axes}{keep})"], [None]


def _pool(mode: str):
    return lambda config, arrays, ctx: Pool2D.read_mode(mode, config, arrays, ctx)


def _global(mode: str):
    return lambda config, arrays, ctx: GlobalPool2D.read_mode(mode, config, arrays, ctx)


READERS = {
    "Conv2D": read_conv2d,
    "DepthwiseConv2D": read_depthwise2d,
    "SeparableConv2D": read_separable2d,
    "MaxPooling2D": _pool("max"),
    "AveragePooling2D": _pool("average"),
    "GlobalAveragePooling2D": _global("average"),
    "GlobalMaxPooling2D": _global("max"),
}
OPS = (Pool2D, GlobalPool2D)
