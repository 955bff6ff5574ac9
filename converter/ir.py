"""The model description (IR): what a Keras model computes, with no trace of the file it came from.

Data flows one way: a reader (``converter.keras``) builds a ``Model``; the runtime and the exporters
only read it. A model is a DAG of ``Node``s, each one call of a layer op; the ops themselves, one module
per layer family, live in ``converter.layers`` (recurrent layers hold their weights split into named gate
tensors in the canonical Keras gate order: ``W_i W_f W_c W_o``, ``U_*``, ``b_*``). All tensors are float32.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from converter.layers.base import Op

    Layer = Op

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class TensorRef:
    """Output number ``index`` of the node called ``node`` (an input's name for model inputs)."""

    node: str
    index: int = 0


@dataclass(frozen=True)
class InputSpec:
    """A model input; ``shape`` excludes the batch axis, None marks an open (any-length) axis."""

    name: str
    shape: Shape
    dtype: str = "float32"
    batch_size: int | None = None


@dataclass(frozen=True, eq=False)
class Node:
    """One call of a Keras layer: ``inputs`` are its tensor inputs, ``initial_state`` its state inputs."""

    name: str
    keras_class: str
    layer: Op
    inputs: tuple[TensorRef, ...]
    initial_state: tuple[TensorRef, ...] = ()
    #: A mask passed explicitly (Keras 3 functional models save ``mask=`` with each call); it replaces
    #: the mask that would otherwise flow in with the input.
    mask: TensorRef | None = None
    #: A later call of a shared layer: the name of the node whose layer (and weights) this call reuses.
    weights_of: str | None = None
    #: False: the layer computes with no mask although one flows in with its input (a Keras 3 call with
    #: several tensor arguments, e.g. ``initial_state=``, and no ``mask=``; see ``converter.keras.calls``).
    #: Its outputs still carry the mask that flowed in, on the first ``layer.mask_carrying_outputs()``.
    receives_mask: bool = True


@dataclass(frozen=True, eq=False)
class Model:
    """A whole model: inputs, nodes in an order where every node follows its inputs, outputs."""

    name: str
    inputs: tuple[InputSpec, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[TensorRef, ...]
    output_names: tuple[str, ...]
    keras_version: str
    source: str

    @property
    def keras_major(self) -> int:
        return 2 if self.keras_version.startswith("2") else 3

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def recurrent_nodes(self) -> tuple[Node, ...]:
        """The nodes of layers with states (recurrent layers and Bidirectional ones)."""
        return tuple(n for n in self.nodes if n.layer.has_states)


def recurrent_directions(layer: Any) -> dict[str, Any]:
    """The directions of a recurrent layer by name: ``{"": layer}``, ``{"forward": .., "backward": ..}``, or a
    stacked RNN's cells ``{"cell_0": .., "cell_1": ..}``."""
    return layer.directions


def iter_weights(model: Model) -> list[tuple[str, np.ndarray]]:
    """Every weight tensor of a model as ``(node/tensor, array)``, Bidirectional ones under ``node/direction``."""
    return [
        (f"{node.name}/{name}", array)
        for node in model.nodes
        if node.weights_of is None  # a shared layer's weights count once
        for name, array in node.layer.weight_items()
    ]


def unique_names(names: list[str]) -> list[str]:
    """Make repeated names unique the way people expect: ``lstm, lstm_1, lstm_2``.

    >>> unique_names(["lstm", "lstm", "dense", "lstm"])
    ['lstm', 'lstm_1', 'dense', 'lstm_2']
    """
    seen: set[str] = set()
    result = []
    for name in names:
        candidate, k = name, 0
        while candidate in seen:
            k += 1
            candidate = f"{name}_{k}"
        seen.add(candidate)
        result.append(candidate)
    return result


#: The op classes by the names they had when they lived here (``ir.Recurrent``, ``ir.Dense``, ...).
_MOVED = {
    "Recurrent": "recurrent",
    "Bidirectional": "recurrent",
    "Dense": "dense",
    "Embedding": "embedding",
    "Masking": "masking",
    "Activation": "activation",
    "Concatenate": "merge",
    "Add": "merge",
    "NotEqual": "keras_ops",
    "ReduceAny": "keras_ops",
    "Identity": "identity",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(f"converter.layers.{_MOVED[name]}"), name)
    if name == "Layer":
        return importlib.import_module("converter.layers.base").Op
    raise AttributeError(f"module 'converter.ir' has no attribute {name!r}")
