"""Rescalings without centring: the preprocessing ``Normalization`` layer, ``UnitNormalization`` (and the L2
normalisation ``Dot(normalize=True)`` shares with it) and Keras 3's ``RMSNormalization``, each version's
epsilon exactly as Keras places it.

- ``Normalization``: ``(x - mean) / max(sqrt(variance), 1e-7)``; ``invert``: ``mean + x * max(...)``. The
  statistics are weights (``mean``, ``variance`` and an integer ``count``) when the layer was adapted, or
  numbers in the config when given (then there are no weights; both are kept here as tensors).
- ``RMSNormalization`` (Keras 3): ``x * rsqrt(mean(x^2) + epsilon) * scale``, the scale broadcast against
  the trailing axes as Keras does. Keras drops the mask (the layer does not support masking).
- L2 normalisation: Keras 3 ``x * min(rsqrt(sum(x^2)), 1/eps)`` (``UnitNormalization`` eps 1e-12, ``Dot``
  1e-7); tf.keras ``x * rsqrt(max(sum(x^2), 1e-12))`` (``tf.linalg.l2_normalize``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from converter.layers.base import (
    LAYOUT_SEP,
    Array,
    LayoutTensor,
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
    keras_axis,
    known,
    one_input,
    torch_number,
    torch_tensors,
)
from converter.layers.normalization import F32, axis_indices, read_axes, read_epsilon, rsqrt

if TYPE_CHECKING:
    from converter.export.onnx_builder import Builder
    from converter.layers.pycode import PyContext, PyResult

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), in both versions
UNIT_EPSILON = 1e-12


def l2_normalize(x: Array, axes: tuple[int, ...], keras_major: int, epsilon: float) -> Array:
    """``x`` divided by its L2 norm over ``axes`` (numpy axes), as the Keras version does it."""
    square_sum = np.sum(np.square(x), axis=axes, keepdims=True, dtype=F32)
    if keras_major == 2:
        return (x * rsqrt(np.maximum(square_sum, F32(UNIT_EPSILON)))).astype(F32, copy=False)
    return (x * np.minimum(rsqrt(square_sum), F32(1.0 / epsilon))).astype(F32, copy=False)


def onnx_l2_normalize(b: Builder, x: str, axes: list[int], keras_major: int, epsilon: float, p: str) -> str:
    square_sum = b.reduce_sum(b.op("Mul", [x, x], f"{p}/square"), axes, True, f"{p}/square_sum")
    if keras_major == 2:
        square_sum = b.op("Max", [square_sum, b.scalar(UNIT_EPSILON)], f"{p}/clipped")
    inv = b.op("Reciprocal", [b.op("Sqrt", [square_sum], f"{p}/norm")], f"{p}/inv_norm")
    if keras_major == 3:
        inv = b.op("Min", [inv, b.scalar(1.0 / epsilon)], f"{p}/inv_clipped")
    return b.op("Mul", [x, inv], f"{p}/normalized")


def torch_l2_normalize(x: str, axes: list[int], keras_major: int, epsilon: float) -> str:
    """``l2_normalize`` as a PyTorch expression on the variable ``x`` (``axes`` count the batch axis)."""
    square_sum = f"{x}.square().sum(dim={tuple(axes)}, keepdim=True)"
    if keras_major == 2:
        return f"{x} * torch.rsqrt({square_sum}.clamp(min={UNIT_EPSILON}))"
    return f"{x} * torch.rsqrt({square_sum}).clamp(max={torch_number(1.0 / epsilon)})"


@dataclass(frozen=True)
class UnitNormalization(Op):
    op_type: ClassVar[str] = "unit_normalization"
    axis: tuple[int, ...]

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> UnitNormalization:
        float32_only(config, ctx)
        if arrays:
            raise ctx.bad(f"the file holds {len(arrays)} weight arrays for a layer that has none.")
        return cls(read_axes(config.get("axis", -1), ctx))

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        for a in self.axis:
            keras_axis(a, len(shape))
        return [shape]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x = xs[0].astype(F32, copy=False)
        axes = tuple(sorted({a % x.ndim for a in self.axis}))
        return [l2_normalize(x, axes, run.keras_major, UNIT_EPSILON)], [masks[0]]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._scaling_python import unit_norm_code

        return unit_norm_code(self, g, outs, xs, masks)

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        ndim = len(xs[0].shape)
        axes = sorted({a % ndim for a in self.axis})
        return [onnx_l2_normalize(g.b, g.as_float(xs[0]), axes, g.keras_major, UNIT_EPSILON, g.p)], [masks[0]], [1]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        ndim = len(g.shapes[0]) + 1
        axes = sorted({a % ndim for a in self.axis})
        return [f"{outs[0]} = {torch_l2_normalize(xs[0], axes, g.keras_major, UNIT_EPSILON)}"], [masks[0]]


@dataclass(frozen=True, eq=False)
class RMSNormalization(Op):
    op_type: ClassVar[str] = "rms_normalization"
    axis: tuple[int, ...]
    epsilon: float
    param_shape: tuple[int, ...]
    weights: dict[str, np.ndarray] = field(repr=False)

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> RMSNormalization:
        float32_only(config, ctx)
        axis = read_axes(config.get("axis", -1), ctx)
        shape = tuple(int(d) for d in arrays[0][1].shape) if arrays else ()
        if len(shape) != len(axis):
            raise ctx.bad(f"its scale has shape {shape}, which does not fit axis {list(axis)}.")
        (scale,) = expect_arrays(arrays, [shape], ctx)
        return cls(axis, read_epsilon(config, 1e-6, ctx), shape, {"scale": scale})

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        dims = [shape[i] for i in axis_indices(self.axis, shape)]
        # Keras multiplies by the scale without reshaping it: it broadcasts against the trailing axes.
        trailing = shape[len(shape) - len(self.param_shape) :]
        fits = len(dims) == len(self.param_shape) and len(trailing) == len(self.param_shape)
        if not fits or any(known(d) and d != p for d, p in zip(trailing, self.param_shape, strict=True)):
            raise ShapeMismatch(f"its scale of shape {self.param_shape} does not fit axes {dims} of shape {shape}")
        return [shape]

    def params(self) -> tuple[int, str]:
        size = int(np.prod(self.param_shape))
        return size, f"{size} = {size}"

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x = xs[0].astype(F32, copy=False)
        axes = sorted({a % x.ndim for a in self.axis})
        inv = rsqrt(np.square(x).mean(axis=tuple(axes), keepdims=True, dtype=F32) + F32(self.epsilon))
        return [(x * inv * self.weights["scale"]).astype(F32, copy=False)], [None]  # mask dropped, as Keras

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._scaling_python import rms_norm_code

        return rms_norm_code(self, g, outs, xs, masks)

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p, x = g.b, g.p, g.as_float(xs[0])
        ndim = len(xs[0].shape)
        axes = sorted({a % ndim for a in self.axis})
        mean_square = b.reduce_mean(b.op("Mul", [x, x], f"{p}/square"), axes, True, f"{p}/mean_square")
        rms = b.op("Sqrt", [b.op("Add", [mean_square, b.scalar(self.epsilon)], f"{p}/eps")], f"{p}/rms")
        y = b.op("Mul", [x, b.op("Reciprocal", [rms], f"{p}/inv")], f"{p}/normed")
        scale = b.weight(f"{p}/scale", self.weights["scale"])
        return [b.op("Mul", [y, scale], f"{p}/scaled")], [None], [1]

    def torch_module(self, g: TorchContext) -> str | None:
        return torch_tensors(g, weight=self.param_shape)

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """Keras' formula as it is (the scale broadcast against the trailing axes); the mask is dropped."""
        axes = tuple(sorted({a % (len(g.shapes[0]) + 1) for a in self.axis}))
        x, eps = xs[0], torch_number(self.epsilon)
        return [
            f"{outs[0]} = {x} * torch.rsqrt({x}.square().mean(dim={axes}, keepdim=True) + {eps}) * {g.module}.weight"
        ], [None]

    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        key = f"{name}.weight" if layout == "pytorch" else f"{name}/scale"
        meaning = f"scale over axes {list(self.axis)}: y = x * rsqrt(mean(x^2) + {self.epsilon}) * scale"
        if layout == "pytorch":
            meaning += " (nn.RMSNorm over the normalised axes moved last)"
        return [LayoutTensor(key, self.param_shape, meaning, lambda: self.weights["scale"])]

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> RMSNormalization:
        return replace(self, weights={"scale": got[f"{name}.weight" if layout == "pytorch" else f"{name}/scale"]})


