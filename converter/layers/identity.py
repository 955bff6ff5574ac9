"""Layers that are the identity at inference: dropout and noise layers, ActivityRegularization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from converter.layers.base import (
    Array,
    Mask,
    OnnxContext,
    OnnxResult,
    OnnxTensor,
    Op,
    RunContext,
    TorchContext,
    TorchResult,
)
from converter.layers.pycode import PyContext, PyResult

#: Keras classes that only act in training; their rates and strengths change nothing at inference.
IDENTITY_CLASSES = (
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)


@dataclass(frozen=True)
class Identity(Op):
    """A layer that is the identity at inference (Dropout, GaussianNoise, ...)."""

    op_type: ClassVar[str] = "identity"
    passes_through: ClassVar[bool] = True

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        return [xs[0]], [masks[0]]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        return [xs[0].name], [masks[0]], [xs[0].type]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        return [f"{outs[0]} = {xs[0]}  # the identity at inference"], [masks[0]]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        return [f"{outs[0]} = {xs[0]}  # the identity at inference"], [masks[0]]


READERS = dict.fromkeys(IDENTITY_CLASSES, Identity.read)
OPS = (Identity,)
