"""Which tensor of a TF checkpoint is which layer weight: the checkpoint's object graph.

Every TF checkpoint (and a SavedModel's ``variables/``) carries a ``TrackableObjectGraph`` in its string
tensor ``_CHECKPOINTABLE_OBJECT_GRAPH``: node 0 is the model, each node lists its children by local name
(``layer_with_weights-0``, ``cell``, ``kernel``) and a variable's node names the checkpoint key of its
value. A layer's weights are found by exact paths from its node, in ``layer.get_weights()`` order:
``cell/kernel``, ``cell/recurrent_kernel``, ``cell/bias`` for a recurrent layer, ``forward_layer/...``
then ``backward_layer/...`` for Bidirectional, ``layer/...`` for TimeDistributed. A stateful layer's
states (SavedModel only) lie under ``keras_api/states/<n>``.
"""

from __future__ import annotations

from typing import Any

from converter.errors import BadModelFile
from converter.keras.bundle import Bundle
from converter.keras.protos import message

GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VALUE = "VARIABLE_VALUE"
_RECURRENT = ("cell/kernel", "cell/recurrent_kernel", "cell/bias")
#: Weight paths below a layer's node, in get_weights() order, per layer class.
WEIGHT_PATHS: dict[str, tuple[str, ...]] = {
    "LSTM": _RECURRENT,
    "GRU": _RECURRENT,
    "SimpleRNN": _RECURRENT,
    "Dense": ("kernel", "bias"),
    "Embedding": ("embeddings",),
}
MAX_DEPTH = 64


class ObjectGraph:
    """The object graph of one bundle, walked by local names."""

    def __init__(self, bundle: Bundle) -> None:
        if GRAPH_KEY not in bundle.entries:
            raise BadModelFile(
                f"{bundle.index}: has no object graph ({GRAPH_KEY}); it is a TF1-style checkpoint, which "
                "cannot be matched to Keras layers. Save it with TF 2 (model.save_weights or model.save)."
            )
        strings = bundle.strings(GRAPH_KEY)
        graph = message("TrackableObjectGraph")
        try:
            graph.ParseFromString(strings[0] if len(strings) == 1 else b"\xff")
        except Exception as exc:  # protobuf's DecodeError
            raise BadModelFile(f"{bundle.index}: its object graph is damaged ({exc}).") from None
        self.bundle = bundle
        self.nodes = list(graph.nodes)
        if not self.nodes:
            raise BadModelFile(f"{bundle.index}: its object graph is empty.")

    def child(self, node: int, name: str) -> int | None:
        for ref in self.nodes[node].children:
            if ref.local_name == name:
                if not 0 <= ref.node_id < len(self.nodes):
                    raise BadModelFile(f"{self.bundle.index}: the object graph links to node {ref.node_id}.")
                return int(ref.node_id)
        return None

    def walk(self, node: int | None, path: str) -> int | None:
        for part in path.split("/") if path else []:
            if node is None:
                return None
            node = self.child(node, part)
        return node

    def value_key(self, node: int) -> str | None:
        """The checkpoint key of a variable node's value, or None if the node is no variable."""
        for attribute in self.nodes[node].attributes:
            if attribute.name == VALUE:
                return str(attribute.checkpoint_key)
        return None

    def variables_below(self, node: int, skip: tuple[str, ...] = ("keras_api",)) -> list[str]:
        """Keys of every variable reachable from ``node`` (children named in ``skip`` not followed)."""
        found: list[str] = []
        seen: set[int] = set()
        stack = [(node, 0)]
        while stack:
            current, depth = stack.pop()
            if current in seen or depth > MAX_DEPTH:
                continue
            seen.add(current)
            key = self.value_key(current)
            if key is not None:
                found.append(key)
            for ref in self.nodes[current].children:
                if ref.local_name not in skip and 0 <= ref.node_id < len(self.nodes):
                    stack.append((int(ref.node_id), depth + 1))
        return found


def weight_paths(class_name: str, config: dict[str, Any]) -> tuple[str, ...] | None:
    """The exact paths of a layer's weights below its node; None for a class not listed."""
    if class_name == "Bidirectional":
        forward = config.get("layer", {})
        backward = config.get("backward_layer") or forward
        fw = weight_paths(str(forward.get("class_name")), forward.get("config", {}))
        bw = weight_paths(str(backward.get("class_name")), backward.get("config", {}))
        if fw is None or bw is None:
            return None
        return tuple(f"forward_layer/{p}" for p in fw) + tuple(f"backward_layer/{p}" for p in bw)
    if class_name == "TimeDistributed":
        inner = config.get("layer", {})
        paths = weight_paths(str(inner.get("class_name")), inner.get("config", {}))
        return None if paths is None else tuple(f"layer/{p}" for p in paths)
    return WEIGHT_PATHS.get(class_name)


def state_paths(class_name: str) -> dict[str, str]:
    """Where a stateful layer's saved states lie below its node, per direction."""
    if class_name == "Bidirectional":
        return {"forward": "forward_layer/keras_api/states", "backward": "backward_layer/keras_api/states"}
    return {"": "keras_api/states"}
