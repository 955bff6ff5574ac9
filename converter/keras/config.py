"""Keras model config JSON (Keras 2 or Keras 3 dialect) -> the calls that make up the model.

Only the topology is read here: which layer is called on which tensors. What a layer computes is read
by the layer ops of ``converter.layers``. Sequential models become a chain of calls, functional models keep
their DAG; both come out in an order where each call follows the calls it consumes.

Nested models (a Sequential or functional model used as a layer) are flattened: each call of one
instantiates its layers under its name (``encoder/lstm``). A layer called several times (a shared layer,
or every layer of a nested model called twice) becomes one call per use; later calls are named
``<name>/call_<k>`` and reuse the first call's weights. Tensor references name the layer, its call
(node) index and the output index; Keras 2 counts a nested model's own construction as its node 0, so
its calls start at node 1 there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.errors import BadModelFile, UnsupportedLayer
from converter.ir import TensorRef
from converter.keras.calls import RawCall, RawRef, endpoints, parse_node
from converter.keras.limits import check_dimension, short


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
    #: Where its weights are: the layer's name path through nested models (``encoder/lstm``).
    weight_name: str = ""
    #: A later call of a shared layer: the name of the first call, whose layer (and weights) it reuses.
    weights_of: str | None = None
    receives_mask: bool = True  # False: computes with no mask even if one flows in (see converter.keras.calls)
    call_options: dict[str, Any] = field(default_factory=dict)  # non-tensor keyword arguments of the call
    call_inputs: tuple[str, ...] = ()  # which declared tensor arguments ``inputs`` are (see CALL_TENSORS)


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
        raise BadModelFile(f"{path}: {where} has no usable input shape ({short(value)}).")
    if len(value) > 32:  # HDF5 and NumPy stop at 32 and 64 dimensions; a Keras input has a few
        raise BadModelFile(f"{path}: {where} declares {len(value)} dimensions; refusing it as damaged.")
    return tuple(check_dimension(v, path, where) for v in value)


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
        raise BadModelFile(f"{path}: a layer entry in the config is not of the Keras form ({short(entry, 80)}).")
    config = entry.get("config")
    if not isinstance(config, dict):
        raise BadModelFile(f"{path}: layer {entry['class_name']} has no config object.")
    name = str(entry.get("name", config.get("name", "")))
    registered = entry.get("registered_name")
    if registered not in (None, entry["class_name"]):
        raise UnsupportedLayer(
            f"{path}: layer '{name}' is the custom class {short(registered)}; custom classes are never loaded "
            "(that would run code from the file). Rebuild the model from built-in Keras layers."
        )
    return name, entry["class_name"], config


MODEL_CLASSES = ("Sequential", "Functional", "Model")


class _Flattener:
    """Instantiates a model config's calls, nested models inlined, into one flat list of ``LayerCall``s."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: dict[str, LayerCall] = {}
        self.first_call: dict[str, str] = {}  # a layer's identity (its weight key path) -> its first call
        self.inputs: list[InputLayerSpec] = []

    # naming ------------------------------------------------------------------------------------------
    @staticmethod
    def call_name(prefix: str, name: str, k: int) -> str:
        return f"{prefix}{name}" if k == 0 else f"{prefix}{name}/call_{k}"

    def add(self, call: LayerCall, identity: str) -> None:
        if call.name in self.calls:
            raise BadModelFile(f"{self.path}: two layers would both be called '{call.name}'; rename one.")
        if identity in self.first_call:
            call.weights_of = self.first_call[identity]
        else:
            self.first_call[identity] = call.name
        self.calls[call.name] = call

    # models ------------------------------------------------------------------------------------------
    def model(
        self, class_name: str, cfg: dict[str, Any], scope: _Scope, bindings: list[TensorRef] | None
    ) -> list[TensorRef]:
        """Instantiate a model (top level when ``bindings`` is None) and return its output tensors."""
        if not isinstance(cfg, dict):
            raise BadModelFile(f"{self.path}: a model config has no 'config' object.")
        if class_name == "Sequential":
            return self.sequential(cfg, scope, bindings)
        return self.functional(cfg, scope, bindings)

    def sequential(self, cfg: dict[str, Any], scope: _Scope, bindings: list[TensorRef] | None) -> list[TensorRef]:
        layers = cfg.get("layers")
        if not isinstance(layers, list) or not layers:
            raise BadModelFile(f"{self.path}: the Sequential config has no layers.")
        keys = _Keys()
        current: TensorRef | None = bindings[0] if bindings else None
        if bindings is not None and len(bindings) != 1:
            raise BadModelFile(
                f"{self.path}: the nested Sequential '{scope.prefix[:-1]}' is fed {len(bindings)} inputs."
            )
        seen_layer = False
        for entry in layers:
            name, class_name, config = _check_layer_entry(entry, self.path)
            key = keys.next(class_name)
            if class_name == "InputLayer":
                if seen_layer or (current is not None and bindings is None):
                    raise UnsupportedLayer(
                        f"{self.path}: an InputLayer in the middle of a Sequential model is not supported."
                    )
                if bindings is None:
                    self.inputs.append(_input_spec(name, config, self.path))
                    current = TensorRef(name, 0)
                continue
            if current is None:  # Keras 2 puts the input shape on the first layer
                shape = config.get("batch_input_shape") or cfg.get("build_input_shape")
                if shape is None:
                    raise BadModelFile(
                        f"{self.path}: the model was saved before it was built, so its input shape is unknown; "
                        "build it (call it on data or add an Input) and save it again."
                    )
                spec = InputLayerSpec(
                    f"{name}_input", _shape(shape, self.path, "the model input"), _dtype_name(config.get("dtype"))
                )
                self.inputs.append(spec)
                current = TensorRef(spec.name, 0)
            seen_layer = True
            (current,) = self.layer_call(name, class_name, config, key, entry, RawCall([]), scope, [current])[:1]
        if not seen_layer:
            raise BadModelFile(f"{self.path}: the Sequential model has no layers besides its input.")
        return [current]  # type: ignore[list-item]

    def functional(self, cfg: dict[str, Any], scope: _Scope, bindings: list[TensorRef] | None) -> list[TensorRef]:
        layers = cfg.get("layers")
        if not isinstance(layers, list):
            raise BadModelFile(f"{self.path}: the functional model config has no layer list.")
        keys = _Keys()
        entries: dict[str, tuple[str, dict[str, Any], str, Any]] = {}
        outputs_of: dict[tuple[str, int], list[TensorRef]] = {}  # (layer, call) -> its output tensors
        input_names: list[str] = []
        pending: list[tuple[str, int, RawCall]] = []
        for entry in layers:
            name, class_name, config = _check_layer_entry(entry, self.path)
            key = keys.next(class_name)
            if name in entries:
                raise BadModelFile(f"{self.path}: two layers are named '{name}'.")
            entries[name] = (class_name, config, key, entry)
            if class_name == "InputLayer":
                input_names.append(name)
                continue
            nodes = entry.get("inbound_nodes", [])
            if not isinstance(nodes, list) or not nodes:
                if class_name in MODEL_CLASSES:
                    continue  # a nested model that this model never calls
                raise BadModelFile(f"{self.path}: layer '{name}' is never called in the model.")
            pending += [(name, k, parse_node(node, name, class_name, self.path)) for k, node in enumerate(nodes)]
        ordered_inputs = [r.layer for r in endpoints(cfg.get("input_layers"), self.path, "input layers")]
        for name in ordered_inputs:
            if name not in input_names:
                raise BadModelFile(f"{self.path}: the model input '{name}' is not an InputLayer of the config.")
        if bindings is None:
            for name in ordered_inputs:
                self.inputs.append(_input_spec(name, entries[name][1], self.path))
                outputs_of[(name, 0)] = [TensorRef(name, 0)]
        else:
            if len(bindings) != len(ordered_inputs):
                raise BadModelFile(
                    f"{self.path}: the nested model '{scope.prefix[:-1]}' takes {len(ordered_inputs)} input(s), "
                    f"but is fed {len(bindings)}."
                )
            outputs_of |= {(name, 0): [ref] for name, ref in zip(ordered_inputs, bindings, strict=True)}

        def resolve(ref: RawRef, keras2: bool) -> TensorRef | None:
            if ref.layer not in entries:
                raise BadModelFile(f"{self.path}: a layer uses '{ref.layer}', which is not a layer of the model.")
            class_name = entries[ref.layer][0]
            call = ref.node - 1 if keras2 and class_name in MODEL_CLASSES else ref.node
            got = outputs_of.get((ref.layer, 0 if class_name == "InputLayer" else call))
            if got is None:
                return None
            if not 0 <= ref.index < len(got):
                raise BadModelFile(f"{self.path}: '{ref.layer}' has no output {ref.index}.")
            return got[ref.index]

        keras2 = any(raw.keras2 for _, _, raw in pending)
        # Calls in an order where each follows what it consumes: repeat passes until none is left
        # (a model's calls are nearly always listed in order, so one or two passes do).
        while pending:
            waiting = []
            for name, k, raw in pending:
                refs = [resolve(r, raw.keras2) for r in raw.inputs]
                states = [resolve(r, raw.keras2) for r in raw.initial_state]
                mask = resolve(raw.mask, raw.keras2) if raw.mask is not None else None
                if None in refs or None in states or (raw.mask is not None and mask is None):
                    waiting.append((name, k, raw))
                    continue
                class_name, config, key, entry = entries[name]
                outs = self.layer_call(name, class_name, config, key, entry, raw, scope, refs, states, mask, k)
                outputs_of[(name, k)] = outs
            if len(waiting) == len(pending):
                names = sorted({name for name, _, _ in waiting})
                raise BadModelFile(
                    f"{self.path}: the layers {', '.join(names[:5])} wait on each other or on a call that does "
                    "not exist (a cycle, or a damaged config)."
                )
            pending = waiting
        outs = []
        for ref in endpoints(cfg.get("output_layers"), self.path, "output layers"):
            got = resolve(ref, keras2)
            if got is None:
                raise BadModelFile(f"{self.path}: the model output {ref.layer}:{ref.index} does not exist.")
            outs.append(got)
        return outs

    def layer_call(
        self,
        name: str,
        class_name: str,
        config: dict[str, Any],
        key: str,
        entry: dict[str, Any],
        raw: RawCall,
        scope: _Scope,
        inputs: list[TensorRef],
        states: list[TensorRef] | None = None,
        mask: TensorRef | None = None,
        k: int = 0,
    ) -> list[TensorRef]:
        """One call of one layer (or of a nested model): its output tensors, as many as it may have."""
        call_name = self.call_name(scope.prefix, name, k)
        if class_name in MODEL_CLASSES:
            inner = _Scope(f"{call_name}/", f"{scope.key_prefix}{key}/layers/", f"{scope.weight_prefix}{name}/")
            if states:
                raise UnsupportedLayer(f"{self.path}: the nested model '{call_name}' is called with initial states.")
            return self.model(class_name, config, inner, inputs)
        call = LayerCall(
            call_name,
            class_name,
            config,
            f"{scope.key_prefix}{key}",
            list(inputs),
            list(states or []),
            mask,
            raw.constants,
            weight_name=f"{scope.weight_prefix}{name}",
            receives_mask=raw.receives_mask,
            call_options=dict(raw.call_options),
            call_inputs=raw.call_inputs,
        )
        self.add(call, call.key)
        return [TensorRef(call_name, index) for index in range(_MAX_OUTPUTS)]


