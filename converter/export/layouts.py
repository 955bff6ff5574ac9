"""Tensor layouts: a model's weights as the named arrays Keras, ONNX or PyTorch use, and back to the IR.

- ``keras``: the IR's gate tensors, ``lstm/W_i`` (input_dim, units), ``bidirectional/forward/U_f``, ``dense/W``.
- ``onnx``: the ONNX LSTM/GRU/RNN operator inputs ``lstm/W`` (D, G*H, in), ``lstm/R`` (D, G*H, H) and
  ``lstm/B`` (D, 2*G*H) = [Wb, Rb], direction axis first; Dense ``dense/W`` (in, out), ``dense/b``.
- ``pytorch``: ``lstm.weight_ih_l0`` ... (``_reverse`` for a backward direction), ``dense.weight`` (out, in),
  so that ``nn.LSTM``/``nn.GRU``/``nn.RNN``/``nn.Linear`` load them once the ``lstm.`` prefix is stripped.

Each layer op says what its tensors are in each layout (``Op.layout_tensors``); this module walks the model.
Arrays are built lazily (``Tensor.array()``) so a writer holds one converted tensor at a time.

>>> import converter
>>> model = converter.load("fixtures/keras3/tutorial.keras").ir
>>> {key: array.shape for key, array in to_layout(model, "onnx").items()}
{'lstm/W': (1, 20, 3), 'lstm/R': (1, 20, 5), 'lstm/B': (1, 40), 'dense/W': (5, 1), 'dense/b': (1,)}
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from converter import ir
from converter.errors import BadModelFile, UnsupportedLayer
from converter.layers.base import LayoutTensor as Tensor

Array = np.ndarray
LAYOUTS = ("keras", "onnx", "pytorch")


def to_layout(model: ir.Model, layout: str) -> dict[str, Array]:
    """Every weight of ``model`` as named float32 arrays of ``layout`` (see the module docstring)."""
    return {t.key: t.array() for tensors in model_tensors(model, layout).values() for t in tensors}


def model_tensors(model: ir.Model, layout: str) -> dict[str, list[Tensor]]:
    """The tensors of each node, by node name; raises ``UnsupportedLayer`` before anything is built."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    for node in model.nodes:
        check_supported(node, layout)
    result, seen = {}, set()
    for node in model.nodes:
        result[node.name] = node_tensors(node, layout)
        for t in result[node.name]:
            if t.key in seen:  # only possible with odd layer names such as "a/forward"
                raise UnsupportedLayer(f"layer '{node.name}': two tensors would be named '{t.key}'; rename it.")
            seen.add(t.key)
    return result


def check_supported(node: ir.Node, layout: str) -> None:
    """Refuse a layer the layout cannot hold exactly (PyTorch computes fewer variants than Keras)."""
    node.layer.check_layout(node, layout)


def node_tensors(node: ir.Node, layout: str) -> list[Tensor]:
    """The tensors ``node`` owns in ``layout`` (none for layers without weights, nor for a later call of a
    shared layer: the first call owns them)."""
    return [] if node.weights_of else node.layer.layout_tensors(node.name, layout)


# --- back to the IR -------------------------------------------------------------------------------------


def load_layer(node: ir.Node, layout: str, arrays: Mapping[str, Array], where: str) -> ir.Layer:
    """``node.layer`` (weights empty) with its weights read from ``arrays`` in ``layout``; shapes checked first.

    >>> from dataclasses import replace
    >>> import converter
    >>> model = converter.load("fixtures/keras3/tutorial.keras").ir
    >>> node = model.node("lstm")
    >>> bare = replace(node, layer=replace(node.layer, weights={}))
    >>> rebuilt = load_layer(bare, "pytorch", to_layout(model, "pytorch"), "example")
    >>> bool((rebuilt.weights["W_f"] == node.layer.weights["W_f"]).all())
    True
    """
    if not expected_tensors(node, layout, arrays):
        return node.layer
    if layout != "keras":  # only a hand-made file can get here with a layer the layout cannot hold
        try:
            check_supported(node, layout)
        except UnsupportedLayer as e:
            raise BadModelFile(f"{where}: {e}") from e
    return node.layer.from_layout(node.name, layout, _fetch(node, layout, arrays, where))


def expected_tensors(node: ir.Node, layout: str, arrays: Mapping[str, Array]) -> list[Tensor]:
    """The keys and shapes ``node`` (weights empty) needs in ``layout``; a Dense's input size comes from ``arrays``."""
    return [] if node.weights_of else node.layer.expected_layout_tensors(node.name, layout, arrays)


def _fetch(node: ir.Node, layout: str, arrays: Mapping[str, Array], where: str) -> dict[str, Array]:
    got = {}
    for t in expected_tensors(node, layout, arrays):
        if t.key not in arrays:
            raise BadModelFile(f"{where}: tensor '{t.key}' of layer '{node.name}' is missing.")
        array = np.asarray(arrays[t.key])  # read once: an NpzFile re-reads on every access
        if array.shape != t.shape:
            raise BadModelFile(
                f"{where}: tensor '{t.key}' has shape {array.shape}; layer '{node.name}' needs {t.shape}."
            )
        if array.dtype != np.float32:
            raise BadModelFile(f"{where}: tensor '{t.key}' is {array.dtype}; lstm-convert files hold float32 weights.")
        got[t.key] = array
    return got
