"""Merge layers: ``Concatenate``, the elementwise ``Add``, ``Subtract``, ``Multiply``, ``Average``,
``Maximum``, ``Minimum``, and ``Dot``, with each Keras version's mask rule.

Masks: Keras 2 keeps a step only where every input's mask keeps it; Keras 3 where any input's does (and an
input without a mask keeps every step). Concatenating along a non-feature axis concatenates the masks.
Keras 3 also replaces masked values before merging: Multiply multiplies by 1 where an input is masked and
zeroes the steps every input masks; Maximum and Minimum take the other inputs' values where one is masked.
``Dot`` (in ``dot.py``) drops the mask (its ``compute_mask`` returns None in both versions).

Shapes broadcast as Keras' ``Merge`` does: a lower-rank input gets axes inserted after the batch axis, then
size-1 axes stretch (``(batch, 5, 4)`` with ``(batch, 4)`` or ``(batch, 5, 1)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from converter.layers.base import (
    BOOL,
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
    known,
    no_weights,
)
from converter.layers.pycode import PyContext, PyResult

if TYPE_CHECKING:
    from converter.export.onnx_builder import Builder


def _compatible(a: Shape, b: Shape) -> bool:
    return len(a) == len(b) and all(x == y or not known(x) or not known(y) for x, y in zip(a, b, strict=True))


def _at_least_two(shapes: list[Shape]) -> None:
    if len(shapes) < 2:
        raise ShapeMismatch(f"needs at least two inputs, gets {len(shapes)}")


def _full_mask(x: Array, mask: Mask) -> Array:
    if mask is None:
        return np.ones(x.shape, bool)
    return np.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)


def combine_masks(masks: list[Mask], keras_major: int) -> Mask:
    """The mask of an elementwise merge: None when no input has one (or, in Keras 3, when one lacks it)."""
    present = [m for m in masks if m is not None]
    if not present or (keras_major == 3 and len(present) < len(masks)):
        return None
    combined = present[0]
    for m in present[1:]:
        combined = (combined & m) if keras_major == 2 else (combined | m)
    return combined


def onnx_combine_masks(b: Builder, masks: list[str | None], keras_major: int, p: str) -> str | None:
    """``combine_masks`` in ONNX ops."""
    present = [m for m in masks if m is not None]
    if not present or (keras_major == 3 and len(present) < len(masks)):
        return None
    combined = present[0]
    for m in present[1:]:
        combined = b.op("And" if keras_major == 2 else "Or", [combined, m], f"{p}/mask")
    return combined


#: The generated PyTorch file's version of ``_full_mask``.
TORCH_FULL_MASK = '''def _full_mask(x, mask):
    """A mask spread over every element of x (all true where x has no mask), as Keras merges masks."""
    if mask is None:
        return torch.ones_like(x, dtype=torch.bool)
    return mask.reshape(*mask.shape, *[1] * (x.dim() - mask.dim())).expand_as(x)
'''


def torch_combine_masks(g: TorchContext, masks: list[str | None]) -> TorchResult:
    """``combine_masks`` in PyTorch source: Keras 2 keeps a step where every mask does, Keras 3 where any
    does (and no mask at all when one input lacks it)."""
    present = [m for m in masks if m is not None]
    if not present or (g.keras_major == 3 and len(present) < len(masks)):
        return [], [None]
    if len(present) == 1:
        return [], [present[0]]
    mask = g.var("mask")
    return [f"{mask} = {(' & ' if g.keras_major == 2 else ' | ').join(present)}"], [mask]


@dataclass(frozen=True)
class Concatenate(Op):
    op_type: ClassVar[str] = "concatenate"
    axis: int

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Concatenate:
        no_weights(arrays, ctx)
        axis = config.get("axis", -1)
        if not isinstance(axis, int):
            raise ctx.bad(f"axis {axis!r} is not an integer.")
        return cls(axis)

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        _at_least_two(shapes)
        rank = len(shapes[0])
        bad = ShapeMismatch(f"cannot concatenate shapes {shapes} on axis {self.axis}")
        if any(len(s) != rank for s in shapes) or self.axis == 0 or not -rank - 1 < self.axis <= rank:
            raise bad
        axis = keras_axis(self.axis, rank)
        for s in shapes[1:]:
            if not _compatible(s[:axis] + s[axis + 1 :], shapes[0][:axis] + shapes[0][axis + 1 :]):
                raise bad
        sizes = [s[axis] for s in shapes]
        total = sum(sizes) if all(known(d) for d in sizes) else None  # type: ignore[arg-type]
        return [(*shapes[0][:axis], total, *shapes[0][axis + 1 :])]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        out = np.concatenate(xs, axis=self.axis)
        if all(m is None for m in masks):
            return [out], [None]
        full = np.concatenate([_full_mask(x, m) for x, m in zip(xs, masks, strict=True)], axis=self.axis)
        # Keras 2 keeps a step only where every input keeps it; Keras 3 where any input does.
        return [out], [full.all(axis=-1) if run.keras_major == 2 else full.any(axis=-1)]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p = g.b, g.p
        out = b.op("Concat", [x.name for x in xs], f"{p}/concat", axis=self.axis)
        if all(m is None for m in masks):
            return [out], [None], [xs[0].type]
        rank = len(xs[0].shape)
        axis = self.axis % rank
        if axis == rank - 1:  # concatenating features: one step's mask combines the inputs' masks
            return [out], [onnx_combine_masks(b, masks, g.keras_major, p)], [xs[0].type]
        from onnx import helper

        full = []
        for k, (x, m) in enumerate(zip(xs, masks, strict=True)):
            if m is None:  # all true, shaped like x without its feature axis
                shape = b.slice(b.op("Shape", [x.name], f"{p}/shape_{k}"), [0], [-1], [0], f"{p}/mask_shape_{k}")
                value = helper.make_tensor("value", BOOL, [1], [True])
                m = b.op("ConstantOfShape", [shape], f"{p}/all_{k}", value=value)
            full.append(m)
        return [out], [b.op("Concat", full, f"{p}/mask", axis=axis)], [xs[0].type]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        lines = [f"{outs[0]} = torch.cat([{', '.join(xs)}], dim={self.axis})"]
        if all(m is None for m in masks):
            return lines, [None]
        full = g.helper(TORCH_FULL_MASK)
        parts = ", ".join(f"{full}({x}, {m})" for x, m in zip(xs, masks, strict=True))
        mask, rule = g.var("mask"), "all" if g.keras_major == 2 else "any"
        lines.append(f"{mask} = torch.cat([{parts}], dim={self.axis}).{rule}(dim=-1)")
        return lines, [mask]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._merge_python import concatenate_code

        return concatenate_code(self.axis, g, outs, xs, masks)


def broadcast_shapes(shapes: list[Shape]) -> Shape:
    """Keras' elementwise output shape: trailing axes aligned, size 1 stretches, an unknown size stays unknown."""
    out = shapes[0]
    for shape in shapes[1:]:
        long, short = (out, shape) if len(out) >= len(shape) else (shape, out)
        if not short:
            out = long
            continue
        dims: list[Any] = list(long[: len(long) - len(short)])
        for i, j in zip(long[len(long) - len(short) :], short, strict=True):
            if i == j:
                dims.append(i)
            elif i == 1 or j == 1:
                dims.append(j if i == 1 else i)
            elif known(i) and known(j):
                raise ShapeMismatch(f"cannot merge shapes {shapes}: sizes {i} and {j} differ")
            else:
                dims.append(None)
        out = tuple(dims)
    return out


