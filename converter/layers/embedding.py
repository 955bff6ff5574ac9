"""``Embedding``: ids -> rows of a table; with ``mask_zero`` id 0 masks its step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from converter.errors import BadInputs
from converter.layers.base import (
    FLOAT,
    INT64,
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
    TorchContext,
    TorchResult,
    expect_arrays,
    flag,
    float32_only,
    one_input,
)
from converter.layers.pycode import PyContext, PyResult


@dataclass(frozen=True, eq=False)
class Embedding(Op):
    op_type: ClassVar[str] = "embedding"
    input_dim: int
    output_dim: int
    mask_zero: bool
    weights: dict[str, np.ndarray] = field(repr=False)

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Embedding:
        float32_only(config, ctx)
        input_dim, output_dim = config.get("input_dim"), config.get("output_dim")
        if not (isinstance(input_dim, int) and isinstance(output_dim, int)):
            raise ctx.bad("input_dim and output_dim must be integers.")
        (table,) = expect_arrays(arrays, [(input_dim, output_dim)], ctx)
        return cls(input_dim, output_dim, flag(config, "mask_zero"), {"E": table})

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        return [(*one_input(shapes), self.output_dim)]

    def masked_input_value(self) -> float | None:
        return 0.0 if self.mask_zero else None

    def vocabulary(self) -> int | None:
        return self.input_dim

    def params(self) -> tuple[int, str]:
        total = self.input_dim * self.output_dim
        return total, f"{self.input_dim}*{self.output_dim} = {total}"

    def explained_formula(self) -> str:
        return f"input_dim {self.input_dim} x output_dim {self.output_dim} = {self.params()[0]}"

    def tensor_shapes(self) -> list[dict[str, Any]]:
        return [{"name": "E", "shape": [self.input_dim, self.output_dim], "from": "embeddings"}]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        ids = np.asarray(xs[0])
        if ids.dtype.kind == "f" and (not np.all(np.isfinite(ids)) or np.any(ids != np.round(ids))):
            raise BadInputs(f"{run.where}: the ids fed to the Embedding must be whole numbers.")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.input_dim):
            raise BadInputs(f"{run.where}: ids must lie in [0, {self.input_dim}), got {ids.min()}..{ids.max()}.")
        return [self.weights["E"][ids]], [(ids != 0) if self.mask_zero else None]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p, ids = g.b, g.p, xs[0].name
        if xs[0].type != INT64:
            ids = b.op("Cast", [ids], f"{p}/ids", to=INT64)
        out = b.op("Gather", [b.weight(f"{p}/E", self.weights["E"]), ids], f"{p}/gather", axis=0)
        if not self.mask_zero:
            return [out], [None], [FLOAT]
        is_zero = b.op("Equal", [ids, b.scalar(0, np.int64)], f"{p}/is_zero")
        return [out], [b.op("Not", [is_zero], f"{p}/mask")], [FLOAT]

    def torch_module(self, g: TorchContext) -> str | None:
        return f"nn.Embedding({self.input_dim}, {self.output_dim})"

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """Ids as int64 (nn.Embedding takes no floats); with mask_zero, id 0 masks its step."""
        lines = [f"{outs[0]} = {g.module}({xs[0]}.long())"]
        if not self.mask_zero:
            return lines, [None]
        mask = g.var("mask")
        return [*lines, f"{mask} = {xs[0]} != 0"], [mask]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        """Row k of the table for id k; with mask_zero, id 0 masks its step."""
        body = [f"E = {g.weight('E', self.weights['E'])}", "ids = np.asarray(ids).astype(np.int64)"]
        body.append(f"if ids.size and (ids.min() < 0 or ids.max() >= {self.input_dim}):")
        body.append(f'    raise ValueError(f"ids must lie in [0, {self.input_dim}), got {{ids.min()}}..{{ids.max()}}")')
        body.append("return E[ids]")
        doc = f"Embedding({self.input_dim}, {self.output_dim}): one vector per id."
        fn = g.function(g.node.name, "ids", doc, body)
        lines = [f"{outs[0]} = {fn}({xs[0]})"]
        if not self.mask_zero:
            return lines, [None]
        mask = g.var("mask")
        return [*lines, f"{mask} = np.asarray({xs[0]}) != 0  # mask_zero: id 0 is padding"], [mask]

    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        key = f"{name}.weight" if layout == "pytorch" else f"{name}/E"
        meaning = "embedding matrix (input_dim x output_dim): row k is the vector of id k"
        return [LayoutTensor(key, (self.input_dim, self.output_dim), meaning, lambda: self.weights["E"])]

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> Embedding:
        return replace(self, weights={"E": got[f"{name}.weight" if layout == "pytorch" else f"{name}/E"]})


READERS = {"Embedding": Embedding.read}
OPS = (Embedding,)
