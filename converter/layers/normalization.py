"""``BatchNormalization`` (at inference) and ``LayerNormalization``, in Keras' own float32 order of operations.

Both Keras versions compute batch normalization as ``tf.nn.batch_normalization`` does:
``inv = rsqrt(variance + epsilon) * gamma; y = x * inv + (beta - mean * inv)``. At inference the statistics
are the moving ones, so ``inv`` and the shift are constants. ``renorm`` and ``synchronized`` only change
training (Keras uses the moving statistics at inference either way). The mask passes through both layers.

Layer normalization: Keras 3 ``x * inv + (beta - mean * inv)`` with ``inv = rsqrt(var + eps) * gamma``
(``rms_scaling``: ``x * rsqrt(var + eps) * gamma``, no beta); tf.keras the same, except that it takes its
fused kernel (``(x - mean) * rsqrt(var + eps) * gamma + beta``) when the axes are the trailing ones and
``epsilon >= 1.001e-5``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from converter.errors import UnsupportedLayer
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

if TYPE_CHECKING:
    from converter import ir
    from converter.layers.pycode import PyContext, PyResult

F32 = np.float32


def read_axes(value: Any, ctx: ReadContext) -> tuple[int, ...]:
    """A Keras ``axis`` option (an integer or a list of them) as a tuple."""
    axes = tuple(value) if isinstance(value, list | tuple) else (value,)
    if not axes or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ctx.bad(f"axis {value!r} is not an integer or a list of integers.")
    if 0 in axes:
        raise ctx.unsupported("normalising over the batch axis (axis 0) is not supported.")
    return axes


def read_epsilon(config: Mapping[str, Any], default: float, ctx: ReadContext) -> float:
    value = config.get("epsilon", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ctx.bad(f"epsilon {value!r} is not a number >= 0.")
    return float(value)


def axis_indices(axes: tuple[int, ...], shape: Shape) -> list[int]:
    """Keras axes as sorted indices into ``shape`` (batch axis excluded); ShapeMismatch when they do not fit."""
    found = sorted({keras_axis(a, len(shape)) for a in axes})
    if len(found) != len(axes):
        raise ShapeMismatch(f"axis {list(axes)} names an axis twice")
    return found


def rsqrt(x: Array) -> Array:
    with np.errstate(divide="ignore"):
        return (F32(1) / np.sqrt(x)).astype(F32, copy=False)


def along(v: Array, axes: list[int], ndim: int) -> Array:
    """A parameter of the normalised axes' shape, reshaped to broadcast against a rank-``ndim`` tensor."""
    if v.ndim == ndim or axes == [ndim - 1]:
        return v
    shape = [1] * ndim
    for a, d in zip(axes, v.shape, strict=True):
        shape[a] = d
    return v.reshape(shape)


def _check_params(shape: Shape, indices: list[int], param_shape: tuple[int, ...]) -> None:
    dims = [shape[i] for i in indices]
    if len(param_shape) == len(shape) + 1:  # tf.keras multi-axis batch norm: (1, ...) with 1 off the axes
        want = tuple(d if i in indices else 1 for i, d in enumerate(shape))
        expect = (1, *want)
        if any(known(w) and w != p for w, p in zip(expect, param_shape, strict=True)):
            raise ShapeMismatch(f"its weights of shape {param_shape} do not fit an input of shape {shape}")
        return
    if len(dims) != len(param_shape) or any(known(d) and d != p for d, p in zip(dims, param_shape, strict=True)):
        raise ShapeMismatch(f"its weights of shape {param_shape} do not fit axes {dims} of an input of shape {shape}")


def torch_along(v: str, axes: list[int], ndim: int, param_shape: tuple[int, ...]) -> str:
    """``along`` in PyTorch source: the parameter ``v`` reshaped to broadcast against a rank-``ndim`` tensor."""
    if len(param_shape) == ndim or axes == [ndim - 1]:
        return v
    shape = [1] * ndim
    for a, d in zip(axes, param_shape, strict=True):
        shape[a] = d
    return f"{v}.reshape({tuple(shape)})"


