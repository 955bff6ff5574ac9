"""``Dot``: per sample, the dot product of two tensors along one axis of each (Keras' ``batch_dot``).

The output holds the first input's remaining axes, then the second's (batch axis first, once); two vectors
give ``(batch, 1)``. ``normalize=True`` L2-normalises both inputs along their axes first, with each Keras
version's epsilon (see ``scaling.py``). The mask is dropped: ``Dot.compute_mask`` returns None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from converter.errors import UnsupportedLayer
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
    known,
    no_weights,
)
from converter.layers.pycode import PyContext, PyResult
from converter.layers.scaling import KERAS_EPSILON, l2_normalize, onnx_l2_normalize, torch_l2_normalize


@dataclass(frozen=True)
class Dot(Op):
    op_type: ClassVar[str] = "dot"
    axes: tuple[int, ...]  # one axis for both inputs, or one per input (Keras axes: the batch axis is 0)
    normalize: bool

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Dot:
        no_weights(arrays, ctx)
        axes = config.get("axes", -1)
        axes = tuple(axes) if isinstance(axes, list | tuple) else (axes,)
        if len(axes) not in (1, 2) or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
            raise ctx.bad(f"axes {config.get('axes')!r} is not an integer or a pair of integers.")
        return cls(axes, flag(config, "normalize"))

    def resolved(self, rank_a: int, rank_b: int) -> tuple[int, int]:
        """The contracted axes as indices of the batch-first tensors (ranks include the batch axis)."""
        if len(self.axes) == 1:
            a = self.axes[0]
            pair = (a % rank_a, a % rank_b) if a < 0 else (a, a)
        else:
            pair = (self.axes[0] % rank_a, self.axes[1] % rank_b)
        if 0 in pair or pair[0] >= rank_a or pair[1] >= rank_b:
            raise ShapeMismatch(f"axes {list(self.axes)} do not fit inputs of rank {rank_a} and {rank_b}")
        return pair

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        if len(shapes) != 2:
            raise ShapeMismatch(f"takes exactly two inputs, gets {len(shapes)}")
        a, b = shapes
        if not a or not b:
            raise ShapeMismatch(f"needs inputs of rank 2 or more, gets shapes {a} and {b}")
        i, j = self.resolved(len(a) + 1, len(b) + 1)
        if known(a[i - 1]) and known(b[j - 1]) and a[i - 1] != b[j - 1]:
            raise ShapeMismatch(f"cannot dot shapes {a} and {b} on axes {i} and {j}: sizes {a[i - 1]} != {b[j - 1]}")
        out = (*a[: i - 1], *a[i:], *b[: j - 1], *b[j:])
        return [out or (1,)]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        x, y = (np.asarray(v, np.float32) for v in xs)
        i, j = self.resolved(x.ndim, y.ndim)
        if self.normalize:
            x = l2_normalize(x, (i,), run.keras_major, KERAS_EPSILON)
            y = l2_normalize(y, (j,), run.keras_major, KERAS_EPSILON)
        x, y = np.moveaxis(x, i, -1), np.moveaxis(y, j, 1)  # (batch, ..., K) and (batch, K, ...)
        rest_x, rest_y = x.shape[1:-1], y.shape[2:]
        flat = np.matmul(x.reshape(x.shape[0], -1, x.shape[-1]), y.reshape(y.shape[0], y.shape[1], -1))
        out = flat.reshape((x.shape[0], *rest_x, *rest_y) if rest_x or rest_y else (x.shape[0], 1))
        return [out.astype(np.float32, copy=False)], [None]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers._scaling_python import dot_code

        return dot_code(self, g, outs, xs, masks)

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        """Transposes that bring the axes together, one MatMul (inputs of rank 2 or 3, batch included)."""
        b, p = g.b, g.p
        ra, rb = len(xs[0].shape), len(xs[1].shape)
        if ra > 3 or rb > 3:
            raise UnsupportedLayer(f"{g.where}: Dot of inputs of rank above 3 has no ONNX form here.")
        i, j = self.resolved(ra, rb)
        x, y = g.as_float(xs[0]), g.as_float(xs[1])
        if self.normalize:
            x = onnx_l2_normalize(b, x, [i], g.keras_major, KERAS_EPSILON, f"{p}/normalize_a")
            y = onnx_l2_normalize(b, y, [j], g.keras_major, KERAS_EPSILON, f"{p}/normalize_b")
        if ra == 3 and i == 1:
            x = b.op("Transpose", [x], f"{p}/a_last", perm=[0, 2, 1])
        if rb == 3 and j == 2:
            y = b.op("Transpose", [y], f"{p}/b_first", perm=[0, 2, 1])
        x = b.unsqueeze(x, [1], f"{p}/a_row") if ra == 2 else x  # (batch, 1, K)
        y = b.unsqueeze(y, [2], f"{p}/b_column") if rb == 2 else y  # (batch, K, 1)
        out = b.op("MatMul", [x, y], f"{p}/matmul")
        if ra == 2:
            out = b.op("Squeeze", [out, b.i64(1)], f"{p}/dot")
        elif rb == 2:
            out = b.op("Squeeze", [out, b.i64(2)], f"{p}/dot")
        return [out], [None], [1]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """The contracted axes moved together, one batched matmul, the other axes of both kept in order."""
        ra, rb = len(g.shapes[0]) + 1, len(g.shapes[1]) + 1
        i, j = self.resolved(ra, rb)
        a, b, lines = g.var("a"), g.var("b"), []
        x, y = xs
        if self.normalize:
            x, y = (f"({torch_l2_normalize(v, [k], g.keras_major, KERAS_EPSILON)})" for v, k in ((x, i), (y, j)))
        lines.append(f"{a} = {x}.movedim({i}, -1)  # (batch, ..., K)")
        lines.append(f"{b} = {y}.movedim({j}, 1)  # (batch, K, ...)")
        flat = (
            f"torch.matmul({a}.reshape({a}.shape[0], -1, {a}.shape[-1]), {b}.reshape({b}.shape[0], {b}.shape[1], -1))"
        )
        shape = f"{a}.shape[0], *{a}.shape[1:-1], *{b}.shape[2:]" if ra > 2 or rb > 2 else f"{a}.shape[0], 1"
        lines.append(f"{outs[0]} = {flat}.reshape({shape})")
        return lines, [None]


READERS = {"Dot": Dot.read}
OPS = (Dot,)
