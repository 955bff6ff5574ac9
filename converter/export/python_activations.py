"""Keras activations as NumPy source for the standalone script: each written as ``converter.activations``
computes it (same float32 rounding), under the name the tutorials use (``sigmoid``, ``tanh`` ...).

>>> print(activation_source("hard_sigmoid", 2))
def hard_sigmoid(x):
    return np.clip(x * np.float32(0.2) + np.float32(0.5), 0, 1)
"""

from __future__ import annotations

from converter.activations import canonical_name

_SIGMOID = """def sigmoid(x):
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf below -88, which gives exactly 0
        return 1 / (1 + np.exp(-x))"""
_SOFTPLUS = """def softplus(x):
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)"""
_ELU = """def elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)"""


def _simple(name: str, expr: str) -> str:
    return f"def {name}(x):\n    return {expr}"


_SOURCES: dict[str, str] = {
    "linear": _simple("linear", "x"),
    "tanh": _simple("tanh", "np.tanh(x)"),
    "sigmoid": _SIGMOID,
    "relu": _simple("relu", "np.maximum(x, 0)"),
    "relu6": _simple("relu6", "np.clip(x, 0, 6)"),
    "elu": _ELU,
    "celu": _ELU + "\n\n\n" + _simple("celu", "elu(x)  # alpha 1: celu(x) = elu(x)"),
    "selu": _ELU
    + "\n\n\n"
    + _simple("selu", "(1.0507009873554805 * elu(x, 1.6732632423543772)).astype(x.dtype, copy=False)"),
    "softplus": _SOFTPLUS,
    "softsign": _simple("softsign", "x / (1 + np.abs(x))"),
    "exponential": _simple("exponential", "np.exp(x)"),
    "swish": _SIGMOID + "\n\n\n" + _simple("swish", "x * sigmoid(x)"),
    "silu": _SIGMOID + "\n\n\n" + _simple("silu", "x * sigmoid(x)"),
    "gelu": """def gelu(x):
    erf = np.vectorize(math.erf, otypes=[np.float64])  # the exact (erf) form, Keras' default
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype, copy=False)""",
    "mish": _SOFTPLUS + "\n\n\n" + _simple("mish", "x * np.tanh(softplus(x))"),
    "softmax": """def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)""",
    "log_softmax": """def log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))""",
    "hard_silu": _simple("hard_silu", "x * np.clip(x + 3, 0, 6) / 6"),
    "hard_swish": _simple("hard_swish", "x * np.clip(x + 3, 0, 6) / 6"),
    "tanh_shrink": _simple("tanh_shrink", "x - np.tanh(x)"),
    "hard_tanh": _simple("hard_tanh", "np.clip(x, -1, 1)"),
    "log_sigmoid": _SOFTPLUS + "\n\n\n" + _simple("log_sigmoid", "-softplus(-x)"),
    "leaky_relu": _simple("leaky_relu", "np.where(x > 0, x, np.float32(0.2) * x)  # slope 0.2"),
}

_HARD_SIGMOID = {
    2: _simple("hard_sigmoid", "np.clip(x * np.float32(0.2) + np.float32(0.5), 0, 1)"),
    # Keras 3 computes relu6(x + 3) / 6
    3: _simple("hard_sigmoid", "np.clip(x + 3, 0, 6) / 6"),
}


def activation_source(name: str, keras_major: int) -> str | None:
    """The source defining the activation (the last ``def`` is it), or None when there is none."""
    name = canonical_name(name)
    if name == "hard_sigmoid":
        return _HARD_SIGMOID[keras_major]
    return _SOURCES.get(name)