def _keras_key(name: str, layout: str, key: str) -> str:
    return f"{name}{LAYOUT_SEP[layout]}{key}"


@dataclass(frozen=True, eq=False)
class BatchNormalization(Op):
    """Inference batch normalization with the moving statistics: ``y = x * inv + shift`` per channel."""

    op_type: ClassVar[str] = "batch_normalization"
    axis: tuple[int, ...]
    epsilon: float
    center: bool
    scale: bool
    param_shape: tuple[int, ...]
    weights: dict[str, np.ndarray] = field(repr=False)
    renorm: bool = False  # only for the parameter count: Keras keeps three more (training-only) statistics

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> BatchNormalization:
        float32_only(config, ctx)
        for option in ("virtual_batch_size", "adjustment"):
            if config.get(option) is not None:
                raise ctx.unsupported(f"{option} is not supported; use a BatchNormalization without it.")
        axis = read_axes(config.get("axis", -1), ctx)
        center, scale, renorm = flag(config, "center", True), flag(config, "scale", True), flag(config, "renorm")
        names = [*(["gamma"] if scale else []), *(["beta"] if center else []), "moving_mean", "moving_variance"]
        extra = ["moving_stddev", "renorm_mean", "renorm_stddev"] if renorm else []
        if not arrays:
            raise ctx.bad("the file holds no moving statistics for it.")
        shape = tuple(int(d) for d in arrays[0][1].shape)
        if len(axis) == 1 and len(shape) != 1:
            raise ctx.bad(f"its weights have shape {shape}; one axis needs one dimension.")
        got = expect_arrays(arrays, [shape] * (len(names) + len(extra)), ctx)
        weights = dict(zip(names, got[: len(names)], strict=True))
        return cls(axis, read_epsilon(config, 1e-3, ctx), center, scale, shape, weights, renorm)

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        _check_params(shape, axis_indices(self.axis, shape), self.param_shape)
        return [shape]

    def params(self) -> tuple[int, str]:
        size = int(np.prod(self.param_shape))
        trained, fixed = int(self.scale) + int(self.center), 2 + 3 * int(self.renorm)
        total = (trained + fixed) * size
        return total, f"{trained}*{size} + {fixed}*{size} (moving statistics) = {total}"

    def affine(self, ndim: int) -> tuple[Array, Array]:
        """``inv`` and ``shift`` of ``y = x * inv + shift``, computed as ``tf.nn.batch_normalization`` does."""
        w = self.weights
        inv = rsqrt(w["moving_variance"] + F32(self.epsilon))
        if self.scale:
            inv = inv * w["gamma"]
        shift = w["beta"] - w["moving_mean"] * inv if self.center else -(w["moving_mean"] * inv)
        axes = sorted(a % ndim for a in self.axis)
        return along(inv, axes, ndim), along(shift.astype(F32), axes, ndim)

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x = xs[0].astype(F32, copy=False)
        inv, shift = self.affine(x.ndim)
        return [(x * inv + shift).astype(F32, copy=False)], [masks[0]]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._norm_python import batch_norm_code

        return batch_norm_code(self, g, outs, xs, masks)

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p = g.b, g.p
        inv, shift = self.affine(len(xs[0].shape))
        y = b.op("Mul", [g.as_float(xs[0]), b.weight(f"{p}/inv", inv)], f"{p}/scaled")
        return [b.op("Add", [y, b.weight(f"{p}/shift", shift)], f"{p}/shifted")], [masks[0]], [xs[0].type]

    def check_torch_source(self, node: ir.Node) -> None:
        """The generated forward writes the formula out: any axes."""

    def torch_module(self, g: TorchContext) -> str | None:
        """nn.BatchNorm1d's tensors (without its num_batches_tracked), computed in Keras' order in forward."""
        names = [self._KEYS["pytorch"][i] for i in self._present("pytorch")]
        return torch_tensors(g, ("running_mean", "running_var"), **dict.fromkeys(names, self.param_shape))

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """``inv = rsqrt(var + eps) * gamma; y = x * inv + (beta - mean * inv)``, as tf.nn.batch_normalization."""
        m, ndim = g.module, len(g.shapes[0]) + 1
        axes = sorted(a % ndim for a in self.axis)
        inv, shift = g.var("inv"), g.var("shift")
        gamma = f" * {m}.weight" if self.scale or self.center else ""
        beta = f"{m}.bias - " if self.center else "-"
        return [
            f"{inv} = torch.rsqrt({m}.running_var + {torch_number(self.epsilon)}){gamma}",
            f"{shift} = {beta}{m}.running_mean * {inv}",
            f"{outs[0]} = {xs[0]} * {torch_along(inv, axes, ndim, self.param_shape)} "
            f"+ {torch_along(shift, axes, ndim, self.param_shape)}",
        ], [masks[0]]

    # npz / JSON: Keras' variables; the ONNX BatchNormalization operator's inputs; nn.BatchNorm1d's state_dict.
    _KEYS: ClassVar[dict[str, tuple[str, str, str, str]]] = {
        "keras": ("gamma", "beta", "moving_mean", "moving_variance"),
        "onnx": ("scale", "B", "input_mean", "input_var"),
        "pytorch": ("weight", "bias", "running_mean", "running_var"),
    }

    def _filled(self) -> dict[str, Array]:
        """gamma and beta even where the layer has none (ones, zeros: exactly the same result)."""
        w, shape = self.weights, self.param_shape
        ones, zeros = np.ones(shape, F32), np.zeros(shape, F32)
        return {"gamma": w.get("gamma", ones), "beta": w.get("beta", zeros), **w}

    def _present(self, layout: str) -> list[int]:
        if layout == "keras":
            return [i for i, on in enumerate((self.scale, self.center, True, True)) if on]
        if layout == "pytorch" and not (self.scale or self.center):
            return [2, 3]  # nn.BatchNorm1d(affine=False)
        return [0, 1, 2, 3]

    def check_layout(self, node: ir.Node, layout: str) -> None:
        if layout == "pytorch" and len(self.param_shape) != 1:
            raise UnsupportedLayer(
                f"layer '{node.name}': a BatchNormalization over several axes {list(self.axis)} has no PyTorch "
                "nn.BatchNorm1d equivalent; use the keras or onnx layout."
            )

    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        keys, names = self._KEYS[layout], self._KEYS["keras"]
        where = " (nn.BatchNorm1d on the input with the normalised axis moved to dim 1)" if layout == "pytorch" else ""
        meanings = ("scale gamma", "offset beta", "moving mean", "moving variance")
        return [
            LayoutTensor(
                _keras_key(name, layout, keys[i]),
                self.param_shape,
                f"{meanings[i]}: y = (x - mean) / sqrt(var + {self.epsilon}) * gamma + beta{where}",
                lambda k=names[i]: self._filled()[k],
            )
            for i in self._present(layout)
        ]

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> BatchNormalization:
        keys, names = self._KEYS[layout], self._KEYS["keras"]
        read = {names[i]: got[_keras_key(name, layout, keys[i])] for i in self._present(layout)}
        keep = [k for k, on in zip(names, (self.scale, self.center, True, True), strict=True) if on]
        return replace(self, weights={k: read[k] for k in keep})