def _same_rank(xs: list[Array]) -> list[Array]:
    """Keras' Merge.call: lower-rank inputs get axes inserted after the batch axis."""
    rank = max(x.ndim for x in xs)
    return [x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:]) for x in xs]


def _keras3_value_masks(xs: list[Array], masks: list[Mask]) -> list[Mask]:
    """The masks Keras 3 merges values with: an input reshaped to the common rank loses its mask (Keras
    reads it from the new tensor), and each is broadcast over the features."""
    rank = max(x.ndim for x in xs)
    return [None if m is None or x.ndim < rank else m[..., None] for x, m in zip(xs, masks, strict=True)]


@dataclass(frozen=True)
class Elementwise(Op):
    """An elementwise merge of two or more inputs (``Add``, ``Multiply``, ...), broadcasting as Keras does."""

    op_type: ClassVar[str] = ""
    onnx_op: ClassVar[str] = ""
    exactly_two: ClassVar[bool] = False

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        _at_least_two(shapes)
        if self.exactly_two and len(shapes) != 2:
            raise ShapeMismatch(f"takes exactly two inputs, gets {len(shapes)}")
        return [broadcast_shapes(shapes)]

    def merge(self, xs: list[Array], masks: list[Mask], keras_major: int) -> Array:
        out = xs[0]
        for x in xs[1:]:
            out = self.pair(out, x)
        return out

    def pair(self, a: Array, b: Array) -> Array:
        raise NotImplementedError

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        out = self.merge(_same_rank(list(xs)), _keras3_value_masks(xs, masks), run.keras_major)
        return [np.asarray(out, np.float32)], [combine_masks(masks, run.keras_major)]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p = g.b, g.p
        rank = max(len(x.shape) for x in xs)
        names = []
        for k, x in enumerate(xs):
            name = g.as_float(x)
            if len(x.shape) < rank:
                name = b.unsqueeze(name, list(range(1, 1 + rank - len(x.shape))), f"{p}/expanded_{k}")
            names.append(name)
        value_masks = [  # only Keras 3 merges values by their masks
            None if m is None or len(x.shape) < rank or g.keras_major == 2 else b.unsqueeze(m, [-1], f"{p}/mask_{k}")
            for k, (x, m) in enumerate(zip(xs, masks, strict=True))
        ]
        out = self.onnx_merge(b, names, value_masks, g.keras_major, p)
        return [out], [onnx_combine_masks(b, masks, g.keras_major, p)], [1]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """The merge on the inputs brought to one rank, with Keras 3's value masks, then the mask rule."""
        mask_lines, out_masks = torch_combine_masks(g, masks)
        ranks = [len(s) for s in g.shapes]
        rank = max(ranks)
        lines, names = [], []
        for k, (x, r) in enumerate(zip(xs, ranks, strict=True)):
            if r < rank:  # Keras inserts the missing axes after the batch axis (torch would put them first)
                name = g.var(f"expanded_{k}")
                lines.append(f"{name} = {x}.reshape({x}.shape[:1] + (1,) * {rank - r} + {x}.shape[1:])")
                x = name
            names.append(x)
        value_masks = [  # only Keras 3 merges values by their masks; a reshaped input loses its mask
            None if m is None or r < rank or g.keras_major == 2 else f"{m}.unsqueeze(-1)"
            for m, r in zip(masks, ranks, strict=True)
        ]
        lines.append(f"{outs[0]} = {self.torch_merge(g, names, value_masks, lines)}")
        return [*lines, *mask_lines], out_masks

    def torch_merge(self, g: TorchContext, xs: list[str], masks: list[str | None], lines: list[str]) -> str:
        """The expression of the merged value (lines it needs first appended to ``lines``)."""
        out = xs[0]
        for x in xs[1:]:  # pairwise, in order, like the runtime
            out = self.torch_pair(out, x)
        return out

    def torch_pair(self, a: str, b: str) -> str:
        raise NotImplementedError

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._merge_python import elementwise_code

        return elementwise_code(self.op_type, g, outs, xs, masks)

    def onnx_merge(self, b: Builder, xs: list[str], masks: list[str | None], keras_major: int, p: str) -> str:
        out = xs[0]
        for k, x in enumerate(xs[1:]):  # pairwise, in order, like the runtime
            out = b.op(self.onnx_op, [out, x], f"{p}/{self.op_type}_{k}" if len(xs) > 2 else f"{p}/{self.op_type}")
        return out


