"""Keras model config JSON (Keras 2 or Keras 3 dialect) -> the calls that make up the model.

Only the topology is read here: which layer is called on which tensors. What a layer computes is read
by the layer ops of ``converter.layers``. Sequential models become a chain of calls, functional models keep their
DAG; both come out in an order where each call follows the calls it consumes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.errors import BadModelFile, UnsupportedLayer
from converter.ir import TensorRef


@dataclass
class LayerCall:
    """One call of a layer as the config describes it."""

    name: str
    class_name: str
    config: dict[str, Any]
    key: str  # the layer's group name in a .keras weights file: snake_case class name + counter
    inputs: list[TensorRef] = field(default_factory=list)
    initial_state: list[TensorRef] = field(default_factory=list)
    mask: TensorRef | None = None
    constants: list[Any] = field(default_factory=list)  # non-tensor positional arguments (op layers)


@dataclass
class InputLayerSpec:
    name: str
    batch_shape: tuple[int | None, ...]
    dtype: str


@dataclass
class Topology:
    model_name: str
    inputs: list[InputLayerSpec]
    calls: list[LayerCall]
    outputs: list[TensorRef]


def to_snake_case(name: str) -> str:
    """Keras' own rule for naming a layer's weight group: ``SimpleRNN`` -> ``simple_rnn``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _dtype_name(value: Any) -> str:
    if isinstance(value, dict):  # Keras 3 DTypePolicy / Keras 2 Policy
        return str(value.get("config", {}).get("name", "float32"))
    return "float32" if value is None else str(value)


def _shape(value: Any, path: Path, where: str) -> tuple[int | None, ...]:
    if not isinstance(value, list | tuple) or not all(v is None or isinstance(v, int) for v in value):
        raise BadModelFile(f"{path}: {where} has no usable input shape ({value!r}).")
    return tuple(value)


def _input_spec(name: str, config: dict[str, Any], path: Path) -> InputLayerSpec:
    shape = config.get("batch_shape", config.get("batch_input_shape"))
    if shape is None and config.get("shape") is not None:
        shape = [config.get("batch_size"), *config["shape"]]
    return InputLayerSpec(name, _shape(shape, path, f"input '{name}'"), _dtype_name(config.get("dtype")))


class _Keys:
    """Hands out ``.keras`` weight group names: ``lstm``, ``lstm_1``, ... per class, in layer order."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}

    def next(self, class_name: str) -> str:
        base = to_snake_case(class_name)
        if base in self.used:
            self.used[base] += 1
            return f"{base}_{self.used[base]}"
        self.used[base] = 0
        return base


def _check_layer_entry(entry: Any, path: Path) -> tuple[str, str, dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise BadModelFile(f"{path}: a layer entry in the config is not of the Keras form ({str(entry)[:80]}).")
    config = entry.get("config")
    if not isinstance(config, dict):
        raise BadModelFile(f"{path}: layer {entry['class_name']} has no config object.")
    name = str(entry.get("name", config.get("name", "")))
    registered = entry.get("registered_name")
    if registered not in (None, entry["class_name"]):
        raise UnsupportedLayer(
            f"{path}: layer '{name}' is the custom class {registered!r}; custom classes are never loaded "
            "(that would run code from the file). Rebuild the model from built-in Keras layers."
        )
    return name, entry["class_name"], config


def _sequential(cfg: dict[str, Any], path: Path) -> Topology:
    layers = cfg.get("layers")
    if not isinstance(layers, list) or not layers:
        raise BadModelFile(f"{path}: the Sequential config has no layers.")
    keys = _Keys()
    inputs: list[InputLayerSpec] = []
    calls: list[LayerCall] = []
    for entry in layers:
        name, class_name, config = _check_layer_entry(entry, path)
        if class_name == "InputLayer":
            if inputs or calls:
                raise UnsupportedLayer(f"{path}: an InputLayer in the middle of a Sequential model is not supported.")
            inputs.append(_input_spec(name, config, path))
            keys.next(class_name)
            continue
        if not inputs:  # Keras 2 puts the input shape on the first layer
            shape = config.get("batch_input_shape") or cfg.get("build_input_shape")
            if shape is None:
                raise BadModelFile(
                    f"{path}: the model was saved before it was built, so its input shape is unknown; "
                    "build it (call it on data or add an Input) and save it again."
                )
            inputs.append(
                InputLayerSpec(
                    f"{name}_input", _shape(shape, path, "the model input"), _dtype_name(config.get("dtype"))
                )
            )
        source = calls[-1].name if calls else inputs[0].name
        calls.append(LayerCall(name, class_name, config, keys.next(class_name), [TensorRef(source, 0)]))
    if not calls:
        raise BadModelFile(f"{path}: the Sequential model has no layers besides its input.")
    return Topology(str(cfg.get("name", "sequential")), inputs, calls, [TensorRef(calls[-1].name, 0)])


def _history(value: Any) -> TensorRef | None:
    """A Keras 3 ``__keras_tensor__`` dict or a Keras 2 ``[layer, node, index, kwargs]`` list."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        history = value.get("config", {}).get("keras_history")
        if isinstance(history, list) and len(history) == 3:
            return TensorRef(str(history[0]), int(history[2]))
    return None


