"""``Masking``: a step is masked where every feature equals ``mask_value``; its features become zero."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

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
    TorchContext,
    TorchResult,
    no_weights,
    torch_number,
)
from converter.layers.pycode import PyContext, PyResult, number


@dataclass(frozen=True)
class Masking(Op):
    op_type: ClassVar[str] = "masking"
    mask_value: float

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Masking:
        no_weights(arrays, ctx)
        value = config.get("mask_value", 0.0)
        if not isinstance(value, int | float):
            raise ctx.bad(f"mask_value {value!r} is not a number.")
        return cls(float(value))

    def masked_input_value(self) -> float | None:
        return self.mask_value

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        keep = np.any(xs[0] != np.float32(self.mask_value), axis=-1)
        return [(xs[0] * keep[..., None]).astype(np.float32, copy=False)], [keep]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        from converter.layers.keras_ops import not_equal, reduce_any

        b, p, x = g.b, g.p, g.as_float(xs[0])
        keep = reduce_any(b, not_equal(b, x, FLOAT, self.mask_value, p), -1, False, p)
        factor = b.op("Cast", [b.unsqueeze(keep, [-1], f"{p}/keep")], f"{p}/factor", to=FLOAT)
        return [b.op("Mul", [x, factor], f"{p}/masked")], [keep], [FLOAT]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        mask = g.var("mask")
        lines = [
            f"{mask} = ({xs[0]} != {torch_number(self.mask_value)}).any(dim=-1)  # masked: all features == value",
            f"{outs[0]} = {xs[0]} * {mask}.unsqueeze(-1)",
        ]
        return lines, [mask]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        mask = g.var("mask")
        value = number(self.mask_value)
        lines = [
            f"{mask} = np.any({xs[0]} != np.float32({value}), axis=-1)  # masked: every feature == {value}",
            f"{outs[0]} = ({xs[0]} * {mask}[..., None]).astype(np.float32)",
        ]
        return lines, [mask]


READERS = {"Masking": Masking.read}
OPS = (Masking,)
