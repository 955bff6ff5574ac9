"""Convolutions: ``Conv1D`` (and ``Conv2D``, read in ``conv2d.py``), ``DepthwiseConv1D``, ``SeparableConv1D``.

One op for all of them: a grouped convolution with Keras' padding (valid, same, causal), strides, dilation,
activation and bias, on channels-last (or channels-first) data. A depthwise convolution is the grouped
convolution with one group per input channel; a separable one is a depthwise convolution followed by a
1x1 (pointwise) convolution. In ONNX each convolution is one ``Conv`` node on channels-first data, with
Keras' padding as explicit pads; channels-last data is transposed at the edges of a run of such layers.

Masks: neither Keras 3 nor Keras 2 convolutions support masking; both drop an incoming mask (Keras 3
with a warning), so layers after a convolution see none. So does this op.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from converter.activations import numpy_activation
from converter.layers import _spatial as sp
from converter.layers._conv_layouts import ConvLayouts
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
    expect_arrays,
    flag,
    float32_only,
    known,
    one_input,
    read_activation,
    torch_activated,
)

if TYPE_CHECKING:
    from converter.layers.pycode import PyContext, PyResult

#: Activations over the channel axis: applied in the channels-last form Keras applies them in.
_AXIS_ACTIVATIONS = ("softmax", "log_softmax")
#: The kinds of convolution and the names of their kernels (Keras' own), before the bias.
_WEIGHTS = {
    "conv": ("kernel",),
    "depthwise": ("depthwise_kernel",),
    "separable": ("depthwise_kernel", "pointwise_kernel"),
}


@dataclass(frozen=True, eq=False)
class Conv(ConvLayouts, Op):
    """A convolution of ``rank`` spatial axes; ``kind`` says how the weights are kept (see the module)."""

    op_type: ClassVar[str] = "conv"
    kind: str
    rank: int
    in_channels: int
    filters: int  # output channels (in_channels * depth_multiplier for a depthwise convolution)
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    dilation_rate: tuple[int, ...]
    padding: str
    data_format: str
    groups: int
    depth_multiplier: int
    activation: str
    use_bias: bool
    weights: dict[str, np.ndarray] = field(repr=False)

    # reading -------------------------------------------------------------------------------------------
    @classmethod
    def read_kind(
        cls, kind: str, rank: int, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext
    ) -> Conv:
        float32_only(config, ctx)
        if config.get("lora_rank"):
            raise ctx.unsupported("LoRA-enabled convolutions are not supported; merge the LoRA weights first.")
        kernel = sp.int_tuple(config, "kernel_size", rank, ctx)
        strides = sp.int_tuple(config, "strides", rank, ctx, 1)
        dilation = sp.int_tuple(config, "dilation_rate", rank, ctx, 1)
        padding = sp.read_padding(config, ctx, sp.PADDINGS if rank == 1 else ("valid", "same"))
        if max(strides) > 1 and max(dilation) > 1:
            raise ctx.bad("strides > 1 together with dilation_rate > 1 is not a convolution Keras computes.")
        use_bias = flag(config, "use_bias", True)
        if not arrays or arrays[0][1].ndim != rank + 2:
            raise ctx.bad("the file holds no kernel of the right rank for it.")
        groups, multiplier = 1, 1
        in_channels = int(arrays[0][1].shape[rank])
        if kind == "conv":
            filters, groups = _positive(config, "filters", ctx), _positive(config, "groups", ctx, 1)
            if filters % groups:
                raise ctx.bad(f"filters {filters} is not a multiple of groups {groups}.")
            in_channels *= groups
            shapes = [(*kernel, in_channels // groups, filters)]
        else:
            multiplier = _positive(config, "depth_multiplier", ctx, 1)
            shapes = [(*kernel, in_channels, multiplier)]
            filters = in_channels * multiplier
            if kind == "separable":
                filters = _positive(config, "filters", ctx)
                shapes.append((*(1,) * rank, in_channels * multiplier, filters))
        shapes += [(filters,)] if use_bias else []
        found = expect_arrays(arrays, shapes, ctx)
        weights = dict(zip([*_WEIGHTS[kind], "bias"], found, strict=False))
        activation = read_activation(config, "activation", "linear", ctx)
        fmt = sp.read_data_format(config, ctx)
        return cls(
            kind, rank, in_channels, filters, kernel, strides, dilation, padding, fmt, groups, multiplier,
            activation, use_bias, weights,
        )  # fmt: skip

    @property
    def channels_first(self) -> bool:
        return self.data_format == "channels_first"

    # shapes and inspect --------------------------------------------------------------------------------
    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        if len(shape) != self.rank + 1:
            raise ShapeMismatch(f"needs inputs of rank {self.rank + 2} (batch included), gets shape {shape}")
        spatial, channels = sp.spatial_in(shape, self.channels_first)
        if known(channels) and channels != self.in_channels:
            raise ShapeMismatch(f"its kernel expects {self.in_channels} channels but it is fed shape {shape}")
        lengths = tuple(
            sp.out_length(n, k, s, d, self.padding)
            for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate, strict=True)
        )
        return [sp.spatial_out(lengths, self.filters, self.channels_first)]

    def params(self) -> tuple[int, str]:
        window = "*".join(str(k) for k in self.kernel_size)
        bias = [str(self.filters)] if self.use_bias else []
        if self.kind == "conv":
            terms = [f"{window}*{self.in_channels // self.groups}*{self.filters}", *bias]
        else:
            depth = f"{window}*{self.in_channels}*{self.depth_multiplier}"
            pointwise = (
                [f"{self.in_channels * self.depth_multiplier}*{self.filters}"] if self.kind == "separable" else []
            )
            terms = [depth, *pointwise, *bias]
        total = sum(int(np.prod([int(f) for f in t.split("*")])) for t in terms)
        return total, f"{' + '.join(terms)} = {total}"

    def options(self) -> dict[str, Any]:
        skip = ("kind", "rank", "in_channels") + (("groups",) if self.kind != "conv" else ("depth_multiplier",))
        return {k: v for k, v in self.config().items() if k not in skip}

    # the grouped-convolution form of the weights ----------------------------------------------------------
    @property
    def conv_groups(self) -> int:
        """The groups of the first convolution: one per input channel for a depthwise one."""
        return self.groups if self.kind == "conv" else self.in_channels

    def _grouped(self) -> tuple[Array, int]:
        """The first convolution's kernel as Keras lays out a grouped one, (*k, in/groups, out), and groups."""
        if self.kind == "conv":
            return self.weights["kernel"], self.groups
        depth = self.weights["depthwise_kernel"]  # (*k, in, m): output channel c*m + j reads input channel c
        return depth.reshape(*self.kernel_size, 1, self.in_channels * self.depth_multiplier), self.conv_groups

    # NumPy -----------------------------------------------------------------------------------------------
    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x = sp.channels_last(xs[0].astype(np.float32, copy=False), self.channels_first)
        kernel, groups = self._grouped()
        y = sp.conv(x, kernel, groups, self.strides, self.dilation_rate, self.padding, run.where)
        if self.kind == "separable":
            y = sp.conv(y, self.weights["pointwise_kernel"], 1, (1,) * self.rank, (1,) * self.rank, "valid")
        if self.use_bias:
            y = y + self.weights["bias"]
        y = sp.back_to(y.astype(np.float32), self.channels_first)
        return [numpy_activation(self.activation, run.keras_major)(y).astype(np.float32, copy=False)], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._conv_python import conv_code

        return conv_code(self, g, outs, xs, masks)

    # ONNX ------------------------------------------------------------------------------------------------
    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        from converter.export.onnx_activation import activation

        b, p, rank = g.b, g.p, self.rank + 2
        spatial, _ = sp.spatial_in(xs[0].shape[1:], self.channels_first)
        y = sp.onnx_channels_first(b, g.as_float(xs[0]), rank, self.channels_first, p)
        w, pw, bias = self._onnx_weights()
        y, attrs, _ = sp.onnx_padded(b, y, spatial, self.kernel_size, self.strides, self.dilation_rate, self.padding, p)
        first = [y, b.weight(f"{p}/W", w)] + ([b.weight(f"{p}/B", bias)] if self.use_bias and pw is None else [])
        y = b.op(
            "Conv", first, f"{p}/conv", kernel_shape=list(self.kernel_size), strides=list(self.strides),
            dilations=list(self.dilation_rate), group=self.conv_groups, **attrs,
        )  # fmt: skip
        if pw is not None:
            second = [y, b.weight(f"{p}/pointwise/W", pw)] + ([b.weight(f"{p}/B", bias)] if self.use_bias else [])
            y = b.op("Conv", second, f"{p}/pointwise", kernel_shape=[1] * self.rank)
        if self.activation not in _AXIS_ACTIVATIONS:  # elementwise: stays channels-first
            y = activation(b, y, self.activation, g.keras_major, p, g.where)
        y = sp.onnx_back(b, y, rank, self.channels_first, p)
        if self.activation in _AXIS_ACTIVATIONS:
            y = activation(b, y, self.activation, g.keras_major, p, g.where)
        return [y], [None], [1]

    def _onnx_weights(self) -> tuple[Array, Array | None, Array | None]:
        """ONNX Conv's W (out, in/groups, *k), the pointwise W of a separable one, and the bias."""
        kernel, _ = self._grouped()
        w = np.transpose(kernel, (self.rank + 1, self.rank, *range(self.rank)))
        pw = None
        if self.kind == "separable":
            pw = np.transpose(self.weights["pointwise_kernel"], (self.rank + 1, self.rank, *range(self.rank)))
        return w, pw, self.weights.get("bias")

    # PyTorch source --------------------------------------------------------------------------------------
    def torch_module(self, g: TorchContext) -> str | None:
        """``nn.Conv1d``/``nn.Conv2d`` without padding (Keras' is applied with F.pad); a separable
        convolution is a depthwise one then a pointwise one, kept as ``depthwise``/``pointwise``."""
        module, r = f"nn.Conv{self.rank}d", self.rank

        def size(t: tuple[int, ...]) -> str:
            return str(t[0]) if r == 1 else str(t)

        inner = self.filters if self.kind == "conv" else self.in_channels * self.depth_multiplier
        args = [str(self.in_channels), str(inner), size(self.kernel_size)]
        args += [f"stride={size(self.strides)}"] if max(self.strides) > 1 else []
        args += [f"dilation={size(self.dilation_rate)}"] if max(self.dilation_rate) > 1 else []
        args += [f"groups={self.conv_groups}"] if self.conv_groups > 1 else []
        if self.kind != "separable":
            return f"{module}({', '.join(args + ([] if self.use_bias else ['bias=False']))})"
        pointwise = [str(inner), str(self.filters), "1"] + ([] if self.use_bias else ["bias=False"])
        return (
            f"nn.ModuleDict({{'depthwise': {module}({', '.join([*args, 'bias=False'])}), "
            f"'pointwise': {module}({', '.join(pointwise)})}})"
        )

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """Channels-first, padded as Keras pads, convolved, back to Keras' layout, activated. The mask is
        dropped, as Keras does."""
        rank, x, lines = self.rank + 2, xs[0], []
        if not self.channels_first:
            lines.append(f"{outs[0]} = {sp.torch_channels_first(x, rank)}  # channels first, as torch convolves")
            x = outs[0]
        spatial, _ = sp.spatial_in(g.shapes[0], self.channels_first)
        pads = sp.torch_pads(g, x, spatial, self.kernel_size, self.strides, self.dilation_rate, self.padding)
        if pads is not None:
            lines.append(f"{outs[0]} = F.pad({x}, {pads})  # Keras' {self.padding!r} padding")
            x = outs[0]
        separable = f"{g.module}.pointwise({g.module}.depthwise({x}))"
        y = separable if self.kind == "separable" else f"{g.module}({x})"
        if not self.channels_first:
            y = sp.torch_channels_last(y, rank)
        return [*lines, f"{outs[0]} = {torch_activated(g, self.activation, y)}"], [None]


def _positive(config: Mapping[str, Any], key: str, ctx: ReadContext, default: Any = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ctx.bad(f"{key} is {value!r}, not a whole number >= 1.")
    return value


def read_conv1d(config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Conv:
    return Conv.read_kind("conv", 1, config, arrays, ctx)


def read_depthwise1d(config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Conv:
    return Conv.read_kind("depthwise", 1, config, arrays, ctx)


def read_separable1d(config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Conv:
    return Conv.read_kind("separable", 1, config, arrays, ctx)


READERS = {"Conv1D": read_conv1d, "DepthwiseConv1D": read_depthwise1d, "SeparableConv1D": read_separable1d}
OPS = (Conv,)