def _flatten_tensors(value: Any) -> list[TensorRef]:
    ref = _history(value)
    if ref is not None:
        return [ref]
    if isinstance(value, list | tuple):
        return [r for item in value for r in _flatten_tensors(item)]
    if isinstance(value, dict) and "class_name" not in value:
        return [r for item in value.values() for r in _flatten_tensors(item)]
    return []


def _parse_node(node: Any, call: LayerCall, path: Path) -> None:
    """Fill ``call``'s tensors (inputs, initial states, explicit mask) from one inbound node."""
    name, class_name = call.name, call.class_name
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        args = node.get("args", [])
        call.inputs = _flatten_tensors(args)
        call.constants = [a for a in args if isinstance(a, int | float | bool)] if isinstance(args, list) else []
        kwargs = node.get("kwargs", {}) or {}
        call.initial_state = _flatten_tensors(kwargs.get("initial_state", []))
        masks = _flatten_tensors(kwargs.get("mask"))
        if len(masks) > 1:
            raise UnsupportedLayer(f"{path}: layer '{name}' ({class_name}) is called with several masks.")
        call.mask = masks[0] if masks else None
        for key, value in kwargs.items():
            if key not in ("initial_state", "mask") and _flatten_tensors(value):
                raise UnsupportedLayer(
                    f"{path}: layer '{name}' ({class_name}) is called with a tensor for '{key}'; only "
                    "initial_state and mask may be passed as tensors."
                )
        return
    if isinstance(node, list):  # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]
        refs = []
        for item in _keras2_items(node):
            if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)):
                raise BadModelFile(f"{path}: layer '{name}' has an inbound node of unknown form.")
            if len(item) > 3 and isinstance(item[3], dict) and any(_keras2_tensor_kwarg(v) for v in item[3].values()):
                raise UnsupportedLayer(f"{path}: layer '{name}' ({class_name}) is called with extra tensor arguments.")
            refs.append(TensorRef(item[0], int(item[2])))
        if class_name in ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional") and len(refs) > 1:
            call.inputs, call.initial_state = refs[:1], refs[1:]  # Keras 2 passes states as extra inputs
        else:
            call.inputs = refs
        return
    raise BadModelFile(f"{path}: layer '{name}' has an inbound node of unknown form.")


def _keras2_items(node: list) -> list:
    """A Keras 2 inbound node's tensor entries, flattened: an RNN of stacked cells lists its initial states as
    one nested list per cell (``[[x...], [[h0...], [c0...]], [g0...]]``)."""
    items = []
    for item in node:
        if isinstance(item, list) and item and all(isinstance(i, list) for i in item):
            items += _keras2_items(item)
        else:
            items.append(item)
    return items


def _keras2_tensor_kwarg(value: Any) -> bool:
    return isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int)


def _endpoints(value: Any, path: Path, what: str) -> list[TensorRef]:
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]  # Keras 3 writes a single input or output unnested
    if not isinstance(value, list) or not value:
        raise BadModelFile(f"{path}: the config's {what} are missing.")
    refs = []
    for item in value:
        if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)):
            raise BadModelFile(f"{path}: the config's {what} are not of the Keras form.")
        refs.append(TensorRef(item[0], int(item[2])))
    return refs


