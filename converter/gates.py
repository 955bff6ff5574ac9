"""The one table of gate orders per framework, and the helpers that split and join gate blocks.

Keras, ONNX and PyTorch stack the gates of a recurrent layer along one axis of a single matrix, each in
its own order. lstm-convert keeps every recurrent layer's weights split into named gates in the
canonical (Keras, tutorial) order, and converts to another framework's order only through this table.

>>> GATE_ORDER["onnx"]["lstm"]
('i', 'o', 'f', 'c')
>>> import numpy as np
>>> w = np.arange(8.0).reshape(1, 8)
>>> parts = split_gates(w, ("i", "f", "c", "o"), axis=1)
>>> join_gates(parts, ("i", "o", "f", "c"), axis=1).tolist()
[[0.0, 1.0, 6.0, 7.0, 2.0, 3.0, 4.0, 5.0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Gate names in the canonical order: the order Keras stacks them in.
CANONICAL: dict[str, tuple[str, ...]] = {
    "lstm": ("i", "f", "c", "o"),
    "gru": ("z", "r", "h"),
    "simple_rnn": ("",),
}

#: Gate order of each framework, by layer kind. PyTorch calls the LSTM candidate "g" and the GRU
#: candidate "n"; the letters here are the canonical names, so one order can be mapped to another.
GATE_ORDER: dict[str, dict[str, tuple[str, ...]]] = {
    "keras": CANONICAL,
    "onnx": {"lstm": ("i", "o", "f", "c"), "gru": ("z", "r", "h"), "simple_rnn": ("",)},
    "pytorch": {"lstm": ("i", "f", "c", "o"), "gru": ("r", "z", "h"), "simple_rnn": ("",)},
}

#: A peephole LSTM's diagonal weights, one per gate its cell state feeds: Keras (PeepholeLSTMCell) creates
#: them for the input, forget and output gates in that order; ONNX LSTM's input P stacks them as i, o, f.
PEEPHOLE_ORDER: dict[str, tuple[str, ...]] = {"keras": ("i", "f", "o"), "onnx": ("i", "o", "f")}


def split_gates(matrix: np.ndarray, order: Sequence[str], axis: int) -> dict[str, np.ndarray]:
    """Split ``matrix`` into equal blocks along ``axis``, named by ``order``."""
    blocks = np.split(matrix, len(order), axis=axis)
    return dict(zip(order, blocks, strict=True))


def join_gates(gates: Mapping[str, np.ndarray], order: Sequence[str], axis: int) -> np.ndarray:
    """Concatenate the named gate blocks along ``axis`` in the given order (treat the result as read-only).

    When the blocks are still the adjacent views ``split_gates`` made of one array, in that array's order,
    that array is returned instead of a copy: a 1 GB kernel then stays one copy in memory.
    """
    blocks = [gates[name] for name in order]
    whole = _covering_base(blocks, axis)
    return whole if whole is not None else np.concatenate(blocks, axis=axis)


def _covering_base(blocks: list[np.ndarray], axis: int) -> np.ndarray | None:
    """The array the blocks are consecutive views of along ``axis``, if they cover exactly all of it."""
    base = blocks[0].base
    if base is None or base.ndim != blocks[0].ndim or base.dtype != blocks[0].dtype:
        return None
    if any(b.base is not base or b.dtype != base.dtype for b in blocks):
        return None
    shape = list(blocks[0].shape)
    shape[axis] = sum(b.shape[axis] for b in blocks)
    if tuple(shape) != base.shape:
        return None
    address, offset = base.__array_interface__["data"][0], 0
    for block in blocks:
        if block.strides != base.strides or block.__array_interface__["data"][0] != address + offset:
            return None
        offset += block.shape[axis] * base.strides[axis]
    return base


def gate_tensor_name(prefix: str, gate: str) -> str:
    """``W`` + ``i`` -> ``W_i``; SimpleRNN has one unnamed gate, so ``W`` + ``""`` -> ``W``."""
    return f"{prefix}_{gate}" if gate else prefix
