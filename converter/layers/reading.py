"""Reading a layer from its Keras config and weight arrays: the context a reader gets and the checks every
reader shares (dtype policy, activations, weight shapes and finiteness, options). Part of the ``Op``
interface of ``converter.layers.base``, which re-exports all of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter.activations import canonical_name, supported_activations
from converter.errors import BadModelFile, UnsupportedLayer

NamedArray = tuple[str, np.ndarray]


@dataclass
class ReadContext:
    """What a reader needs besides the layer's own config and weights."""

    path: Path
    name: str
    class_name: str
    keras_major: int
    constants: list[Any] = field(default_factory=list)  # non-tensor positional call arguments (op layers)
    allow_nonfinite: bool = False
    #: Non-tensor keyword arguments of the call (``use_causal_mask``, ``return_attention_scores``, ...).
    call_options: dict[str, Any] = field(default_factory=dict)
    #: For a layer that declares ``CALL_TENSORS``: which of its tensor arguments the inputs are, in order.
    call_inputs: tuple[str, ...] = ()

    def where(self) -> str:
        return f"{self.path}: layer '{self.name}' ({self.class_name})"

    def unsupported(self, what: str) -> UnsupportedLayer:
        return UnsupportedLayer(f"{self.where()}: {what}")

    def bad(self, what: str) -> BadModelFile:
        return BadModelFile(f"{self.where()}: {what}")

    def inner(self, suffix: str, class_name: str) -> ReadContext:
        """The context of a wrapped layer (``bidirectional/forward``)."""
        return ReadContext(self.path, f"{self.name}/{suffix}", class_name, self.keras_major, [], self.allow_nonfinite)


def float32_only(config: Mapping[str, Any], ctx: ReadContext) -> None:
    dtype = config.get("dtype")
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if name not in (None, "float32"):
        raise ctx.unsupported(f"dtype policy {name!r} is not supported; only float32 models convert exactly.")


def read_activation(config: Mapping[str, Any], key: str, default: str, ctx: ReadContext) -> str:
    """A built-in activation option by its canonical name; a custom object is refused, never loaded."""
    value = config.get(key, default)
    if isinstance(value, dict):  # Keras 3 may serialise a built-in activation as an object
        inner = value.get("config")
        if value.get("module") == "keras.activations" and isinstance(inner, str):
            value = inner
        else:
            raise ctx.unsupported(f"{key} is a custom object ({value.get('class_name')}); use a built-in activation.")
    name = canonical_name(value)
    choices = supported_activations(ctx.keras_major)
    if name not in choices:
        raise ctx.unsupported(f"{key} {name!r} is not supported; supported: {', '.join(choices)}.")
    return name


def all_finite(array: np.ndarray, chunk: int = 1 << 22) -> bool:
    """No NaN or Inf in ``array``, checked a chunk at a time: ``np.isfinite`` of a whole 1 GB kernel would
    allocate a 256 MB temporary.

    >>> all_finite(np.array([1.0, np.inf])), all_finite(np.ones(10), chunk=3)
    (False, True)
    """
    flat = array.reshape(-1)
    return all(bool(np.isfinite(flat[i : i + chunk]).all()) for i in range(0, flat.size, chunk))


def expect_arrays(arrays: list[NamedArray], shapes: list[tuple[int, ...]], ctx: ReadContext) -> list[np.ndarray]:
    """The layer's weight arrays, checked against the shapes its config implies, as float32."""
    if len(arrays) != len(shapes):
        raise ctx.bad(
            f"the file holds {len(arrays)} weight arrays for it, but its config needs {len(shapes)} "
            f"(shapes {', '.join(str(s) for s in shapes)}); the file does not match its config."
        )
    result = []
    for (name, array), shape in zip(arrays, shapes, strict=True):
        if tuple(array.shape) != tuple(shape):
            raise ctx.bad(f"weight {name} has shape {tuple(array.shape)}, but the config needs {tuple(shape)}.")
        if not ctx.allow_nonfinite and not all_finite(array):
            raise ctx.bad(f"weight {name} holds NaN or Inf values; pass --allow-nonfinite to convert it anyway.")
        result.append(np.ascontiguousarray(array, dtype=np.float32))
    return result


def no_weights(arrays: list[NamedArray], ctx: ReadContext) -> None:
    if arrays:
        raise ctx.bad(f"the file holds {len(arrays)} weight arrays for a layer that has none.")


def inner_layer(entry: Any, ctx: ReadContext, allowed: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """The class and config of a wrapped layer (Bidirectional, TimeDistributed), if it is one of ``allowed``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise ctx.bad("its wrapped layer config is missing.")
    class_name = entry.get("class_name")
    if class_name not in allowed or entry.get("registered_name") not in (None, class_name):
        raise ctx.unsupported(f"wrapping {class_name!r} is not supported; it can wrap: {', '.join(allowed)}.")
    return str(class_name), entry["config"]


def flag(config: Mapping[str, Any], key: str, default: bool = False) -> bool:
    return bool(config.get(key, default))


def int_option(config: Mapping[str, Any], key: str, ctx: ReadContext, default: Any = None, low: int = 1) -> int:
    """A whole-number option of at least ``low`` (Keras 2 writes some as one-element lists)."""
    value = config.get(key, default)
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ctx.bad(f"{key} is {value!r}, not a whole number >= {low}.")
    return value
