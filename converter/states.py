"""Recurrent states by name, the same names in the NumPy runtime, the npz files of ``predict`` and ONNX.

A layer ``lstm`` has states ``h`` and ``c`` (GRU and SimpleRNN only ``h``); a Bidirectional layer ``bi``
has them per direction. They are given and returned in two equivalent forms:

- nested: ``{"lstm": {"h": h, "c": c}, "bi": {"forward": {"h": ...}, "backward": {"h": ...}}}``
- flat, as the ONNX graph names them: ``{"lstm/h": h, "lstm/c": c, "bi/forward/h": ...}``; a given state
  may also use the ONNX input name (``lstm/h0``), so a graph's outputs feed its next call's inputs.

>>> from converter.states import split_name
>>> split_name("bi/forward/h0")
('bi', 'forward', 'h')
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from converter import ir
from converter.errors import BadInputs

Array = np.ndarray
#: node name -> direction ("" for a plain layer) -> states in Keras' order (h, c)
States = dict[str, dict[str, list[Array]]]


def split_name(name: str) -> tuple[str, str, str]:
    """``lstm/h`` -> ``("lstm", "", "h")``; ``bi/forward/c0`` -> ``("bi", "forward", "c")``."""
    base, _, state = name.rpartition("/")
    state = state[:-1] if state in ("h0", "c0") else state
    node, _, direction = base.rpartition("/")
    if direction not in ("forward", "backward"):
        node, direction = base, ""
    return node, direction, state


def flat_states(model: ir.Model, states: Mapping[str, Mapping[str, list[Array]]]) -> dict[str, Array]:
    """``{"lstm/h": h, "lstm/c": c, ...}`` from runtime states."""
    result = {}
    for node in model.recurrent_nodes:
        for direction, layer in node.layer.directions.items():
            if node.name not in states or direction not in states[node.name]:
                continue
            base = f"{node.name}/{direction}" if direction else node.name
            for s_name, value in zip(layer.state_names, states[node.name][direction], strict=True):
                result[f"{base}/{s_name}"] = value
    return result


def nested_states(model: ir.Model, states: Mapping[str, Mapping[str, list[Array]]]) -> dict[str, dict]:
    """``{"lstm": {"h": h, "c": c}, "bi": {"forward": {"h": ..}, ...}}`` from runtime states."""
    result: dict[str, dict] = {}
    for node in model.recurrent_nodes:
        if node.name not in states:
            continue
        per_direction = {
            direction: dict(zip(layer.state_names, states[node.name][direction], strict=True))
            for direction, layer in node.layer.directions.items()
            if direction in states[node.name]
        }
        result[node.name] = per_direction.get("", per_direction)
    return result


def is_state_key(model: ir.Model, name: str) -> bool:
    """A flat state name (``lstm/h``, ``lstm/h0``) of one of the model's recurrent layers."""
    node, direction, state = split_name(name)
    layer = _layers(model).get(node)
    return layer is not None and direction in layer.directions and state in layer.directions[direction].state_names


def _layers(model: ir.Model) -> dict:
    return {node.name: node.layer for node in model.recurrent_nodes}


def parse_states(model: ir.Model, given: Mapping, batch: int | None, where: str) -> States:
    """Given states (nested or flat) checked against the model: known layers, every state of a direction,
    shape (batch, units). Raises ``BadInputs`` with one line naming the layer and both shapes."""
    nodes = {node.name: node for node in model.recurrent_nodes}
    found: dict[str, dict[str, dict[str, Array]]] = {}
    for key, value in given.items():
        if isinstance(value, Mapping):  # nested: {"lstm": {"h": ..}} or {"bi": {"forward": {"h": ..}}}
            for inner, item in value.items():
                if isinstance(item, Mapping):
                    for s_name, array in item.items():
                        found.setdefault(key, {}).setdefault(inner, {})[s_name] = array
                else:
                    found.setdefault(key, {}).setdefault("", {})[inner] = item
        else:
            node, direction, s_name = split_name(key)
            found.setdefault(node, {}).setdefault(direction, {})[s_name] = value
    result: States = {}
    for name, directions in found.items():
        if name not in nodes:
            known = ", ".join(nodes) or "none"
            raise BadInputs(f"{where}: states given for '{name}', which is no recurrent layer (they are: {known}).")
        node = nodes[name]
        if node.initial_state:
            raise BadInputs(
                f"{where}: layer '{name}' takes its initial states from model inputs; feed those inputs instead."
            )
        for direction, states in directions.items():
            layer = node.layer.directions.get(direction)
            if layer is None:
                want = ", ".join(repr(d) for d in node.layer.directions) if "" not in node.layer.directions else "none"
                raise BadInputs(f"{where}: layer '{name}' has no direction {direction!r} (directions: {want}).")
            label = f"{name}/{direction}" if direction else name
            missing = [s for s in layer.state_names if s not in states]
            extra = [s for s in states if s not in layer.state_names]
            if missing or extra:
                raise BadInputs(
                    f"{where}: layer '{label}' takes states {', '.join(layer.state_names)}; got {', '.join(states)}."
                )
            arrays = []
            for s_name in layer.state_names:
                array = np.asarray(states[s_name])
                want_shape = (batch if batch is not None else (array.shape[0] if array.ndim else 1), layer.units)
                if array.shape != want_shape:
                    raise BadInputs(
                        f"{where}: state '{label}/{s_name}' has shape {array.shape}, but layer '{name}' needs "
                        f"{want_shape} (batch, units)."
                    )
                if array.dtype.kind not in "fiu":
                    raise BadInputs(f"{where}: state '{label}/{s_name}' has dtype {array.dtype}; it needs numbers.")
                arrays.append(array.astype(np.float32, copy=False))
            result.setdefault(name, {})[direction] = arrays
        absent = [d for d in node.layer.directions if d not in result[name]]
        if absent:
            raise BadInputs(f"{where}: layer '{name}' needs states for both directions; missing {absent[0]!r}.")
    return result
