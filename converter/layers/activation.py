"""``Activation``: one Keras activation, elementwise; the mask passes through."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from converter.activations import numpy_activation
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
    read_activation,
    torch_activated,
)
from converter.layers.pycode import PyContext, PyResult


@dataclass(frozen=True)
class Activation(Op):
    op_type: ClassVar[str] = "activation"
    activation: str

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Activation:
        no_weights(arrays, ctx)
        return cls(read_activation(config, "activation", "linear", ctx))

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        y = numpy_activation(self.activation, run.keras_major)(xs[0])
        return [y.astype(np.float32, copy=False)], [masks[0]]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        from converter.export.onnx_activation import activation

        y = activation(g.b, g.as_float(xs[0]), self.activation, g.keras_major, g.p, g.where)
        return [y], [masks[0]], [FLOAT]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        return [f"{outs[0]} = {torch_activated(g, self.activation, xs[0])}"], [masks[0]]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        return [f"{outs[0]} = np.asarray({g.apply(self.activation, xs[0])}, np.float32)"], [masks[0]]


READERS = {"Activation": Activation.read}
OPS = (Activation,)
