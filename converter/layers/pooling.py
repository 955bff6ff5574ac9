"""1-D pooling over the time axis: ``GlobalMaxPooling1D``, ``GlobalAveragePooling1D``, ``MaxPooling1D``,
``AveragePooling1D`` (data_format channels_last ``(batch, steps, features)`` or channels_first
``(batch, features, steps)``).

Masks, as Keras 2 and Keras 3 both compute them: GlobalAveragePooling1D averages over the valid steps only
(a row without a valid step is 0/0 = NaN, as in Keras) and outputs no mask. GlobalMaxPooling1D,
MaxPooling1D and AveragePooling1D ignore an incoming mask (masked steps take part) and drop it.
The two versions differ in how GlobalAveragePooling1D removes masked steps: Keras 3 ``where(mask, x, 0)``,
Keras 2 ``x * mask`` (the same for finite inputs; Inf or NaN at a masked step stays NaN in Keras 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from converter.errors import BadInputs, BadModelFile
from converter.layers.base import (
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
    flag,
    float32_only,
    int_option,
    known,
    no_weights,
    one_input,
)
from converter.layers.pycode import PyContext, PyResult
from converter.layers.reshape import read_data_format

PADDINGS = ("valid", "same")
#: The generated PyTorch file's ``padding_before_after`` for an open time axis.
TORCH_SAME_PADDING = '''def _same_padding(steps, size, stride):
    """TensorFlow's SAME padding of a 1-D pool: (before, after), the odd step at the end."""
    total = max((-(-steps // stride) - 1) * stride + size - steps, 0)
    return total // 2, total - total // 2
'''


def _rank3(shape: Shape) -> None:
    if len(shape) != 2:
        raise ShapeMismatch(f"pools a (batch, steps, features) tensor, but it is fed shape {shape}")


@dataclass(frozen=True)
class GlobalPooling1D(Op):
    """The steps axis reduced (kept with length 1 when ``keepdims``)."""

    data_format: str = "channels_last"
    keepdims: bool = False

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> GlobalPooling1D:
        no_weights(arrays, ctx)
        float32_only(config, ctx)
        return cls(read_data_format(config, ctx), flag(config, "keepdims"))

    @property
    def steps_axis(self) -> int:
        """The steps axis, counting the batch axis."""
        return 1 if self.data_format == "channels_last" else 2

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        _rank3(shape)
        kept = shape[1] if self.data_format == "channels_last" else shape[0]
        if not self.keepdims:
            return [(kept,)]
        return [(1, kept) if self.data_format == "channels_last" else (kept, 1)]


@dataclass(frozen=True)
class GlobalMaxPooling1D(GlobalPooling1D):
    op_type: ClassVar[str] = "global_max_pooling1d"

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        # Neither Keras version passes the mask to it: masked steps take part in the max.
        return [np.max(xs[0], axis=self.steps_axis, keepdims=self.keepdims)], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        y = g.b.reduce_max(g.as_float(xs[0]), [self.steps_axis], self.keepdims, f"{g.p}/max")
        return [y], [None], [FLOAT]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        keep = ", keepdim=True" if self.keepdims else ""
        return [f"{outs[0]} = {xs[0]}.amax(dim={self.steps_axis}{keep})  # masked steps count, as in Keras"], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        keep = ", keepdims=True" if self.keepdims else ""
        return [f"{outs[0]} = np.max({xs[0]}, axis={self.steps_axis}{keep})  # masked steps count, as in Keras"], [None]


@dataclass(frozen=True)
class GlobalAveragePooling1D(GlobalPooling1D):
    op_type: ClassVar[str] = "global_average_pooling1d"

    @property
    def mask_axis(self) -> int:
        """Where Keras expands the (batch, steps) mask to broadcast it against the input."""
        return 2 if self.data_format == "channels_last" else 1

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x, mask, axis = xs[0].astype(np.float32, copy=False), masks[0], self.steps_axis
        if mask is None:
            return [np.mean(x, axis=axis, keepdims=self.keepdims, dtype=np.float32)], [None]
        if mask.ndim != 2 or mask.shape[1] != x.shape[axis]:
            raise BadModelFile(
                f"{run.where}: its mask has shape {mask.shape}, which does not broadcast against its input "
                f"{x.shape} the way Keras applies it; Keras could not have run this model."
            )
        keep = np.expand_dims(mask.astype(bool), self.mask_axis)
        weight = keep.astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):  # Inf*0 (Keras 2) and 0/0 give NaN, as in Keras
            kept = np.where(keep, x, np.float32(0)) if run.keras_major == 3 else x * weight
            y = kept.sum(axis=axis, keepdims=self.keepdims) / weight.sum(axis=axis, keepdims=self.keepdims)
        return [y.astype(np.float32, copy=False)], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p, x, axis = g.b, g.p, g.as_float(xs[0]), self.steps_axis
        if masks[0] is None:
            return [b.reduce_mean(x, [axis], self.keepdims, f"{p}/mean")], [None], [FLOAT]
        keep = b.unsqueeze(masks[0], [self.mask_axis], f"{p}/keep")
        weight = b.op("Cast", [keep], f"{p}/weight", to=FLOAT)
        if g.keras_major == 3:
            kept = b.op("Where", [keep, x, b.scalar(0.0)], f"{p}/kept")
        else:
            kept = b.op("Mul", [x, weight], f"{p}/kept")
        total = b.reduce_sum(kept, [axis], self.keepdims, f"{p}/sum")
        count = b.reduce_sum(weight, [axis], self.keepdims, f"{p}/count")
        return [b.op("Div", [total, count], f"{p}/mean")], [None], [FLOAT]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        axis, keep = self.steps_axis, ", keepdim=True" if self.keepdims else ""
        if masks[0] is None:
            return [f"{outs[0]} = {xs[0]}.mean(dim={axis}{keep})"], [None]
        weight = g.var("weight")
        # Keras 3 removes masked steps with where(mask, x, 0), Keras 2 multiplies by the mask (Inf*0 = NaN).
        kept = f"torch.where({weight} > 0, {xs[0]}, 0.0)" if g.keras_major == 3 else f"({xs[0]} * {weight})"
        return [
            f"{weight} = {masks[0]}.unsqueeze({self.mask_axis}).float()",
            f"{outs[0]} = {kept}.sum(dim={axis}{keep}) / {weight}.sum(dim={axis}{keep})  # the valid steps' mean",
        ], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._pooling_python import global_average_code

        return global_average_code(self, g, outs, xs, masks)


@dataclass(frozen=True)
class Pooling1D(Op):
    """Windows of ``pool_size`` steps every ``strides`` steps; ``same`` pads as TensorFlow does (the
    extra step at the end) and the padding takes no part: not in a max, not counted in an average."""

    pool_size: int = 2
    strides: int = 2
    padding: str = "valid"
    data_format: str = "channels_last"

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Pooling1D:
        no_weights(arrays, ctx)
        float32_only(config, ctx)
        pool_size = int_option(config, "pool_size", ctx)
        strides = pool_size if config.get("strides") is None else int_option(config, "strides", ctx)
        padding = config.get("padding", "valid")
        if not isinstance(padding, str) or padding.lower() not in PADDINGS:
            raise ctx.unsupported(f"padding {padding!r} is not supported; supported: {', '.join(PADDINGS)}.")
        return cls(pool_size, strides, padding.lower(), read_data_format(config, ctx))

    @property
    def steps_index(self) -> int:
        """The steps axis in a shape without the batch axis."""
        return 0 if self.data_format == "channels_last" else 1

    def output_length(self, steps: int) -> int:
        """Keras' ``conv_output_length`` (0 or less: no window fits)."""
        if self.padding == "same":
            return -(-steps // self.strides)
        return (steps - self.pool_size) // self.strides + 1

    def padding_before_after(self, steps: int) -> tuple[int, int]:
        """TensorFlow's SAME padding: the total split with the odd step at the end (ONNX SAME_UPPER)."""
        if self.padding == "valid":
            return 0, 0
        total = max((self.output_length(steps) - 1) * self.strides + self.pool_size - steps, 0)
        return total // 2, total - total // 2

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        _rank3(shape)
        steps = shape[self.steps_index]
        length = None
        if known(steps):
            length = self.output_length(steps)  # type: ignore[arg-type]
            if length < 1:
                raise ShapeMismatch(f"pool_size {self.pool_size} is longer than its {steps} steps (padding valid)")
        return [(length, shape[1]) if self.data_format == "channels_last" else (shape[0], length)]

    def _reduce(self, windows: Array, valid: Array) -> Array:
        raise NotImplementedError

    def _torch_pool(self, x: str, pads: str) -> str:
        raise NotImplementedError

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """torch's pools on (batch, channels, steps); TensorFlow's SAME padding applied with F.pad (torch
        pads both ends alike), as constants where the length is known. An incoming mask is dropped."""
        x, lines = xs[0], []
        channels_last = self.data_format == "channels_last"
        if channels_last:
            lines.append(f"{outs[0]} = {x}.transpose(1, 2)  # (batch, channels, steps)")
            x = outs[0]
        steps = g.shapes[0][self.steps_index]
        if self.padding == "valid":
            pads = "(0, 0)"
        elif known(steps):
            pads = str(self.padding_before_after(steps))  # type: ignore[arg-type]
        else:
            pads = f"{g.helper(TORCH_SAME_PADDING)}({x}.shape[-1], {self.pool_size}, {self.strides})"
        y = self._torch_pool(x, pads)
        lines.append(f"{outs[0]} = {y}.transpose(1, 2)" if channels_last else f"{outs[0]} = {y}")
        return lines, [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._pooling_python import pooling_code

        return pooling_code(self, g, outs, xs, masks)

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x = xs[0].astype(np.float32, copy=False)
        if self.data_format == "channels_first":
            x = np.swapaxes(x, 1, 2)
        steps = x.shape[1]
        length = self.output_length(steps)
        if length < 1:
            raise BadInputs(f"{run.where}: pool_size {self.pool_size} is longer than the {steps} steps it is fed.")
        before, _ = self.padding_before_after(steps)
        index = (np.arange(length) * self.strides - before)[:, None] + np.arange(self.pool_size)  # (out, k)
        valid = (index >= 0) & (index < steps)
        windows = x[:, np.clip(index, 0, steps - 1), :]  # (batch, out, k, features)
        y = self._reduce(windows, valid[None, :, :, None]).astype(np.float32, copy=False)
        return [np.swapaxes(y, 1, 2) if self.data_format == "channels_first" else y], [None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        """ONNX MaxPool/AveragePool on (batch, channels, steps): a Transpose around it for channels_last.
        SAME padding: explicit pads where the length is known. On an open time axis the pads are computed
        in the graph and applied with Pad (auto_pad is deprecated, and its SAME_UPPER goes negative where
        the stride exceeds the window, which onnxruntime rejects)."""
        b, p, x = g.b, g.p, g.as_float(xs[0])
        channels_last = self.data_format == "channels_last"
        if channels_last:
            x = b.transpose(x, [0, 2, 1], f"{p}/channels_first")
        steps = xs[0].shape[1 + self.steps_index]
        attrs: dict[str, Any] = {"kernel_shape": [self.pool_size], "strides": [self.strides]}
        if self.padding == "same" and known(steps):
            attrs["pads"] = list(self.padding_before_after(steps))  # type: ignore[arg-type]
        if self.padding == "same" and not known(steps):
            y = self._onnx_pool_padded(g, x, self._onnx_same_pads(g, x), attrs)
        else:
            y = self._onnx_pool(g, x, attrs)
        if channels_last:
            y = b.transpose(y, [0, 2, 1], f"{p}/channels_last")
        return [y], [None], [FLOAT]

    def _onnx_same_pads(self, g: OnnxContext, x: str) -> str:
        """Pad's pads for (batch, channels, steps), as ``padding_before_after`` computes them (int64 Div of
        non-negative numbers, where truncation and floor agree)."""
        b, p = g.b, g.p
        steps = b.slice(b.op("Shape", [x], f"{p}/shape"), [2], [3], [0], f"{p}/steps")
        windows = b.op("Div", [b.op("Add", [steps, b.i64(self.strides - 1)], f"{p}/up"), b.i64(self.strides)], f"{p}/n")
        last = b.op("Mul", [b.op("Sub", [windows, b.i64(1)], f"{p}/n_1"), b.i64(self.strides)], f"{p}/last")
        span = b.op("Add", [last, b.i64(self.pool_size)], f"{p}/span")
        total = b.op("Max", [b.op("Sub", [span, steps], f"{p}/excess"), b.i64(0)], f"{p}/total")
        before = b.op("Div", [total, b.i64(2)], f"{p}/before")
        after = b.op("Sub", [total, before], f"{p}/after")
        return b.op("Concat", [b.i64(0, 0), before, b.i64(0, 0), after], f"{p}/pads", axis=0)

    def _onnx_pool(self, g: OnnxContext, x: str, attrs: dict[str, Any]) -> str:
        raise NotImplementedError

    def _onnx_pool_padded(self, g: OnnxContext, x: str, pads: str, attrs: dict[str, Any]) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class MaxPooling1D(Pooling1D):
    op_type: ClassVar[str] = "max_pooling1d"

    def _reduce(self, windows: Array, valid: Array) -> Array:
        return np.where(valid, windows, -np.inf).max(axis=2)

    def _torch_pool(self, x: str, pads: str) -> str:
        if pads == "(0, 0)":
            return f"F.max_pool1d({x}, {self.pool_size}, {self.strides})"
        return f'F.max_pool1d(F.pad({x}, {pads}, value=float("-inf")), {self.pool_size}, {self.strides})'

    def _onnx_pool(self, g: OnnxContext, x: str, attrs: dict[str, Any]) -> str:
        return g.b.op("MaxPool", [x], f"{g.p}/max_pool", **attrs)

    def _onnx_pool_padded(self, g: OnnxContext, x: str, pads: str, attrs: dict[str, Any]) -> str:
        # -inf padding never wins a max: every window holds at least one real step.
        padded = g.b.op("Pad", [x, pads, g.b.scalar(-np.inf)], f"{g.p}/padded", mode="constant")
        return self._onnx_pool(g, padded, attrs)


@dataclass(frozen=True)
class AveragePooling1D(Pooling1D):
    op_type: ClassVar[str] = "average_pooling1d"

    def _reduce(self, windows: Array, valid: Array) -> Array:
        return np.where(valid, windows, np.float32(0)).sum(axis=2) / valid.sum(axis=2).astype(np.float32)

    def _torch_pool(self, x: str, pads: str) -> str:
        k, s = self.pool_size, self.strides
        if pads == "(0, 0)":
            return f"F.avg_pool1d({x}, {k}, {s})"
        # The padded average over the share of real steps: the padding is never averaged.
        real = f"F.avg_pool1d(F.pad(torch.ones_like({x}[:, :1]), {pads}), {k}, {s})"
        return f"(F.avg_pool1d(F.pad({x}, {pads}), {k}, {s}) / {real})"

    def _onnx_pool(self, g: OnnxContext, x: str, attrs: dict[str, Any]) -> str:
        # count_include_pad=0: the padding is not counted, as TensorFlow's SAME average pool does it.
        return g.b.op("AveragePool", [x], f"{g.p}/average_pool", count_include_pad=0, **attrs)

    def _onnx_pool_padded(self, g: OnnxContext, x: str, pads: str, attrs: dict[str, Any]) -> str:
        """The average of the zero-padded input over the average of a zero-padded ones row: the sum of each
        window's real steps over their number."""
        from onnx import helper

        b, p = g.b, g.p
        padded = b.op("Pad", [x, pads, b.scalar(0.0)], f"{p}/padded", mode="constant")
        steps = b.slice(b.op("Shape", [x], f"{p}/ones_shape"), [2], [3], [0], f"{p}/ones_steps")
        one = helper.make_tensor("value", FLOAT, [1], [1.0])
        ones_shape = b.op("Concat", [b.i64(1, 1), steps], f"{p}/row_shape", axis=0)
        ones = b.op("ConstantOfShape", [ones_shape], f"{p}/ones", value=one)
        real = b.op("Pad", [ones, pads, b.scalar(0.0)], f"{p}/real", mode="constant")
        share = self._onnx_pool(g, real, attrs)
        return b.op("Div", [self._onnx_pool(g, padded, attrs), share], f"{p}/average")


READERS = {
    "GlobalMaxPooling1D": GlobalMaxPooling1D.read,
    "GlobalAveragePooling1D": GlobalAveragePooling1D.read,
    "MaxPooling1D": MaxPooling1D.read,
    "AveragePooling1D": AveragePooling1D.read,
}
OPS = (GlobalMaxPooling1D, GlobalAveragePooling1D, MaxPooling1D, AveragePooling1D)
