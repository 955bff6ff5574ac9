"""One layer call as a Keras config records it (an inbound node, Keras 2 or Keras 3 dialect) -> its tensors.

A call's tensors are references by (layer, node index, output index), not yet resolved to calls: the
topology (``converter.keras.config``) resolves them once nested models are flattened. Here live the
rules of what a call's arguments mean: which are inputs, initial states and an explicit mask, which
tensor keywords a layer takes (``CALL_TENSORS``), and which mask a Keras 3 call computes with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.errors import BadModelFile, UnsupportedLayer
from converter.layers import CALL_TENSORS


@dataclass(frozen=True)
class RawRef:
    """A tensor as a config names it: output ``index`` of call (node) number ``node`` of ``layer``."""

    layer: str
    node: int
    index: int


@dataclass
class RawCall:
    """One inbound node of a layer, before its tensors are resolved to calls."""

    inputs: list[RawRef]
    initial_state: list[RawRef] = field(default_factory=list)
    mask: RawRef | None = None
    constants: list[Any] = field(default_factory=list)
    keras2: bool = False  # written in Keras 2's list form (nested models' calls then start at node 1)
    receives_mask: bool = True
    call_options: dict[str, Any] = field(default_factory=dict)
    call_inputs: tuple[str, ...] = ()


def _history(value: Any) -> RawRef | None:
    """A Keras 3 ``__keras_tensor__`` dict or a Keras 2 ``[layer, node, index, kwargs]`` list."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        history = value.get("config", {}).get("keras_history")
        if isinstance(history, list) and len(history) == 3 and isinstance(history[0], str):
            return RawRef(history[0], int(history[1]), int(history[2]))
    return None


def _flatten_tensors(value: Any) -> list[RawRef]:
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


def _keras3_call(node: dict[str, Any], name: str, class_name: str, path: Path) -> RawCall:
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
    call = RawCall(_flatten_tensors(args))
    call.constants = [a for a in args if isinstance(a, int | float | bool)]
    call.initial_state = _flatten_tensors(kwargs.get("initial_state", []))
    masks = _flatten_tensors(kwargs.get("mask"))
    if len(masks) > 1:
        raise UnsupportedLayer(f"{path}: layer '{name}' ({class_name}) is called with several masks.")
    call.mask = masks[0] if masks else None
    keyword: dict[str, RawRef] = {}
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
    positional: list[RawRef], keyword: dict[str, RawRef], class_name: str, name: str, path: Path
) -> tuple[list[RawRef], tuple[str, ...]]:
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


def parse_node(node: Any, name: str, class_name: str, path: Path) -> RawCall:
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
                    keyword[key] = RawRef(value[0], int(value[1]), int(value[2]))
                else:
                    raise UnsupportedLayer(
                        f"{path}: layer '{name}' ({class_name}) is called with extra tensor arguments."
                    )
            refs.append(RawRef(item[0], int(item[1]), int(item[2])))
        if class_name in ("LSTM", "GRU", "SimpleRNN", "Bidirectional", "RNN") and len(refs) > 1:
            return RawCall(refs[:1], refs[1:], keras2=True)  # Keras 2 passes states as extra inputs
        call = RawCall(refs, keras2=True, call_options=options)
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


def endpoints(value: Any, path: Path, what: str) -> list[RawRef]:
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]  # Keras 3 writes a single input or output unnested
    if not isinstance(value, list) or not value:
        raise BadModelFile(f"{path}: the config's {what} are missing.")
    refs = []
    for item in value:
        if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)):
            raise BadModelFile(f"{path}: the config's {what} are not of the Keras form.")
        refs.append(RawRef(item[0], int(item[1]), int(item[2])))
    return refs
