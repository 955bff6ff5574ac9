"""ONNX forms of the non-recurrent layers, their activations, and Keras' mask rules for each of them.

Every function mirrors one in ``converter/runtime/layers.py`` (the reference for what Keras computes),
written with the same operation order where float32 rounding could otherwise differ.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper

from converter import ir
from converter.activations import _SELU_ALPHA, _SELU_SCALE, canonical_name, supported_activations
from converter.errors import UnsupportedLayer
from converter.export.onnx_builder import BOOL, FLOAT, INT64, Builder

Mask = str | None


def _clip(b: Builder, x: str, low: float, high: float, name: str) -> str:
    return b.op("Clip", [x, b.scalar(low), b.scalar(high)], name)


def _relu6_shifted(b: Builder, x: str, p: str) -> str:
    """relu6(x + 3) / 6, as Keras 3 writes hard_sigmoid (and hard_silu's factor)."""
    shifted = _clip(b, b.op("Add", [x, b.scalar(3.0)], f"{p}/plus3"), 0.0, 6.0, f"{p}/relu6")
    return b.op("Div", [shifted, b.scalar(6.0)], f"{p}/hard_sigmoid")


def activation(b: Builder, x: str, name: str, keras_major: int, p: str, where: str) -> str:
    """``x`` through the Keras activation ``name``, with exact ONNX ops; UnsupportedLayer if impossible."""
    name = canonical_name(name)
    unary = {
        "tanh": "Tanh",
        "sigmoid": "Sigmoid",
        "relu": "Relu",
        "softplus": "Softplus",
        "softsign": "Softsign",
        "exponential": "Exp",
    }
    if name == "linear":
        return x
    if name in unary:
        return b.op(unary[name], [x], f"{p}/{name}")
    if name in ("elu", "celu"):  # Keras' celu has alpha 1, where it equals elu
        return b.op("Elu", [x], f"{p}/{name}", alpha=1.0)
    if name == "selu":
        return b.op("Selu", [x], f"{p}/selu", alpha=_SELU_ALPHA, gamma=_SELU_SCALE)
    if name == "leaky_relu":  # slope 0.2 in both Keras versions
        return b.op("LeakyRelu", [x], f"{p}/leaky_relu", alpha=0.2)
    if name == "relu6":
        return _clip(b, x, 0.0, 6.0, f"{p}/relu6")
    if name == "hard_tanh":
        return _clip(b, x, -1.0, 1.0, f"{p}/hard_tanh")
    if name == "softmax":
        return b.op("Softmax", [x], f"{p}/softmax", axis=-1)
    if name == "log_softmax":
        return b.op("LogSoftmax", [x], f"{p}/log_softmax", axis=-1)
    if name in ("swish", "silu"):
        return b.op("Mul", [x, b.op("Sigmoid", [x], f"{p}/sigmoid")], f"{p}/{name}")
    if name == "gelu":  # Keras' default is the exact erf form: 0.5 * x * (1 + erf(x / sqrt(2)))
        erf = b.op("Erf", [b.op("Div", [x, b.scalar(math.sqrt(2.0))], f"{p}/scaled")], f"{p}/erf")
        half = b.op("Mul", [b.scalar(0.5), x], f"{p}/half")
        return b.op("Mul", [half, b.op("Add", [b.scalar(1.0), erf], f"{p}/one_plus_erf")], f"{p}/gelu")
    if name == "mish":
        softplus = b.op("Softplus", [x], f"{p}/softplus")
        return b.op("Mul", [x, b.op("Tanh", [softplus], f"{p}/tanh")], f"{p}/mish")
    if name in ("hard_silu", "hard_swish"):  # x * relu6(x + 3) / 6
        shifted = _clip(b, b.op("Add", [x, b.scalar(3.0)], f"{p}/plus3"), 0.0, 6.0, f"{p}/relu6")
        return b.op("Div", [b.op("Mul", [x, shifted], f"{p}/times"), b.scalar(6.0)], f"{p}/{name}")
    if name == "tanh_shrink":
        return b.op("Sub", [x, b.op("Tanh", [x], f"{p}/tanh")], f"{p}/tanh_shrink")
    if name == "log_sigmoid":  # -softplus(-x)
        softplus = b.op("Softplus", [b.op("Neg", [x], f"{p}/neg")], f"{p}/softplus")
        return b.op("Neg", [softplus], f"{p}/log_sigmoid")
    if name == "hard_sigmoid":
        if keras_major == 2:  # clip(0.2x + 0.5, 0, 1)
            return b.op("HardSigmoid", [x], f"{p}/hard_sigmoid", alpha=0.2, beta=0.5)
        return _relu6_shifted(b, x, p)
    raise UnsupportedLayer(
        f"{where}: activation '{name}' has no exact ONNX form in lstm-convert; supported: "
        f"{', '.join(supported_activations(keras_major))}."
    )


def dense(b: Builder, layer: ir.Dense, x: str, keras_major: int, p: str, where: str) -> str:
    """One MatMul over all leading axes (all time steps at once), + bias, + activation."""
    y = b.op("MatMul", [x, b.weight(f"{p}/W", layer.weights["W"])], f"{p}/matmul")
    if layer.use_bias:
        y = b.op("Add", [y, b.weight(f"{p}/b", layer.weights["b"])], f"{p}/biased")
    return activation(b, y, layer.activation, keras_major, p, where)


def embedding(b: Builder, layer: ir.Embedding, ids: str, ids_type: int, p: str) -> tuple[str, Mask]:
    if ids_type != INT64:
        ids = b.op("Cast", [ids], f"{p}/ids", to=INT64)
    out = b.op("Gather", [b.weight(f"{p}/E", layer.weights["E"]), ids], f"{p}/gather", axis=0)
    if not layer.mask_zero:
        return out, None
    return out, b.op("Not", [b.op("Equal", [ids, b.scalar(0, np.int64)], f"{p}/is_zero")], f"{p}/mask")


def reduce_any(b: Builder, x: str, axis: int, keepdims: bool, p: str) -> str:
    """``any`` of a boolean tensor along ``axis``: max of its 0/1 float form."""
    as_float = b.op("Cast", [x], f"{p}/as_float", to=FLOAT)
    return b.op("Cast", [b.reduce_max(as_float, [axis], keepdims, f"{p}/max")], f"{p}/any", to=BOOL)


def not_equal(b: Builder, x: str, x_type: int, value: float, p: str) -> str:
    const = b.scalar(value, np.float32 if x_type == FLOAT else np.int64)
    return b.op("Not", [b.op("Equal", [x, const], f"{p}/equal")], f"{p}/not_equal")


def masking(b: Builder, layer: ir.Masking, x: str, p: str) -> tuple[str, str]:
    """Keep a step where any feature differs from mask_value; masked steps' features become zero."""
    keep = reduce_any(b, not_equal(b, x, FLOAT, layer.mask_value, p), -1, False, p)
    factor = b.op("Cast", [b.unsqueeze(keep, [-1], f"{p}/keep")], f"{p}/factor", to=FLOAT)
    return b.op("Mul", [x, factor], f"{p}/masked"), keep


def add(b: Builder, xs: list[str], masks: list[Mask], keras_major: int, p: str) -> tuple[str, Mask]:
    out = xs[0]
    for k, x in enumerate(xs[1:]):  # pairwise, in order, like the runtime
        out = b.op("Add", [out, x], f"{p}/add_{k}" if len(xs) > 2 else f"{p}/add")
    present = [m for m in masks if m is not None]
    if not present or (keras_major == 3 and len(present) < len(masks)):
        return out, None
    return out, _combine(b, present, keras_major, p)


def _combine(b: Builder, masks: list[str], keras_major: int, p: str) -> str:
    """Keras 2 keeps a step only where every mask keeps it; Keras 3 where any does."""
    combined = masks[0]
    for m in masks[1:]:
        combined = b.op("And" if keras_major == 2 else "Or", [combined, m], f"{p}/mask")
    return combined


def concatenate(
    b: Builder, layer: ir.Concatenate, xs: list[str], masks: list[Mask], ranks: list[int], keras_major: int, p: str
) -> tuple[str, Mask]:
    """Concat, and the runtime's mask rule: masks broadcast over features, then all (K2) / any (K3) per step."""
    out = b.op("Concat", xs, f"{p}/concat", axis=layer.axis)
    if all(m is None for m in masks):
        return out, None
    rank = ranks[0]
    axis = layer.axis % rank
    if axis == rank - 1:  # concatenating features: one step's mask combines the inputs' masks
        present = [m for m in masks if m is not None]
        if keras_major == 3 and len(present) < len(masks):
            return out, None  # an input without mask keeps every step: any() is all true, like no mask
        return out, _combine(b, present, keras_major, p)
    full = []
    for k, (x, m) in enumerate(zip(xs, masks, strict=True)):
        if m is None:  # all true, shaped like x without its feature axis
            shape = b.slice(b.op("Shape", [x], f"{p}/shape_{k}"), [0], [-1], [0], f"{p}/mask_shape_{k}")
            m = b.op("ConstantOfShape", [shape], f"{p}/all_{k}", value=helper.make_tensor("value", BOOL, [1], [True]))
        full.append(m)
    return out, b.op("Concat", full, f"{p}/mask", axis=axis)
