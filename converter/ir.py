"""The model description (IR): what a Keras model computes, with no trace of the file it came from.

Data flows one way: a reader (``converter.keras``) builds a ``Model``; the runtime and the exporters
only read it. Recurrent layers hold their weights split into named gate tensors in the canonical
(Keras) gate order of ``converter.gates``, with the names from the tutorials:

- LSTM: ``W_i W_f W_c W_o`` (input_dim, units), ``U_*`` (units, units), ``b_*`` (units,)
- GRU: ``W_z W_r W_h``, ``U_*``, ``b_*`` and, with reset_after, recurrent biases ``rb_z rb_r rb_h``
- SimpleRNN: ``W``, ``U``, ``b``; Dense: ``W`` (in, out), ``b``; Embedding: ``E`` (vocab, dim)

Bias tensors are absent when ``use_bias`` is false. All tensors are float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from converter.gates import CANONICAL, gate_tensor_name

RecurrentKind = Literal["lstm", "gru", "simple_rnn"]
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
class Recurrent:
    """An LSTM, GRU or SimpleRNN layer (also each direction of a Bidirectional one)."""

    kind: RecurrentKind
    units: int
    input_dim: int
    activation: str
    recurrent_activation: str | None
    use_bias: bool
    return_sequences: bool
    return_state: bool
    go_backwards: bool
    stateful: bool
    reset_after: bool
    #: Masked steps output zeros instead of repeating the last output (Keras forces this inside
    #: Bidirectional when return_sequences is true).
    zero_output_for_mask: bool
    weights: dict[str, np.ndarray] = field(repr=False)

    @property
    def gates(self) -> tuple[str, ...]:
        return CANONICAL[self.kind]

    @property
    def state_names(self) -> tuple[str, ...]:
        """The recurrent states in Keras' order: LSTM has h and c, GRU and SimpleRNN only h."""
        return ("h", "c") if self.kind == "lstm" else ("h",)

    def tensor(self, prefix: str, gate: str) -> np.ndarray:
        return self.weights[gate_tensor_name(prefix, gate)]


@dataclass(frozen=True, eq=False)
class Bidirectional:
    forward: Recurrent
    backward: Recurrent
    merge_mode: Literal["concat", "sum", "ave", "mul"] | None

    @property
    def return_sequences(self) -> bool:
        return self.forward.return_sequences

    @property
    def return_state(self) -> bool:
        return self.forward.return_state


@dataclass(frozen=True, eq=False)
class Dense:
    """Dense on the last axis; ``time_distributed`` only records that Keras wrapped it."""

    units: int
    activation: str
    use_bias: bool
    weights: dict[str, np.ndarray] = field(repr=False)
    time_distributed: bool = False


@dataclass(frozen=True, eq=False)
class Embedding:
    input_dim: int
    output_dim: int
    mask_zero: bool
    weights: dict[str, np.ndarray] = field(repr=False)


@dataclass(frozen=True)
class Masking:
    mask_value: float


@dataclass(frozen=True)
class Activation:
    activation: str


@dataclass(frozen=True)
class Concatenate:
    axis: int


@dataclass(frozen=True)
class Add:
    pass


@dataclass(frozen=True)
class NotEqual:
    """Keras 3 op layer ``x != value`` (elementwise, boolean); functional models save masks with it."""

    value: float


@dataclass(frozen=True)
class ReduceAny:
    """Keras 3 op layer ``any(x, axis)`` over a boolean tensor."""

    axis: int
    keepdims: bool


@dataclass(frozen=True)
class Identity:
    """A layer that is the identity at inference (Dropout, GaussianNoise, ...)."""


Layer = (
    Recurrent
    | Bidirectional
    | Dense
    | Embedding
    | Masking
    | Activation
    | Concatenate
    | Add
    | NotEqual
    | ReduceAny
    | Identity
)


@dataclass(frozen=True, eq=False)
class Node:
    """One call of a Keras layer: ``inputs`` are its tensor inputs, ``initial_state`` its state inputs."""

    name: str
    keras_class: str
    layer: Layer
    inputs: tuple[TensorRef, ...]
    initial_state: tuple[TensorRef, ...] = ()
    #: A mask passed explicitly (Keras 3 functional models save ``mask=`` with each call); it replaces
    #: the mask that would otherwise flow in with the input.
    mask: TensorRef | None = None
    #: False: the layer computes with no mask although one flows in with its input (a Keras 3 call with
    #: several tensor arguments, e.g. ``initial_state=``, and no ``mask=``; see ``converter.keras.config``).
    #: Its outputs still carry the mask that flowed in, on the first ``mask_carrying_outputs`` of them.
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
        return tuple(n for n in self.nodes if isinstance(n.layer, Recurrent | Bidirectional))


def mask_carrying_outputs(layer: Layer) -> int:
    """How many of a layer's first outputs carry its input's mask (the sequences; never states or last steps)."""
    if isinstance(layer, Recurrent | Bidirectional):
        if not layer.return_sequences:
            return 0
        return 2 if isinstance(layer, Bidirectional) and layer.merge_mode is None else 1
    return 1


def recurrent_directions(layer: Recurrent | Bidirectional) -> dict[str, Recurrent]:
    """The directions of a recurrent layer by name: ``{"": layer}`` or ``{"forward": .., "backward": ..}``."""
    if isinstance(layer, Bidirectional):
        return {"forward": layer.forward, "backward": layer.backward}
    return {"": layer}


def iter_weights(model: Model) -> list[tuple[str, np.ndarray]]:
    """Every weight tensor of a model as ``(node/tensor, array)``, Bidirectional ones under ``node/direction``."""
    found = []
    for node in model.nodes:
        layer = node.layer
        parts = recurrent_directions(layer) if isinstance(layer, Recurrent | Bidirectional) else {"": layer}
        for direction, part in parts.items():
            prefix = f"{node.name}/{direction}/" if direction else f"{node.name}/"
            found += [(prefix + name, array) for name, array in (getattr(part, "weights", None) or {}).items()]
    return found


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
