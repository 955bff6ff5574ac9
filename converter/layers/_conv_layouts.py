"""The npz/JSON tensors of a convolution op in each layout (a mixin of ``conv.Conv``, kept apart for size).

- keras: Keras' own kernels, ``kernel`` (*k, in/groups, filters), ``depthwise_kernel`` (*k, in, multiplier),
  ``pointwise_kernel`` (1.., in*multiplier, filters), ``bias``;
- onnx: what ONNX ``Conv`` takes, ``W`` (out, in/groups, *k) and ``B`` (a separable one: ``pointwise/W`` too);
- pytorch: the state dict of ``nn.Conv1d``/``nn.Conv2d`` (a separable one: ``depthwise.`` and ``pointwise.``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from converter.layers.base import LAYOUT_SEP, Array, LayoutTensor

Row = tuple[str, tuple[int, ...], str, Any, Any]


class ConvLayouts:
    """Layout methods of ``Conv``; they read the op's fields (``kind``, ``rank``, ``weights`` ...)."""

    kind: str
    rank: int
    in_channels: int
    filters: int
    kernel_size: tuple[int, ...]
    dilation_rate: tuple[int, ...]
    padding: str
    groups: int
    depth_multiplier: int
    use_bias: bool
    weights: dict[str, np.ndarray]
    conv_groups: int

    def _grouped(self) -> tuple[Array, int]:
        raise NotImplementedError

    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        return [
            LayoutTensor(key, shape, meaning, build) for key, shape, meaning, build, _back in self._layout(name, layout)
        ]

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> Any:
        weights = {}
        for key, _, _, _, back in self._layout(name, layout):
            weights.update(back(got[key]))
        return replace(self, weights=weights)  # type: ignore[type-var]

    def _layout(self, name: str, layout: str) -> list[Row]:
        """(key, shape, meaning, build, back) of each tensor; ``back`` maps a file's array to op weights."""
        if layout == "keras":
            return self._keras_layout(name)
        r, torch, sep = self.rank, layout == "pytorch", LAYOUT_SEP[layout]
        to_onnx, from_onnx = (r + 1, r, *range(r)), (*range(2, r + 2), 1, 0)
        inner, groups = self.in_channels * self.depth_multiplier, self.conv_groups
        module = "nn.Conv1d" if r == 1 else "nn.Conv2d"
        what = f"{module} weight" if torch else "ONNX Conv W"
        if self.kind == "separable":
            first = f"{name}{sep}depthwise{sep}weight" if torch else f"{name}/W"
        else:
            first = f"{name}.weight" if torch else f"{name}/W"
        rows = [
            (
                first,
                (self.filters if self.kind == "conv" else inner, self.in_channels // groups, *self.kernel_size),
                f"{what} (out, in/groups, *kernel_size), groups={groups}{self._padding_note(layout)}",
                lambda: np.transpose(self._grouped()[0], to_onnx),
                lambda a: self._from_grouped(np.transpose(a, from_onnx)),
            )
        ]
        if self.kind == "separable":
            rows.append(
                (
                    f"{name}{sep}pointwise{sep}weight" if torch else f"{name}/pointwise/W",
                    (self.filters, inner, *(1,) * r),
                    f"pointwise {what} (filters, in*depth_multiplier, 1)",
                    lambda: np.transpose(self.weights["pointwise_kernel"], to_onnx),
                    lambda a: {"pointwise_kernel": np.ascontiguousarray(np.transpose(a, from_onnx))},
                )
            )
        if self.use_bias:
            key = f"{name}.pointwise.bias" if torch and self.kind == "separable" else f"{name}{sep}bias"
            rows.append((key if torch else f"{name}/B", (self.filters,), "bias (out)", self._bias, _as("bias")))
        return rows

    def _keras_layout(self, name: str) -> list[Row]:
        k = self.kernel_size
        if self.kind == "conv":
            shape = (*k, self.in_channels // self.groups, self.filters)
            rows = [(f"{name}/kernel", shape, "kernel (*kernel_size, in/groups, filters) as Keras stores it")]
        else:
            meaning = "depthwise kernel (*kernel_size, in, depth_multiplier): output c*m + j reads input channel c"
            rows = [(f"{name}/depthwise_kernel", (*k, self.in_channels, self.depth_multiplier), meaning)]
        if self.kind == "separable":
            shape = (*(1,) * self.rank, self.in_channels * self.depth_multiplier, self.filters)
            rows.append((f"{name}/pointwise_kernel", shape, "pointwise kernel (1, in*depth_multiplier, filters)"))
        if self.use_bias:
            rows.append((f"{name}/bias", (self.filters,), "bias (filters)"))
        result = []
        for key, shape, meaning in rows:
            weight = key.rsplit("/", 1)[1]
            result.append((key, shape, meaning, lambda w=weight: self.weights[w], _as(weight)))
        return result

    def _bias(self) -> Array:
        return self.weights["bias"]

    def _from_grouped(self, kernel: Array) -> dict[str, Array]:
        if self.kind == "conv":
            return {"kernel": np.ascontiguousarray(kernel)}
        depth = kernel.reshape(*self.kernel_size, self.in_channels, self.depth_multiplier)
        return {"depthwise_kernel": np.ascontiguousarray(depth)}

    def _padding_note(self, layout: str) -> str:
        if layout != "pytorch" or self.padding == "valid":
            return ""
        return (
            f"; Keras pads {self.padding!r} (causal: {self._causal_pad()} steps at the start; same: TF's split, the "
            "odd step at the end), which nn.Conv pads cannot always express: pad the input yourself"
        )

    def _causal_pad(self) -> int:
        return (self.kernel_size[0] - 1) * self.dilation_rate[0]


def _as(weight: str) -> Any:
    return lambda a: {weight: a}