#: More outputs than any layer has (Bidirectional with return_state: 5); references are checked later.
_MAX_OUTPUTS = 8


@dataclass(frozen=True)
class _Scope:
    """Where a model's layers go: name prefix, ``.keras`` weight key prefix, legacy weight path prefix."""

    prefix: str = ""
    key_prefix: str = ""
    weight_prefix: str = ""


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
    calls: dict[str, LayerCall], inputs: set[str], outputs: list[TensorRef], path: Path
) -> list[LayerCall]:
    """The calls that the outputs need, each after its inputs (iteratively: a chain of thousands of layers is
    a valid model); a cycle or a dangling reference is an error."""
    order: list[LayerCall] = []
    state: dict[str, str] = {}
    for ref in outputs:
        stack: list[tuple[str, str, bool]] = [(ref.node, "the model outputs", False)]
        while stack:
            name, needed_by, expanded = stack.pop()
            if expanded:
                state[name] = "done"
                order.append(calls[name])
                continue
            if name in inputs or state.get(name) == "done":
                continue
            if name not in calls:
                raise BadModelFile(f"{path}: '{needed_by}' uses '{name}', which is not a layer of the model.")
            if state.get(name) == "visiting":
                raise BadModelFile(f"{path}: the layers form a cycle through '{name}'.")
            state[name] = "visiting"
            stack.append((name, needed_by, True))
            call = calls[name]
            for dep in reversed(call.inputs + call.initial_state + ([call.mask] if call.mask else [])):
                if dep.node not in inputs and state.get(dep.node) != "done":
                    stack.append((dep.node, name, False))
    return order


def parse_topology(model_config: dict[str, Any], path: Path) -> Topology:
    """A model config (``model.to_json()`` / ``config.json`` / ``model_config``) -> its topology."""
    if not isinstance(model_config, dict):
        raise BadModelFile(f"{path}: the model config is not a JSON object; is this a Keras model file?")
    class_name = model_config.get("class_name")
    cfg = model_config.get("config")
    if not isinstance(cfg, dict):
        raise BadModelFile(f"{path}: the model config has no 'config' object; is this a Keras model file?")
    if class_name not in MODEL_CLASSES:
        raise UnsupportedLayer(
            f"{path}: the model is {class_name!r}; only Sequential and functional Keras models are supported "
            "(a subclassed model's architecture is Python code, which is never run)."
        )
    flat = _Flattener(path)
    outputs = flat.model(str(class_name), cfg, _Scope(), None)
    for call in flat.calls.values():
        _drop_recorded_merge_mask(call, flat.calls)
    default_name = "sequential" if class_name == "Sequential" else "model"
    inputs = {spec.name for spec in flat.inputs}
    calls = _topological(flat.calls, inputs, outputs, path)
    return Topology(str(cfg.get("name", default_name)), flat.inputs, calls, outputs)