def _functional(cfg: dict[str, Any], path: Path) -> Topology:
    layers = cfg.get("layers")
    if not isinstance(layers, list):
        raise BadModelFile(f"{path}: the functional model config has no layer list.")
    keys = _Keys()
    inputs: dict[str, InputLayerSpec] = {}
    calls: dict[str, LayerCall] = {}
    for entry in layers:
        name, class_name, config = _check_layer_entry(entry, path)
        key = keys.next(class_name)
        if name in inputs or name in calls:
            raise BadModelFile(f"{path}: two layers are named '{name}'.")
        if class_name == "InputLayer":
            inputs[name] = _input_spec(name, config, path)
            continue
        nodes = entry.get("inbound_nodes", [])
        if not isinstance(nodes, list) or not nodes:
            raise BadModelFile(f"{path}: layer '{name}' is never called in the model.")
        if len(nodes) > 1:
            raise UnsupportedLayer(
                f"{path}: layer '{name}' ({class_name}) is called {len(nodes)} times (a shared layer); "
                "shared layers are not supported yet."
            )
        calls[name] = LayerCall(name, class_name, config, key)
        _parse_node(nodes[0], calls[name], path)
    for call in calls.values():
        _drop_recorded_merge_mask(call, calls)
    input_refs = _endpoints(cfg.get("input_layers"), path, "input layers")
    outputs = _endpoints(cfg.get("output_layers"), path, "output layers")
    ordered_inputs = []
    for ref in input_refs:
        if ref.node not in inputs:
            raise BadModelFile(f"{path}: the model input '{ref.node}' is not an InputLayer of the config.")
        ordered_inputs.append(inputs[ref.node])
    return Topology(str(cfg.get("name", "model")), ordered_inputs, _topological(calls, inputs, outputs, path), outputs)


#: Keras 3 op layers that a functional model records when it computes a layer's mask (Masking: NotEqual
#: -> Any; merging masked branches: ExpandDims, ZerosLike/OnesLike, LogicalOr/And, Concatenate of masks).
_MASK_OPS = {"NotEqual", "Any", "All", "ExpandDims", "ZerosLike", "OnesLike", "LogicalOr", "LogicalAnd", "Concatenate"}


def _drop_recorded_merge_mask(call: LayerCall, calls: dict[str, LayerCall]) -> None:
    """Forget a recorded ``mask=`` that Keras 3 computed by merging masks of several branches.

    Keras 3 records the mask each layer received; where it came from merging branches (Concatenate, Add),
    the recorded ops are exactly Keras' ``compute_mask`` of the merge layer, which the IR's own mask
    propagation reproduces. A mask made only of NotEqual -> Any (a Masking layer's) is kept and computed
    as recorded; any other explicit mask keeps its producers, so unsupported ops are reported.
    """
    if call.mask is None:
        return
    classes, stack, seen = set(), [call.mask.node], set()
    while stack:
        name = stack.pop()
        if name in seen or name not in calls:
            continue
        seen.add(name)
        producer = calls[name]
        if producer.class_name not in _MASK_OPS or (producer.class_name == "Concatenate" and name == call.name):
            return  # not a pure mask computation: keep it as it is
        classes.add(producer.class_name)
        if producer.class_name not in ("NotEqual", "ZerosLike", "OnesLike"):  # these read data, not masks
            stack += [ref.node for ref in producer.inputs]
    if not classes <= {"NotEqual", "Any"}:
        call.mask = None


def _topological(
    calls: dict[str, LayerCall], inputs: dict[str, InputLayerSpec], outputs: list[TensorRef], path: Path
) -> list[LayerCall]:
    """The calls that the outputs need, each after its inputs; a cycle or a dangling reference is an error."""
    order: list[LayerCall] = []
    state: dict[str, str] = {}

    def visit(name: str, needed_by: str) -> None:
        if name in inputs or state.get(name) == "done":
            return
        if name not in calls:
            raise BadModelFile(f"{path}: '{needed_by}' uses '{name}', which is not a layer of the model.")
        if state.get(name) == "visiting":
            raise BadModelFile(f"{path}: the layers form a cycle through '{name}'.")
        state[name] = "visiting"
        call = calls[name]
        for ref in call.inputs + call.initial_state + ([call.mask] if call.mask else []):
            visit(ref.node, name)
        state[name] = "done"
        order.append(calls[name])

    for ref in outputs:
        visit(ref.node, "the model outputs")
    return order


def parse_topology(model_config: dict[str, Any], path: Path) -> Topology:
    """A model config (``model.to_json()`` / ``config.json`` / ``model_config``) -> its topology."""
    if not isinstance(model_config, dict):
        raise BadModelFile(f"{path}: the model config is not a JSON object; is this a Keras model file?")
    class_name = model_config.get("class_name")
    cfg = model_config.get("config")
    if not isinstance(cfg, dict):
        raise BadModelFile(f"{path}: the model config has no 'config' object; is this a Keras model file?")
    if class_name == "Sequential":
        return _sequential(cfg, path)
    if class_name in ("Functional", "Model"):
        return _functional(cfg, path)
    raise UnsupportedLayer(
        f"{path}: the model is a {class_name!r}; only Sequential and functional Keras models are supported "
        "(a subclassed model's architecture is Python code, which is never run)."
    )