@dataclass(frozen=True, eq=False)
class LayerNormalization(Op):
    op_type: ClassVar[str] = "layer_normalization"
    axis: tuple[int, ...]
    epsilon: float
    center: bool
    scale: bool
    rms_scaling: bool
    param_shape: tuple[int, ...]
    weights: dict[str, np.ndarray] = field(repr=False)

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> LayerNormalization:
        float32_only(config, ctx)
        axis = read_axes(config.get("axis", -1), ctx)
        rms = flag(config, "rms_scaling")
        center, scale = flag(config, "center", True) and not rms, flag(config, "scale", True) or rms
        names = [*(["gamma"] if scale else []), *(["beta"] if center else [])]
        shape = tuple(int(d) for d in arrays[0][1].shape) if arrays else ()
        if arrays and len(shape) != len(axis):
            raise ctx.bad(f"its weights have shape {shape}, which does not fit axis {list(axis)}.")
        got = expect_arrays(arrays, [shape] * len(names), ctx)
        eps = read_epsilon(config, 1e-3, ctx)
        return cls(axis, eps, center, scale, rms, shape, dict(zip(names, got, strict=True)))

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        indices = axis_indices(self.axis, shape)
        if self.weights or self.param_shape:
            _check_params(shape, indices, self.param_shape)
        return [shape]

    def params(self) -> tuple[int, str]:
        size, n = int(np.prod(self.param_shape)), int(self.scale) + int(self.center)
        return (n * size, f"{n}*{size} = {n * size}") if n else (0, "")

    def _axes(self, ndim: int) -> list[int]:
        return sorted(a % ndim for a in self.axis)

    def fused(self, ndim: int, keras_major: int) -> bool:
        """tf.keras' fused kernel: trailing contiguous axes and epsilon >= 1.001e-5."""
        axes = self._axes(ndim)
        return keras_major == 2 and axes == list(range(axes[0], ndim)) and self.epsilon >= 1.001e-5

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x = xs[0].astype(F32, copy=False)
        axes = self._axes(x.ndim)
        gamma = along(self.weights["gamma"], axes, x.ndim) if self.scale else None
        beta = along(self.weights["beta"], axes, x.ndim) if self.center else None
        mean = x.mean(axis=tuple(axes), keepdims=True, dtype=F32)
        var = np.square(x - mean).mean(axis=tuple(axes), keepdims=True, dtype=F32)
        inv = rsqrt(var + F32(self.epsilon))
        if self.rms_scaling:
            y = x * inv
            y = y * gamma if gamma is not None else y
        elif self.fused(x.ndim, run.keras_major):
            y = (x - mean) * inv
            y = y * gamma if gamma is not None else y
            y = y + beta if beta is not None else y
        else:
            inv = inv * gamma if gamma is not None else inv
            shift = beta - mean * inv if beta is not None else -(mean * inv)
            y = x * inv + shift
        return [y.astype(F32, copy=False)], [masks[0]]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._norm_python import layer_norm_code

        return layer_norm_code(self, g, outs, xs, masks)

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        """ReduceMean/Sub/Mul/Sqrt/Reciprocal in the runtime's order (valid from opset 13)."""
        b, p, x = g.b, g.p, g.as_float(xs[0])
        ndim = len(xs[0].shape)
        axes = self._axes(ndim)
        gamma = b.weight(f"{p}/gamma", along(self.weights["gamma"], axes, ndim)) if self.scale else None
        beta = b.weight(f"{p}/beta", along(self.weights["beta"], axes, ndim)) if self.center else None
        mean = b.reduce_mean(x, axes, True, f"{p}/mean")
        centered = b.op("Sub", [x, mean], f"{p}/centered")
        var = b.reduce_mean(b.op("Mul", [centered, centered], f"{p}/square"), axes, True, f"{p}/var")
        std = b.op("Sqrt", [b.op("Add", [var, b.scalar(self.epsilon)], f"{p}/var_eps")], f"{p}/std")
        inv = b.op("Reciprocal", [std], f"{p}/inv")
        if self.rms_scaling or self.fused(ndim, g.keras_major):
            y = b.op("Mul", [x if self.rms_scaling else centered, inv], f"{p}/normed")
            y = b.op("Mul", [y, gamma], f"{p}/scaled") if gamma else y
            y = b.op("Add", [y, beta], f"{p}/shifted") if beta else y
        else:
            inv = b.op("Mul", [inv, gamma], f"{p}/inv_gamma") if gamma else inv
            mean_inv = b.op("Mul", [mean, inv], f"{p}/mean_inv")
            shift = b.op("Sub", [beta, mean_inv], f"{p}/shift") if beta else b.op("Neg", [mean_inv], f"{p}/shift")
            y = b.op("Add", [b.op("Mul", [x, inv], f"{p}/scaled"), shift], f"{p}/normed")
        return [y], [masks[0]], [1]

    def check_layout(self, node: ir.Node, layout: str) -> None:
        if layout == "pytorch" and self.rms_scaling:
            raise UnsupportedLayer(
                f"layer '{node.name}': LayerNormalization(rms_scaling=True) has no PyTorch nn.LayerNorm equivalent "
                "(it does not centre); use the keras or onnx layout."
            )

    def check_torch_source(self, node: ir.Node) -> None:
        """The generated forward writes the formula out: rms_scaling too."""

    def torch_module(self, g: TorchContext) -> str | None:
        shapes = {key: self.param_shape for _, key in self._stored("pytorch")}
        return torch_tensors(g, **shapes) if shapes else None

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """Keras' own order of operations (tf.keras' fused kernel where it takes it; see the module)."""
        x, m, ndim = xs[0], g.module, len(g.shapes[0]) + 1
        axes = self._axes(ndim)
        dims = tuple(axes)
        stored = dict((w, k) for w, k in self._stored("pytorch"))
        gamma = torch_along(f"{m}.weight", axes, ndim, self.param_shape) if "gamma" in stored else None
        beta = torch_along(f"{m}.bias", axes, ndim, self.param_shape) if self.center else None
        mean, var, inv = g.var("mean"), g.var("var"), g.var("inv")
        lines = [
            f"{mean} = {x}.mean(dim={dims}, keepdim=True)",
            f"{var} = ({x} - {mean}).square().mean(dim={dims}, keepdim=True)",
            f"{inv} = torch.rsqrt({var} + {torch_number(self.epsilon)})",
        ]
        if self.rms_scaling or self.fused(ndim, g.keras_major):
            y = f"{x} * {inv}" if self.rms_scaling else f"({x} - {mean}) * {inv}"
            y = f"{y} * {gamma}" if gamma else y
            y = f"{y} + {beta}" if beta else y
        else:
            if gamma:
                lines.append(f"{inv} = {inv} * {gamma}")
            shift = f"{beta} - {mean} * {inv}" if beta else f"-({mean} * {inv})"
            y = f"{x} * {inv} + ({shift})"
        return [*lines, f"{outs[0]} = {y}"], [masks[0]]

    def _stored(self, layout: str) -> list[tuple[str, str]]:
        """``(weight, key)`` pairs the layout holds: nn.LayerNorm has a weight whenever it has a bias."""
        if layout != "pytorch":
            return [(k, k) for k, on in (("gamma", self.scale), ("beta", self.center)) if on]
        return [("gamma", "weight")] * (self.scale or self.center) + [("beta", "bias")] * self.center

    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        torch = layout == "pytorch"
        where = " (nn.LayerNorm over the trailing axes, after moving the normalised axes last)" if torch else ""
        ones = np.ones(self.param_shape, F32)  # a weight of ones where the layer has no gamma: the same result
        return [
            LayoutTensor(
                _keras_key(name, layout, key),
                self.param_shape,
                f"{'scale' if weight == 'gamma' else 'offset'} {weight} over axes {list(self.axis)}{where}",
                lambda w=weight: self.weights.get(w, ones),
            )
            for weight, key in self._stored(layout)
        ]

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> LayerNormalization:
        read = {weight: got[_keras_key(name, layout, key)] for weight, key in self._stored(layout)}
        keep = [k for k, on in (("gamma", self.scale), ("beta", self.center)) if on]
        return replace(self, weights={k: read[k] for k in keep})


READERS = {
    "BatchNormalization": BatchNormalization.read,
    "SyncBatchNormalization": BatchNormalization.read,  # tf.keras' experimental synchronized variant
    "LayerNormalization": LayerNormalization.read,
}
OPS = (BatchNormalization, LayerNormalization)
