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
from converter.keras.limits import check_dimension, short
from converter.layers import CALL_TENSORS


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
    receives_mask: bool = True  # False: computes with no mask even if one flows in (see _keras3_call)
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


@dataclass(frozen=True)
class _RawRef:
    """A tensor as a config names it: output ``index`` of call (node) number ``node`` of ``layer``."""

    layer: str
    node: int
    index: int


@dataclass
class _RawCall:
    """One inbound node of a layer, before its tensors are resolved to calls."""

    inputs: list[_RawRef]
    initial_state: list[_RawRef] = field(default_factory=list)
    mask: _RawRef | None = None
    constants: list[Any] = field(default_factory=list)
    keras2: bool = False  # written in Keras 2's list form (nested models' calls then start at node 1)
    receives_mask: bool = True
    call_options: dict[str, Any] = field(default_factory=dict)
    call_inputs: tuple[str, ...] = ()


def _history(value: Any) -> _RawRef | None:
    """A Keras 3 ``__keras_tensor__`` dict or a Keras 2 ``[layer, node, index, kwargs]`` list."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        history = value.get("config", {}).get("keras_history")
        if isinstance(history, list) and len(history) == 3 and isinstance(history[0], str):
            return _RawRef(history[0], int(history[1]), int(history[2]))
    return None


def _flatten_tensors(value: Any) -> list[_RawRef]:
    ref = _history(value)
    if ref is not None:
        return [ref]
    if isinstance(value, list | tuple):
        return [r for item in value for r in _flatten_tensors(item)]
    if isinstance(value, dict) and "class_name" not in value:
        return [r for item in value.values() for r in _flatten_tensors(item)]
    return []


#: Layers whose ``call`` takes a ``mask`` argument (the others only pass the mask on to their outputs).
_CALL_TAKES_MASK = {"LSTM", "GRU", "SimpleRNN", "Bidirectional", "TimeDistributed", "RNN"}
_RECURRENT = {"LSTM", "GRU", "SimpleRNN", "Bidirectional", "RNN"}


def _keras3_call(node: dict[str, Any], name: str, class_name: str, path: Path) -> _RawCall:
    """A Keras 3 inbound node ``{"args": [...], "kwargs": {...}}``.

    Which mask a Keras 3 layer computes with (``Layer.__call__`` step 6 in keras/src/layers/layer.py, run
    again on every call of the loaded model by ``Function._run_through_graph``, keras/src/ops/function.py):

    - the ``mask`` argument when it is a tensor (the recorded ``mask=``, positional or keyword);
    - otherwise, only when the call has exactly one tensor-valued argument (``lstm(x)``, a merge's list
      ``concat([a, b])``), the mask that flows in with that tensor, i.e. the one its producer's
      ``compute_mask`` attached. This holds also when the saved kwargs lack ``mask`` or hold
      ``mask: null`` (calls with other keyword arguments, such as ``training=False``, are recorded
      before Keras fills the mask in);
    - otherwise no mask: ``lstm(x, initial_state=[h, c])``, ``lstm(x, [h, c])`` and a Bidirectional
      with ``initial_state`` run unmasked (Keras fills ``<name>_mask`` arguments only, which RNNs lack).
      Their outputs still carry the mask that flowed in (``previous_mask`` falls back to the first
      argument's mask, and ``compute_mask`` passes it to the sequence outputs).

    Keras 2 (tf_keras) differs: an RNN's states are extra inputs of one list argument, and the first
    input's mask is always applied. Sequential models (no recorded calls) call each layer on one tensor,
    so the flowing mask is always the one. A nested model's inner calls (saved with ``mask: null``) get
    the mask that flows into the nested model, as its flattened graph here does.
    Confirmed with Keras 3.15 models of each form: fixtures/specs/initial_state_masks.py (keyword and
    positional states, Bidirectional, training=False, mask=).
    """
    args, kwargs = node.get("args", []), node.get("kwargs", {}) or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise BadModelFile(f"{path}: layer '{name}' has an inbound node of unknown form.")
    if class_name in _RECURRENT and len(args) > 1:  # call(sequences, initial_state, mask, training)
        extra = dict(zip(("initial_state", "mask"), args[1:3], strict=False))
        if set(extra) & set(kwargs):
            raise BadModelFile(f"{path}: layer '{name}' gets {sorted(set(extra) & set(kwargs))} twice.")
        args, kwargs = args[:1], {**kwargs, **extra}
    call = _RawCall(_flatten_tensors(args))
    call.constants = [a for a in args if isinstance(a, int | float | bool)]
    call.initial_state = _flatten_tensors(kwargs.get("initial_state", []))
    masks = _flatten_tensors(kwargs.get("mask"))
    if len(masks) > 1:
        raise UnsupportedLayer(f"{path}: layer '{name}' ({class_name}) is called with several masks.")
    call.mask = masks[0] if masks else None
    keyword: dict[str, _RawRef] = {}
    for key, value in kwargs.items():
        tensors = _flatten_tensors(value)
        if key in ("initial_state", "mask"):
            continue
        if not tensors:
            call.call_options[key] = value
        elif key in CALL_TENSORS.get(class_name, ()) and len(tensors) == 1:
            keyword[key] = tensors[0]
        else:
            raise UnsupportedLayer(
                f"{path}: layer '{name}' ({class_name}) is called with a tensor for '{key}'; only "
                f"{_tensor_arguments(class_name)} may be passed as tensors."
            )
    if class_name in CALL_TENSORS:
        call.inputs, call.call_inputs = _named_inputs(call.inputs, keyword, class_name, name, path)
    tensor_args = sum(1 for a in args if _flatten_tensors(a)) + (1 if call.initial_state else 0)
    call.receives_mask = class_name not in _CALL_TAKES_MASK or call.mask is not None or tensor_args <= 1
    return call


def _tensor_arguments(class_name: str) -> str:
    return ", ".join([*CALL_TENSORS.get(class_name, ())[1:], "initial_state", "mask"])


def _named_inputs(
    positional: list[_RawRef], keyword: dict[str, _RawRef], class_name: str, name: str, path: Path
) -> tuple[list[_RawRef], tuple[str, ...]]:
    """The tensors of a call of a layer that declares its tensor arguments (``CALL_TENSORS``), in the
    declared order, and their names: ``mha(q, v, key=k)`` -> ``[q, v, k]``, ``("query", "value", "key")``."""
    names = CALL_TENSORS[class_name]
    if len(positional) > len(names):
        raise UnsupportedLayer(f"{path}: layer '{name}' ({class_name}) is called with {len(positional)} tensors.")
    given = dict(zip(names, positional, strict=False))
    twice = sorted(set(given) & set(keyword))
    if twice:
        raise BadModelFile(f"{path}: layer '{name}' gets {', '.join(twice)} twice.")
    given |= keyword
    present = tuple(n for n in names if n in given)
    return [given[n] for n in present], present


def _parse_node(node: Any, name: str, class_name: str, path: Path) -> _RawCall:
    """The tensors (inputs, initial states, explicit mask) of one inbound node of layer ``name``."""
    if isinstance(node, dict):
        return _keras3_call(node, name, class_name, path)
    if isinstance(node, list):  # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]
        refs, keyword, options = [], {}, {}
        for item in _keras2_items(node):
            if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)):
                raise BadModelFile(f"{path}: layer '{name}' has an inbound node of unknown form.")
            kwargs = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
            for key, value in kwargs.items():  # every entry of a call repeats the call's keyword arguments
                if not _keras2_tensor_kwarg(value):
                    options[key] = value
                elif key in CALL_TENSORS.get(class_name, ()):
                    keyword[key] = _RawRef(value[0], int(value[1]), int(value[2]))
                else:
                    raise UnsupportedLayer(
                        f"{path}: layer '{name}' ({class_name}) is called with extra tensor arguments."
                    )
            refs.append(_RawRef(item[0], int(item[1]), int(item[2])))
        if class_name in ("LSTM", "GRU", "SimpleRNN", "Bidirectional", "RNN") and len(refs) > 1:
            return _RawCall(refs[:1], refs[1:], keras2=True)  # Keras 2 passes states as extra inputs
        call = _RawCall(refs, keras2=True, call_options=options)
        if class_name in CALL_TENSORS:
            call.inputs, call.call_inputs = _named_inputs(refs, keyword, class_name, name, path)
        return call
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


def _endpoints(value: Any, path: Path, what: str) -> list[_RawRef]:
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]  # Keras 3 writes a single input or output unnested
    if not isinstance(value, list) or not value:
        raise BadModelFile(f"{path}: the config's {what} are missing.")
    refs = []
    for item in value:
        if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)):
            raise BadModelFile(f"{path}: the config's {what} are not of the Keras form.")
        refs.append(_RawRef(item[0], int(item[1]), int(item[2])))
    return refs


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
            (current,) = self.layer_call(name, class_name, config, key, entry, _RawCall([]), scope, [current])[:1]
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
        pending: list[tuple[str, int, _RawCall]] = []
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
            pending += [(name, k, _parse_node(node, name, class_name, self.path)) for k, node in enumerate(nodes)]
        ordered_inputs = [r.layer for r in _endpoints(cfg.get("input_layers"), self.path, "input layers")]
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

        def resolve(ref: _RawRef, keras2: bool) -> TensorRef | None:
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
        for ref in _endpoints(cfg.get("output_layers"), self.path, "output layers"):
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
        raw: _RawCall,
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
