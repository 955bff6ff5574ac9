"""Keras activations as exact ONNX ops, shared by every layer that applies one (Dense, Activation, ...).

Each mirrors ``converter.activations.numpy_activation`` (the reference for what Keras computes), written
with the same operation order where float32 rounding could otherwise differ.
"""

from __future__ import annotations

import math

from converter.activations import _SELU_ALPHA, _SELU_SCALE, canonical_name, supported_activations
from converter.errors import UnsupportedLayer
from converter.export.onnx_builder import Builder


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
