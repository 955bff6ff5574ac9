"""The weight store of a TF checkpoint or SavedModel: each layer's arrays found through the object graph.

Answers ``arrays(name, class_name, key)`` like the HDF5 stores (``converter.keras.weights``): the
layer's arrays in ``get_weights()`` order, each checkpoint tensor used at most once, and every layer
variable the file holds used by some layer of the config (optimizer slots, metrics and the saved
states of stateful layers are not layer weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import BadModelFile
from converter.keras.objects import ObjectGraph, state_paths, weight_paths
from converter.keras.weights import NamedArray

States = dict[str, dict[str, list[np.ndarray]]]


class TrackedWeights:
    """Weights of a tensor bundle, located by exact object paths from each layer's node."""

    def __init__(
        self,
        graph: ObjectGraph,
        layer_paths: dict[str, str],
        layers: dict[str, tuple[str, dict[str, Any]]],
        source: Path,
    ) -> None:
        self.graph = graph
        self.layer_paths = layer_paths  # layer name -> object path from the model (root) node
        self.layers = layers  # layer name -> (class name, config)
        self.source = source
        self.used: set[str] = set()

    def _array(self, key: str, where: str) -> np.ndarray:
        if key in self.used:
            raise BadModelFile(
                f"{self.source}: tensor {key!r} is claimed by two weights ({where}); the file is damaged."
            )
        self.used.add(key)
        array = self.graph.bundle.array(key)
        if array.dtype.kind != "f":
            raise BadModelFile(f"{self.source}: weights {where} are of type {array.dtype}, not floating point.")
        return array

    def _node(self, name: str) -> int | None:
        path = self.layer_paths.get(name)
        return None if path is None else self.graph.walk(0, path)

    def arrays(self, name: str, class_name: str, key: str, config: Any = None) -> list[NamedArray]:
        node = self._node(name)
        if node is None:
            return []
        where = self.layer_paths[name]
        config = self.layers.get(name, (class_name, {}))[1]
        paths = weight_paths(class_name, config)
        found: list[tuple[str, str]] = []
        if paths is None:  # a class whose weight names are not listed: the SavedModel's own ordered list
            listed = self.graph.child(node, "variables")
            if listed is None and self.graph.variables_below(node):
                raise BadModelFile(
                    f"{self.source}: layer '{name}' ({class_name}) has weights in this TF checkpoint, but their "
                    "order is not known for that class; save the model as a SavedModel, .keras or .h5 instead."
                )
            children = self.graph.nodes[listed].children if listed is not None else []
            for ref in sorted(children, key=lambda r: int(r.local_name) if r.local_name.isdigit() else -1):
                value = self.graph.value_key(int(ref.node_id))
                if value is not None:
                    found.append((f"{where}/variables/{ref.local_name}", value))
        else:
            for sub in paths:
                child = self.graph.walk(node, sub)
                value = None if child is None else self.graph.value_key(child)
                if value is not None:
                    found.append((f"{where}/{sub}", value))
        below = set(self.graph.variables_below(node))
        extra = below - {value for _, value in found}
        if extra:
            raise BadModelFile(
                f"{self.source}: layer '{name}' ({class_name}) has weights in the checkpoint that a {class_name} "
                f"does not have ({sorted(extra)[0]}); the file does not match its config."
            )
        return [(label, self._array(value, label)) for label, value in found]

    def check_all_used(self) -> None:
        root = self.graph.nodes[0]
        held: set[str] = set()
        for ref in root.children:
            is_layer = ref.local_name.startswith(("layer-", "layer_with_weights-"))
            if is_layer and 0 <= ref.node_id < len(self.graph.nodes):
                held |= set(self.graph.variables_below(int(ref.node_id)))
        unused = sorted(held - self.used)
        if unused:
            raise BadModelFile(
                f"{self.source}: the file holds weights {unused[0]!r}{' and more' if len(unused) > 1 else ''}, which "
                "no layer of the config has; the weights and the config do not belong together."
            )

    def saved_states(self) -> States:
        """The states a stateful layer had when the model was saved (SavedModels keep them), per layer and
        direction, in Keras' order (h, then c for an LSTM)."""
        result: States = {}
        for name, (class_name, _) in self.layers.items():
            node = self._node(name)
            if node is None:
                continue
            for direction, sub in state_paths(class_name).items():
                folder = self.graph.walk(node, sub)
                if folder is None:
                    continue
                refs = [r for r in self.graph.nodes[folder].children if r.local_name.isdigit()]
                refs.sort(key=lambda r: int(r.local_name))
                keys = [self.graph.value_key(int(r.node_id)) for r in refs]
                arrays = [self.graph.bundle.array(k) for k in keys if k is not None]
                if arrays:
                    result.setdefault(name, {})[direction] = [a.astype(np.float32) for a in arrays]
        return result
