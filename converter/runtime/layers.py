"""NumPy forward passes of the non-recurrent layers and Keras' mask rules for each of them."""

from __future__ import annotations

import numpy as np

from converter import ir
from converter.activations import numpy_activation
from converter.errors import BadInputs

Array = np.ndarray
Mask = Array | None


def dense(layer: ir.Dense, x: Array, keras_major: int) -> Array:
    y = x.astype(np.float32, copy=False) @ layer.weights["W"]
    if layer.use_bias:
        y = y + layer.weights["b"]
    return numpy_activation(layer.activation, keras_major)(y).astype(np.float32, copy=False)


def embedding(layer: ir.Embedding, x: Array, where: str) -> tuple[Array, Mask]:
    ids = np.asarray(x)
    if ids.dtype.kind == "f" and (not np.all(np.isfinite(ids)) or np.any(ids != np.round(ids))):
        raise BadInputs(f"{where}: the ids fed to the Embedding must be whole numbers.")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= layer.input_dim):
        raise BadInputs(f"{where}: ids must lie in [0, {layer.input_dim}), got {ids.min()}..{ids.max()}.")
    return layer.weights["E"][ids], (ids != 0) if layer.mask_zero else None


def masking(layer: ir.Masking, x: Array) -> tuple[Array, Mask]:
    keep = np.any(x != np.float32(layer.mask_value), axis=-1)
    return (x * keep[..., None]).astype(np.float32, copy=False), keep


def _full_mask(x: Array, mask: Mask) -> Array:
    if mask is None:
        return np.ones(x.shape, bool)
    return np.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)


def concatenate(layer: ir.Concatenate, xs: list[Array], masks: list[Mask], keras_major: int) -> tuple[Array, Mask]:
    out = np.concatenate(xs, axis=layer.axis)
    if all(m is None for m in masks):
        return out, None
    full = np.concatenate([_full_mask(x, m) for x, m in zip(xs, masks, strict=True)], axis=layer.axis)
    # Keras 2 keeps a step only where every input keeps it; Keras 3 where any input does.
    return out, (full.all(axis=-1) if keras_major == 2 else full.any(axis=-1))


def add(xs: list[Array], masks: list[Mask], keras_major: int) -> tuple[Array, Mask]:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    present = [m for m in masks if m is not None]
    if not present or (keras_major == 3 and len(present) < len(masks)):
        return out, None
    combined = present[0]
    for m in present[1:]:
        combined = (combined & m) if keras_major == 2 else (combined | m)
    return out, combined
