"""``Dense`` (and ``TimeDistributed(Dense)``): ``y = activation(x @ W + b)`` on the last axis.

A Dense on a sequence applies to every step at once, which is exactly what Keras' TimeDistributed(Dense)
computes, so both are one op (``time_distributed`` only records the wrapper). The mask passes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from converter.activations import numpy_activation
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
    known,
    one_input,
    read_activation,
    torch_activated,
)
from converter.layers.pycode import PyContext, PyResult


@dataclass(frozen=True, eq=False)
class Dense(Op):
    """Dense on the last axis; ``time_distributed`` only records that Keras wrapped it."""

    op_type: ClassVar[str] = "dense"
    units: int
    activation: str
    use_bias: bool
    weights: dict[str, np.ndarray] = field(repr=False)
    time_distributed: bool = False

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Dense:
        float32_only(config, ctx)
        if config.get("lora_rank"):
            raise ctx.unsupported("LoRA-enabled Dense layers are not supported; merge the LoRA weights first.")
        units = config.get("units")
        if not isinstance(units, int) or units <= 0:
            raise ctx.bad(f"units is {units!r}, not a positive integer.")
        use_bias = flag(config, "use_bias", True)
        if not arrays or arrays[0][1].ndim != 2:
            raise ctx.bad("the file holds no kernel for it.")
        shapes: list[tuple[int, ...]] = [(int(arrays[0][1].shape[0]), units)] + ([(units,)] if use_bias else [])
        kernel, *bias = expect_arrays(arrays, shapes, ctx)
        weights = {"W": kernel, **({"b": bias[0]} if use_bias else {})}
        return cls(units, read_activation(config, "activation", "linear", ctx), use_bias, weights)

    @property
    def fan_in(self) -> int:
        return int(self.weights["W"].shape[0])

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        if not shape or (known(shape[-1]) and shape[-1] != self.fan_in):
            raise ShapeMismatch(f"its kernel expects {self.fan_in} features but it is fed shape {shape}")
        return [(*shape[:-1], self.units)]

    def params(self) -> tuple[int, str]:
        total = self.fan_in * self.units + (self.units if self.use_bias else 0)
        expr = f"{self.fan_in}*{self.units}" + (f" + {self.units}" if self.use_bias else "")
        return total, f"{expr} = {total}"

    def explained_formula(self) -> str:
        bias = f" + bias {self.units}" if self.use_bias else ""
        return f"input {self.fan_in} x units {self.units}{bias} = {self.params()[0]}"

    def tensor_shapes(self) -> list[dict[str, Any]]:
        found = {"W": "kernel", "b": "bias"}
        return [{"name": k, "shape": list(a.shape), "from": found[k]} for k, a in self.weights.items()]

    def options(self) -> dict[str, Any]:
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias}

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        y = xs[0].astype(np.float32, copy=False) @ self.weights["W"]
        if self.use_bias:
            y = y + self.weights["b"]
        return [numpy_activation(self.activation, run.keras_major)(y).astype(np.float32, copy=False)], [masks[0]]

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        """One MatMul over all leading axes (all time steps at once), + bias, + activation."""
        from converter.export.onnx_activation import activation

        b, p = g.b, g.p
        y = b.op("MatMul", [g.as_float(xs[0]), b.weight(f"{p}/W", self.weights["W"])], f"{p}/matmul")
        if self.use_bias:
            y = b.op("Add", [y, b.weight(f"{p}/b", self.weights["b"])], f"{p}/biased")
        return [activation(b, y, self.activation, g.keras_major, p, g.where)], [masks[0]], [1]

    def torch_module(self, g: TorchContext) -> str | None:
        return f"nn.Linear({self.fan_in}, {self.units}{'' if self.use_bias else ', bias=False'})"

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """nn.Linear works on the last axis of any tensor: TimeDistributed(Dense) is the same call."""
        return [f"{outs[0]} = {torch_activated(g, self.activation, f'{g.module}({xs[0]})')}"], [masks[0]]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        """``activation(x @ W + b)`` on the last axis: TimeDistributed(Dense) is the same function."""
        w = g.weight("W", self.weights["W"])
        body = [f"W = {w}"]
        if self.use_bias:
            body.append(f"b = {g.weight('b', self.weights['b'])}")
        body.append(f"return {g.apply(self.activation, 'x @ W' + (' + b' if self.use_bias else ''))}")
        wrapped = "TimeDistributed(Dense)" if self.time_distributed else "Dense"
        fn = g.function(g.node.name, "x", f"{wrapped}({self.units}, activation={self.activation!r}).", body)
        return [f"{outs[0]} = {fn}({xs[0]})"], [masks[0]]

    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        w = self.weights["W"]
        if layout == "pytorch":
            kernel = LayoutTensor(
                f"{name}.weight", w.shape[::-1], "nn.Linear weight (out x in): kernel transposed", lambda: w.T
            )
        else:
            kernel = LayoutTensor(f"{name}/W", w.shape, "kernel (in x out): y = activation(x @ W + b)", lambda: w)
        if not self.use_bias:
            return [kernel]
        bias_key = f"{name}{LAYOUT_SEP[layout]}{'bias' if layout == 'pytorch' else 'b'}"
        return [kernel, LayoutTensor(bias_key, (self.units,), "bias (out)", lambda: self.weights["b"])]

    def expected_layout_tensors(self, name: str, layout: str, arrays: Mapping[str, Array]) -> list[LayoutTensor]:
        # The op keeps no input size apart from its kernel: take it from the kernel in the file.
        key = f"{name}.weight" if layout == "pytorch" else f"{name}/W"
        shape = np.shape(arrays[key]) if key in arrays else ()
        fan_in = (shape[-1] if layout == "pytorch" else shape[0]) if len(shape) == 2 else 0
        shell = replace(self, weights={"W": np.broadcast_to(np.float32(0), (fan_in, self.units))})
        return shell.layout_tensors(name, layout)

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> Dense:
        sep, torch = LAYOUT_SEP[layout], layout == "pytorch"
        w = got[f"{name}{sep}{'weight' if torch else 'W'}"]
        weights = {"W": np.ascontiguousarray(w.T) if torch else w}
        if self.use_bias:
            weights["b"] = got[f"{name}{sep}{'bias' if torch else 'b'}"]
        return replace(self, weights=weights)


READERS = {"Dense": Dense.read}  # TimeDistributed(Dense): see time_distributed.py
OPS = (Dense,)