@dataclass(frozen=True)
class Add(Elementwise):
    op_type: ClassVar[str] = "add"
    onnx_op: ClassVar[str] = "Add"

    def pair(self, a: Array, b: Array) -> Array:
        return a + b

    def torch_pair(self, a: str, b: str) -> str:
        return f"{a} + {b}"


@dataclass(frozen=True)
class Subtract(Elementwise):
    op_type: ClassVar[str] = "subtract"
    onnx_op: ClassVar[str] = "Sub"
    exactly_two: ClassVar[bool] = True

    def pair(self, a: Array, b: Array) -> Array:
        return a - b

    def torch_pair(self, a: str, b: str) -> str:
        return f"{a} - {b}"


@dataclass(frozen=True)
class Average(Elementwise):
    op_type: ClassVar[str] = "average"
    onnx_op: ClassVar[str] = "Add"

    def merge(self, xs: list[Array], masks: list[Mask], keras_major: int) -> Array:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total / np.float32(len(xs))

    def onnx_merge(self, b: Builder, xs: list[str], masks: list[str | None], keras_major: int, p: str) -> str:
        total = super().onnx_merge(b, xs, masks, keras_major, p)
        return b.op("Div", [total, b.scalar(float(len(xs)))], f"{p}/average")

    def torch_merge(self, g: TorchContext, xs: list[str], masks: list[str | None], lines: list[str]) -> str:
        return f"({' + '.join(xs)}) / {float(len(xs))}"


