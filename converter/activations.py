"""The activation table: Keras activation name (and Keras major version) -> NumPy function and ONNX op.

Keras 2 and Keras 3 disagree on ``hard_sigmoid`` (0.2x+0.5 versus x/6+0.5, both clipped to [0, 1]), so
every lookup takes the Keras major version the model file was written by.

>>> import numpy as np
>>> float(numpy_activation("hard_sigmoid", keras_major=2)(np.float64(1.0)))
0.7
>>> onnx_activation("hard_sigmoid", keras_major=3)
OnnxActivation(op='HardSigmoid', alpha=0.16666666666666666, beta=0.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Array = np.ndarray
_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


def _sigmoid(x: Array) -> Array:
    # exp(-x) overflows to inf below x = -88 (float32), which gives exactly 0: right, so the warning is
    # noise. The hot loop of every LSTM and GRU step: four cheap passes, no branch (np.where costs more).
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _softplus(x: Array) -> Array:
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)


def _elu(x: Array, alpha: float = 1.0) -> Array:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x: Array) -> Array:
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(x.dtype, copy=False)


def _softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(x: Array) -> Array:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _hard_sigmoid(alpha: float) -> Callable[[Array], Array]:
    def hard_sigmoid(x: Array) -> Array:
        return np.clip(x * np.asarray(alpha, x.dtype) + np.asarray(0.5, x.dtype), 0, 1)

    return hard_sigmoid


_COMMON: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "elu": _elu,
    "selu": lambda x: (_SELU_SCALE * _elu(x, _SELU_ALPHA)).astype(x.dtype, copy=False),
    "softplus": _softplus,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "exponential": np.exp,
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "gelu": _gelu,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "hard_silu": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hard_swish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "tanh_shrink": lambda x: x - np.tanh(x),
    "hard_tanh": lambda x: np.clip(x, -1, 1),
    "log_sigmoid": lambda x: -_softplus(-x),
    "celu": _elu,  # alpha 1: celu(x) = elu(x)
    "leaky_relu": lambda x: np.where(x > 0, x, np.asarray(0.2, x.dtype) * x),  # slope 0.2 in both versions
}

_BY_VERSION: dict[int, dict[str, Callable[[Array], Array]]] = {
    2: {"hard_sigmoid": _hard_sigmoid(0.2)},
    # Keras 3 computes relu6(x + 3) / 6; written the same way so float32 rounding matches.
    3: {"hard_sigmoid": lambda x: np.clip(x + 3, 0, 6) / 6},
}


def supported_activations(keras_major: int) -> list[str]:
    """The activation names the NumPy runtime computes for a file of this Keras major version."""
    return sorted({*_COMMON, *_BY_VERSION[keras_major]})


def canonical_name(name: str | None) -> str:
    """Keras writes ``None`` or ``"linear"`` for no activation."""
    return "linear" if name in (None, "linear", "None") else name


def numpy_activation(name: str, keras_major: int) -> Callable[[Array], Array]:
    """The NumPy function for a Keras activation name; ``KeyError`` when there is none."""
    name = canonical_name(name)
    table = _BY_VERSION[keras_major]
    return table[name] if name in table else _COMMON[name]


@dataclass(frozen=True)
class OnnxActivation:
    """An activation as the ONNX LSTM/GRU/RNN operators name it, with its alpha and beta (or None)."""

    op: str
    alpha: float | None = None
    beta: float | None = None


_ONNX: dict[str, OnnxActivation] = {
    "tanh": OnnxActivation("Tanh"),
    "sigmoid": OnnxActivation("Sigmoid"),
    "relu": OnnxActivation("Relu"),
    "linear": OnnxActivation("Affine", 1.0, 0.0),
    "elu": OnnxActivation("Elu", 1.0),
    "celu": OnnxActivation("Elu", 1.0),
    "softsign": OnnxActivation("Softsign"),
    "softplus": OnnxActivation("Softplus"),
    "leaky_relu": OnnxActivation("LeakyRelu", 0.2),
}


def onnx_activation(name: str, keras_major: int) -> OnnxActivation | None:
    """The ONNX recurrent-op activation equal to a Keras one, or None when ONNX has no exact match."""
    name = canonical_name(name)
    if name == "hard_sigmoid":
        return OnnxActivation("HardSigmoid", 0.2 if keras_major == 2 else 1.0 / 6.0, 0.5)
    return _ONNX.get(name)


#: Keras activation -> the PyTorch expression computing it exactly (``{x}`` is the input). Shared by both
#: Keras versions except hard_sigmoid (see ``torch_activation``).
_TORCH: dict[str, str] = {
    "linear": "{x}",
    "tanh": "torch.tanh({x})",
    "sigmoid": "torch.sigmoid({x})",
    "relu": "torch.relu({x})",
    "relu6": "F.relu6({x})",
    "elu": "F.elu({x})",
    "celu": "F.celu({x})",
    "selu": "F.selu({x})",
    "softplus": "F.softplus({x})",  # torch returns x itself above 20, where log1p(exp(-x)) < 3e-9
    "softsign": "F.softsign({x})",
    "exponential": "torch.exp({x})",
    "swish": "F.silu({x})",
    "silu": "F.silu({x})",
    "gelu": "F.gelu({x})",  # the exact (erf) form, Keras' default in both versions
    "mish": "F.mish({x})",
    "softmax": "torch.softmax({x}, dim=-1)",
    "log_softmax": "torch.log_softmax({x}, dim=-1)",
    "hard_silu": "F.hardswish({x})",
    "hard_swish": "F.hardswish({x})",
    "tanh_shrink": "F.tanhshrink({x})",
    "hard_tanh": "F.hardtanh({x})",
    "log_sigmoid": "F.logsigmoid({x})",
    "leaky_relu": "F.leaky_relu({x}, 0.2)",
}


def torch_activation(name: str, keras_major: int, x: str) -> str | None:
    """The PyTorch source computing a Keras activation of ``x``, or None when there is none.

    >>> torch_activation("hard_sigmoid", 2, "y"), torch_activation("hard_sigmoid", 3, "y")
    ('torch.clamp(0.2 * y + 0.5, 0, 1)', 'F.hardsigmoid(y)')
    """
    name = canonical_name(name)
    if name == "hard_sigmoid":  # Keras 3 is relu6(x + 3) / 6, which F.hardsigmoid computes
        return f"torch.clamp(0.2 * {x} + 0.5, 0, 1)" if keras_major == 2 else f"F.hardsigmoid({x})"
    template = _TORCH.get(name)
    return None if template is None else template.format(x=x)
