"""``TimeDistributed``: the wrapped layer applied to every time step, as one call on the steps of the whole
batch: (B, T, ...) -> (B*T, ...) -> layer -> (B, T, ...), in NumPy and in ONNX (two Reshapes that keep the
batch and time sizes symbolic; back-to-back wrappers reuse the merged tensor instead of splitting and merging).

``TimeDistributed(Dense)`` stays the plain ``Dense`` op (a Dense on the last axis is the same on every
step, one MatMul): files exported before this wrapper existed still read.

The wrapped layer's weights are the wrapper's: ``inspect`` and the npz/JSON exports list them under the
wrapper's name (``time_distributed/kernel``), and Keras keeps them under ``layers/time_distributed/layer/vars``.

Masks, as each Keras version computes them:

- Keras 3: the output mask is the input mask (the wrapped layer's own mask rule does not apply).
- Keras 2: the wrapped layer's mask, put back to (B, T, ...); where it gives none, the input mask reduced
  to (B, T) (a step is kept where any of its entries is).

Both pass a mask of more than (B, T) into the wrapped layer, step by step (NumPy does; the ONNX graph passes
none, which changes nothing for the layers that ignore masks, i.e. every layer lstm-convert wraps today).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from converter.layers.base import (
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
    known,
    one_input,
)
from converter.layers.dense import Dense
from converter.layers.pycode import PyContext, PyResult

if TYPE_CHECKING:
    from converter import ir
    from converter.export.onnx_builder import Builder

_TO_END = int(np.iinfo(np.int64).max)
_MERGE = ("time_distributed/merge",)  # Builder.undo key: (B, T, ...) -> (B*T, ...)
_LEAD = ("time_distributed/lead",)  # Builder.undo key: (B, T, ...) -> its sizes B and T
_STEP_MASK = ("time_distributed/step_mask",)  # Builder.undo key: a mask -> itself when it is (B, T) already


@dataclass(frozen=True, eq=False)
class TimeDistributed(Op):
    """Any per-step op (``inner``, read from the Keras class ``layer``) applied to every time step."""

    op_type: ClassVar[str] = "time_distributed"
    layer: str
    inner: Op

    # shapes and inspect --------------------------------------------------------------------------------
    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        if len(shape) < 2:
            raise ShapeMismatch(f"needs inputs of rank 3 or more (batch, time, ...), gets shape {shape}")
        outs = self.inner.output_shapes([shape[1:]])
        if len(outs) != 1:
            raise ShapeMismatch(f"the wrapped {self.layer} has {len(outs)} outputs; TimeDistributed needs one")
        return [(shape[0], *outs[0])]

    def params(self) -> tuple[int, str]:
        return self.inner.params()

    def masked_input_value(self) -> float | None:
        return self.inner.masked_input_value()

    def vocabulary(self) -> int | None:
        return self.inner.vocabulary()

    def options(self) -> dict[str, Any]:
        return {"layer": self.layer, **self.inner.options()}

    def tensor_shapes(self) -> list[dict[str, Any]]:
        return self.inner.tensor_shapes()

    def weight_items(self) -> list[NamedArray]:
        return self.inner.weight_items()

    def activations(self) -> list[tuple[str, str]]:
        return self.inner.activations()

    # NumPy -----------------------------------------------------------------------------------------------
    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x, mask = xs[0], masks[0]
        batch, steps = x.shape[:2]
        merged = x.reshape(batch * steps, *x.shape[2:])
        inner_mask = None if mask is None or mask.ndim <= 2 else mask.reshape(batch * steps, *mask.shape[2:])
        inner_run = RunContext(run.keras_major, run.where, run.node, cache=run.cache.setdefault("inner", {}))
        (y,), (y_mask,) = self.inner.call([merged], [inner_mask], inner_run)
        out = y.reshape(batch, steps, *y.shape[1:])
        if run.keras_major == 3 or (mask is None and y_mask is None):
            return [out], [mask]
        if y_mask is not None:
            return [out], [y_mask.reshape(batch, steps, *y_mask.shape[1:])]
        return [out], [mask.reshape(batch, steps, -1).any(axis=-1)]  # type: ignore[union-attr]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        """The wrapped layer's code on the time steps merged into the batch axis, then split again."""
        x, mask = xs[0], masks[0]
        merged, inner_out = g.var("merged"), g.var("inner")
        lines = [f"{merged} = {x}.reshape({x}.shape[0] * {x}.shape[1], *{x}.shape[2:])"]
        inner_mask = None
        if mask is not None and len(g.shapes[0]) > 2:  # a mask with more than (batch, steps) axes
            inner_mask = g.var("merged_mask")
            lines.append(f"{inner_mask} = {mask}.reshape({mask}.shape[0] * {mask}.shape[1], *{mask}.shape[2:])")
        inner_g = replace(g, shapes=[g.shapes[0][1:]])
        code, (y_mask,) = self.inner.python_code(inner_g, [inner_out], [merged], [inner_mask])
        lines += [*code, f"{outs[0]} = {inner_out}.reshape({x}.shape[0], {x}.shape[1], *{inner_out}.shape[1:])"]
        if g.keras_major == 3 or (mask is None and y_mask is None):
            return lines, [mask]
        out_mask = g.var("mask")
        if y_mask is not None:
            lines.append(f"{out_mask} = {y_mask}.reshape({x}.shape[0], {x}.shape[1], *{y_mask}.shape[1:])")
        else:
            lines.append(f"{out_mask} = {mask}.reshape({x}.shape[0], {x}.shape[1], -1).any(axis=-1)")
        return lines, [out_mask]

    # ONNX ------------------------------------------------------------------------------------------------
    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p, x = g.b, g.p, xs[0]
        rest = x.shape[2:]
        merged = b.undo(x.name, _MERGE)
        if merged is None:
            if all(known(d) for d in rest):
                shape = b.i64(-1, *rest)  # type: ignore[arg-type]
            else:
                shape = b.op("Concat", [b.i64(-1), _dims(b, x.name, 2, p, "rest")], f"{p}/merged_shape", axis=0)
            merged = b.op("Reshape", [x.name, shape], f"{p}/merge_time")
        inner_g = OnnxContext(b, g.node, g.keras_major, g.state_io, g.batch)
        (y,), (y_mask,), types = self.inner.to_onnx(inner_g, [OnnxTensor(merged, x.type, (None, *rest))], [None])
        lead = b.undo(x.name, _LEAD) or _dims(b, x.name, 0, p, "batch_time", end=2)
        out_rest = self.inner.output_shapes([rest])[0]
        tail = b.i64(*out_rest) if all(known(d) for d in out_rest) else _dims(b, y, 1, p, "out_rest")  # type: ignore[arg-type]
        out = b.op("Reshape", [y, b.op("Concat", [lead, tail], f"{p}/split_shape", axis=0)], f"{p}/split_time")
        b.remember_inverse(out, _MERGE, y)  # the next wrapper merges nothing: it takes y
        b.remember_inverse(out, _LEAD, lead)
        mask = masks[0]
        if g.keras_major == 3 or (mask is None and y_mask is None):
            return [out], [mask], types
        if y_mask is not None:
            shape = b.op("Concat", [lead, _dims(b, y_mask, 1, p, "mask_rest")], f"{p}/mask_shape", axis=0)
            return [out], [b.op("Reshape", [y_mask, shape], f"{p}/mask")], types
        from converter.layers.keras_ops import reduce_any

        if b.undo(mask, _STEP_MASK):  # type: ignore[arg-type]
            return [out], [mask], types
        shape = b.op("Concat", [lead, b.i64(-1)], f"{p}/mask_shape", axis=0)
        flat = b.op("Reshape", [mask, shape], f"{p}/mask_steps")  # type: ignore[list-item]
        reduced = reduce_any(b, flat, 2, False, f"{p}/mask")
        b.remember_inverse(reduced, _STEP_MASK, reduced)
        return [out], [reduced], types

    # PyTorch source ----------------------------------------------------------------------------------
    def _inner_context(self, g: TorchContext) -> TorchContext:
        inner = TorchContext(g.node, g.keras_major, g.module, [g.shapes[0][1:]], new_name=g.new_name)
        inner.helpers = g.helpers
        return inner

    def check_torch_source(self, node: ir.Node) -> None:
        self.inner.check_torch_source(node)

    def torch_module(self, g: TorchContext) -> str | None:
        return self.inner.torch_module(self._inner_context(g))

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """The wrapped layer on the steps of the whole batch at once: (B, T, ...) -> (B*T, ...) and back."""
        x, mask = xs[0], masks[0]
        merged, y = g.var("steps"), g.var("inner")
        lines = [f"{merged} = {x}.flatten(0, 1)  # (batch * time, ...): every step at once"]
        code, (y_mask,) = self.inner.torch_forward(self._inner_context(g), [y], [merged], [None])
        lines += code
        lines.append(f"{outs[0]} = {y}.unflatten(0, ({x}.shape[0], {x}.shape[1]))")
        if g.keras_major == 3 or (mask is None and y_mask is None):
            return lines, [mask]
        out_mask = g.var("mask")
        if y_mask is not None:  # Keras 2: the wrapped layer's mask, put back to (B, T, ...)
            lines.append(f"{out_mask} = {y_mask}.unflatten(0, ({x}.shape[0], {x}.shape[1]))")
        else:  # Keras 2: the input mask reduced to (B, T)
            lines.append(f"{out_mask} = {mask}.reshape({x}.shape[0], {x}.shape[1], -1).any(dim=-1)")
        return lines, [out_mask]

    # npz / JSON ------------------------------------------------------------------------------------------
    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        return self.inner.layout_tensors(name, layout)

    def check_layout(self, node: ir.Node, layout: str) -> None:
        self.inner.check_layout(node, layout)

    def expected_layout_tensors(self, name: str, layout: str, arrays: Mapping[str, Array]) -> list[LayoutTensor]:
        return self.inner.expected_layout_tensors(name, layout, arrays)

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> TimeDistributed:
        return replace(self, inner=self.inner.from_layout(name, layout, got))

    def config(self) -> dict[str, Any]:
        return {"layer": self.layer, "inner_type": self.inner.op_type, "inner": self.inner.config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TimeDistributed:
        from converter.layers import OP_TYPES

        op = OP_TYPES.get(config["inner_type"])
        if op is None or op is cls:
            raise ValueError(f"unknown wrapped layer type {config['inner_type']!r}")
        return cls(str(config["layer"]), op.from_config(config["inner"]))


def _dims(b: Builder, x: str, start: int, p: str, what: str, end: int = _TO_END) -> str:
    """The sizes of axes ``start:end`` of ``x`` as a 1-D int64 tensor."""
    return b.slice(b.op("Shape", [x], f"{p}/{what}_shape"), [start], [end], [0], f"{p}/{what}")


def read_time_distributed(config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Op:
    """TimeDistributed(Dense) as the Dense op (as before); any other per-step layer wrapped."""
    from converter.layers import FAMILY, OP_LAYERS, READERS

    entry = config.get("layer")
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise ctx.bad("its wrapped layer config is missing.")
    class_name = str(entry.get("class_name"))
    if entry.get("registered_name") not in (None, class_name):
        raise ctx.unsupported(
            f"it wraps the custom class {entry.get('registered_name')!r}; custom classes are never loaded."
        )
    if class_name == "Dense":
        return replace(Dense.read(entry["config"], arrays, ctx), time_distributed=True)
    can_wrap = sorted(c for c in READERS if c not in OP_LAYERS and FAMILY[c] not in _NOT_PER_STEP)
    if class_name not in can_wrap:
        raise ctx.unsupported(
            f"wrapping {class_name!r} is not supported; it can wrap any per-step layer: {', '.join(can_wrap)}."
        )
    inner = READERS[class_name](entry["config"], arrays, ctx.inner("layer", class_name))
    if inner.has_states:
        raise ctx.unsupported(f"wrapping the recurrent layer {class_name!r} is not supported.")
    return TimeDistributed(class_name, inner)


#: Families whose layers are not one-input per-step layers: merges, recurrent layers, this wrapper itself.
_NOT_PER_STEP = ("merge", "recurrent", "time_distributed")

READERS = {"TimeDistributed": read_time_distributed}
OPS = (TimeDistributed,)