@dataclass(frozen=True)
class Multiply(Elementwise):
    """Keras 3: a masked input counts as 1; where every input masks a value, the product is 0."""

    op_type: ClassVar[str] = "multiply"
    onnx_op: ClassVar[str] = "Mul"

    def merge(self, xs: list[Array], masks: list[Mask], keras_major: int) -> Array:
        if keras_major == 2 or all(m is None for m in masks):
            return super().merge(xs, masks, keras_major)
        out, union = None, None
        for x, m in zip(xs, masks, strict=True):
            if m is not None:
                x = np.where(m, x, np.float32(1))
                union = m if union is None else union | m
            out = x if out is None else out * x
        return np.where(union, out, np.float32(0)) if all(m is not None for m in masks) else out

    def pair(self, a: Array, b: Array) -> Array:
        return a * b

    def torch_pair(self, a: str, b: str) -> str:
        return f"{a} * {b}"

    def torch_merge(self, g: TorchContext, xs: list[str], masks: list[str | None], lines: list[str]) -> str:
        if g.keras_major == 2 or all(m is None for m in masks):
            return super().torch_merge(g, xs, masks, lines)
        factors = [x if m is None else f"torch.where({m}, {x}, 1.0)" for x, m in zip(xs, masks, strict=True)]
        product = " * ".join(factors)
        if any(m is None for m in masks):
            return product
        union = " | ".join(m for m in masks if m is not None)
        return f"torch.where({union}, {product}, 0.0)"

    def onnx_merge(self, b: Builder, xs: list[str], masks: list[str | None], keras_major: int, p: str) -> str:
        if keras_major == 2 or all(m is None for m in masks):
            return super().onnx_merge(b, xs, masks, keras_major, p)
        out, union = None, None
        for k, (x, m) in enumerate(zip(xs, masks, strict=True)):
            if m is not None:
                x = b.op("Where", [m, x, b.scalar(1.0)], f"{p}/unmasked_{k}")
                union = m if union is None else b.op("Or", [union, m], f"{p}/union_{k}")
            out = x if out is None else b.op("Mul", [out, x], f"{p}/multiply_{k}")
        if all(m is not None for m in masks):
            out = b.op("Where", [union, out, b.scalar(0.0)], f"{p}/multiply")
        return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Extremum(Elementwise):
    """Maximum and Minimum. Keras 3: where one input is masked the others' value stands in for it."""

    def merge(self, xs: list[Array], masks: list[Mask], keras_major: int) -> Array:
        if keras_major == 2:
            return super().merge(xs, masks, keras_major)
        out, out_mask = xs[0], masks[0]
        for x, m in zip(xs[1:], masks[1:], strict=True):
            if m is not None:
                x = np.where(m, x, out)
            if out_mask is not None:
                out = np.where(out_mask, out, x)
            out_mask = out_mask | m if m is not None and out_mask is not None else None
            out = self.pair(out, x)
        return out

    def onnx_merge(self, b: Builder, xs: list[str], masks: list[str | None], keras_major: int, p: str) -> str:
        if keras_major == 2:
            return super().onnx_merge(b, xs, masks, keras_major, p)
        out, out_mask = xs[0], masks[0]
        for k, (x, m) in enumerate(zip(xs[1:], masks[1:], strict=True)):
            if m is not None:
                x = b.op("Where", [m, x, out], f"{p}/stand_in_{k}")
            if out_mask is not None:
                out = b.op("Where", [out_mask, out, x], f"{p}/kept_{k}")
            out_mask = b.op("Or", [out_mask, m], f"{p}/union_{k}") if m is not None and out_mask is not None else None
            out = b.op(self.onnx_op, [out, x], f"{p}/{self.op_type}_{k}")
        return out

    def torch_merge(self, g: TorchContext, xs: list[str], masks: list[str | None], lines: list[str]) -> str:
        if g.keras_major == 2:
            return super().torch_merge(g, xs, masks, lines)
        out, out_mask = xs[0], masks[0]
        for k, (x, m) in enumerate(zip(xs[1:], masks[1:], strict=True)):
            if m is not None:
                x = f"torch.where({m}, {x}, {out})"
            if out_mask is not None:
                kept = g.var(f"kept_{k}")
                lines.append(f"{kept} = torch.where({out_mask}, {out}, {x})")
                out = kept
            out_mask = f"({out_mask} | {m})" if m is not None and out_mask is not None else None
            step = g.var(f"{self.op_type}_{k}")
            lines.append(f"{step} = {self.torch_pair(out, x)}")
            out = step
        return out


@dataclass(frozen=True)
class Maximum(Extremum):
    op_type: ClassVar[str] = "maximum"
    onnx_op: ClassVar[str] = "Max"

    def pair(self, a: Array, b: Array) -> Array:
        return np.maximum(a, b)

    def torch_pair(self, a: str, b: str) -> str:
        return f"torch.maximum({a}, {b})"


@dataclass(frozen=True)
class Minimum(Extremum):
    op_type: ClassVar[str] = "minimum"
    onnx_op: ClassVar[str] = "Min"

    def pair(self, a: Array, b: Array) -> Array:
        return np.minimum(a, b)

    def torch_pair(self, a: str, b: str) -> str:
        return f"torch.minimum({a}, {b})"


READERS = {
    "Concatenate": Concatenate.read,
    **{cls.__name__: cls.read for cls in (Add, Subtract, Average, Multiply, Maximum, Minimum)},
}
OPS = (Concatenate, Add, Subtract, Average, Multiply, Maximum, Minimum)