def _stat(value: Any, name: str, ctx: ReadContext) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ctx.bad(f"{name} {value!r} in the config is not a number or a list of numbers.") from None
    if not ctx.allow_nonfinite and not np.all(np.isfinite(array)):
        raise ctx.bad(f"{name} in the config holds NaN or Inf; pass --allow-nonfinite to convert it anyway.")
    return array.astype(F32)


def _trimmed(shape: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """``shape`` without leading size-1 axes beyond ``rank`` (a scalar statistic is kept as shape (1,))."""
    while len(shape) > rank and shape[0] == 1:
        shape = shape[1:]
    return shape


@dataclass(frozen=True, eq=False)
class Normalization(Op):
    """The preprocessing layer: fixed per-position mean and variance over the kept ``axis``."""

    op_type: ClassVar[str] = "normalization"
    axis: tuple[int, ...]  # the axes kept (statistics per position there); () is one scalar mean
    invert: bool
    adapted: bool  # the statistics are weights (counted by count_params, with the sample count)
    stat_shape: tuple[int, ...]
    weights: dict[str, np.ndarray] = field(repr=False)

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Normalization:
        float32_only(config, ctx)
        raw = config.get("axis", -1)
        axis = () if raw is None or raw == [] or raw == () else read_axes(raw, ctx)
        invert = flag(config, "invert")
        mean, variance = config.get("mean"), config.get("variance")
        if mean is not None or variance is not None:
            if arrays:
                raise ctx.bad("it has both a mean in its config and weights; the file does not match its config.")
            if mean is None or variance is None:
                raise ctx.bad("its config gives a mean without a variance (or the reverse).")
            m, v = _stat(mean, "mean", ctx), _stat(variance, "variance", ctx)
            if m.shape != v.shape or m.ndim > len(axis):
                raise ctx.bad(f"mean {m.shape} and variance {v.shape} do not fit axis {list(axis)}.")
            m, v = m.reshape(m.shape or (1,)), v.reshape(v.shape or (1,))  # npz/JSON tensors have rank >= 1
            return cls(axis, invert, False, m.shape, {"mean": m, "variance": v})
        if len(arrays) != 3:
            raise ctx.bad(f"an adapted Normalization has 3 weight arrays (mean, variance, count); got {len(arrays)}.")
        shape = tuple(int(d) for d in arrays[0][1].shape)
        if len(shape) != len(axis):
            raise ctx.bad(f"its mean has shape {shape}, which does not fit axis {list(axis)}.")
        m, v = expect_arrays(arrays[:2], [shape, shape], ctx)
        if np.shape(arrays[2][1]) != ():
            raise ctx.bad(f"its count {arrays[2][0]} is not one number.")
        return cls(axis, invert, True, shape, {"mean": m, "variance": v})

    def _kept(self, ndim: int) -> list[int]:
        return sorted({a % ndim for a in self.axis})

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        kept = sorted({keras_axis(a, len(shape)) for a in self.axis})
        dims = [shape[k] for k in kept]
        stat = _trimmed(self.stat_shape, len(dims))
        fits = len(stat) <= len(dims) and all(
            s == 1 or not known(d) or s == d for s, d in zip(stat[::-1], dims[::-1], strict=False)
        )
        if not fits:
            raise ShapeMismatch(f"its statistics of shape {stat} do not fit axes {dims} of an input of shape {shape}")
        return [shape]

    def params(self) -> tuple[int, str]:
        if not self.adapted:
            return 0, ""
        size = int(np.prod(self.stat_shape))
        return 2 * size + 1, f"2*{size} + 1 (mean, variance, count) = {2 * size + 1}"

    def constants(self, shape: tuple[Any, ...]) -> tuple[Array, Array]:
        """The mean and ``max(sqrt(variance), 1e-7)``, shaped to broadcast against an input of ``shape``."""
        ndim = len(shape)
        kept = self._kept(ndim)
        full = tuple(int(shape[k]) for k in kept)
        target = [int(shape[d]) if d in kept else 1 for d in range(ndim)]
        mean, variance = (self.weights[k] for k in ("mean", "variance"))
        mean = np.broadcast_to(mean.reshape(_trimmed(mean.shape, len(full))), full).reshape(target)
        variance = np.broadcast_to(variance.reshape(_trimmed(variance.shape, len(full))), full).reshape(target)
        return mean.astype(F32), np.maximum(np.sqrt(variance), F32(KERAS_EPSILON)).astype(F32)

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x = xs[0].astype(F32, copy=False)
        mean, denom = self.constants(x.shape)
        y = mean + x * denom if self.invert else (x - mean) / denom
        return [y.astype(F32, copy=False)], [masks[0]]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._scaling_python import normalization_code

        return normalization_code(self, g, outs, xs, masks)

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p, x = g.b, g.p, g.as_float(xs[0])
        mean, denom = self.constants(tuple(1 if k == 0 else d for k, d in enumerate(xs[0].shape)))
        m, d = b.weight(f"{p}/mean", mean), b.weight(f"{p}/denominator", denom)
        if self.invert:
            y = b.op("Add", [m, b.op("Mul", [x, d], f"{p}/scaled")], f"{p}/inverted")
        else:
            y = b.op("Div", [b.op("Sub", [x, m], f"{p}/centered"), d], f"{p}/normalized")
        return [y], [masks[0]], [1]

    def torch_module(self, g: TorchContext) -> str | None:
        return torch_tensors(g, ("mean", "variance"), mean=self.stat_shape, variance=self.stat_shape)

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """The statistics broadcast over the kept axes, the denominator ``max(sqrt(variance), 1e-7)``."""
        shape = (1, *g.shapes[0])
        kept = self._kept(len(shape))
        if not all(isinstance(shape[k], int) for k in kept):
            raise g.unsupported(f"the kept axes {list(self.axis)} need known sizes; give the input a fixed shape.")
        full = tuple(int(shape[k]) for k in kept)  # type: ignore[arg-type]
        target = tuple(int(shape[d]) if d in kept else 1 for d in range(len(shape)))  # type: ignore[arg-type]
        shaped = f".reshape({_trimmed(self.stat_shape, len(full))}).expand({full}).reshape({target})"
        mean, denom = g.var("mean"), g.var("denominator")
        y = f"{mean} + {xs[0]} * {denom}" if self.invert else f"({xs[0]} - {mean}) / {denom}"
        return [
            f"{mean} = {g.module}.mean{shaped}",
            f"{denom} = {g.module}.variance{shaped}.sqrt().clamp(min={KERAS_EPSILON})",
            f"{outs[0]} = {y}",
        ], [masks[0]]

    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        sep, formula = LAYOUT_SEP[layout], "mean + x * s" if self.invert else "(x - mean) / s"
        note = f"{formula}, s = max(sqrt(variance), 1e-7), broadcast over the kept axes {list(self.axis)}"
        return [
            LayoutTensor(f"{name}{sep}{key}", self.stat_shape, f"{key}: {note}", lambda k=key: self.weights[k])
            for key in ("mean", "variance")
        ]

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> Normalization:
        sep = LAYOUT_SEP[layout]
        return replace(self, weights={k: got[f"{name}{sep}{k}"] for k in ("mean", "variance")})


READERS = {
    "Normalization": Normalization.read,
    "UnitNormalization": UnitNormalization.read,
    "RMSNormalization": RMSNormalization.read,
}
OPS = (Normalization, UnitNormalization, RMSNormalization)
