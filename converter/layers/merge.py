"""Merge layers: ``Concatenate`` and ``Add``, with each Keras version's mask rule.

Masks: Keras 2 keeps a step only where every input's mask keeps it; Keras 3 where any input's does (and an
input without a mask keeps every step). Concatenating along a non-feature axis concatenates the masks.
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


@dataclass(frozen=True)
class Add(Op):
    op_type: ClassVar[str] = "add"

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        _at_least_two(shapes)
        if not all(_compatible(s, shapes[0]) for s in shapes):
            raise ShapeMismatch(f"cannot add shapes {shapes}")
        return [shapes[0]]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return [out], [combine_masks(masks, run.keras_major)]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        out = xs[0].name
        for k, x in enumerate(xs[1:]):  # pairwise, in order, like the runtime
            out = g.b.op("Add", [out, x.name], f"{g.p}/add_{k}" if len(xs) > 2 else f"{g.p}/add")
        return [out], [onnx_combine_masks(g.b, masks, g.keras_major, g.p)], [xs[0].type]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        mask_lines, out_masks = torch_combine_masks(g, masks)
        return [f"{outs[0]} = {' + '.join(xs)}", *mask_lines], out_masks


READERS = {"Concatenate": Concatenate.read, "Add": Add.read}
OPS = (Concatenate, Add)
