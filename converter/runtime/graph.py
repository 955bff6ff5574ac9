"""Evaluate an IR model node by node, carrying Keras masks and stateful layers' states."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from converter import ir
from converter.activations import numpy_activation
from converter.errors import BadInputs
from converter.runtime import layers
from converter.runtime.recurrent import Cell, run_recurrent

Array = np.ndarray


class Runtime:
    """Runs an IR model with NumPy; stateful layers keep their states between calls.

    >>> import converter
    >>> model = converter.load("fixtures/keras3/tutorial.keras")  # doctest: +SKIP
    >>> Runtime(model.ir).run({"input_layer": x})  # doctest: +SKIP
    """

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.cells: dict[str, dict[str, Cell]] = {
            node.name: {
                d: Cell.of(layer, model.keras_major) for d, layer in ir.recurrent_directions(node.layer).items()
            }
            for node in model.recurrent_nodes
        }
        self.states: dict[str, dict[str, list[Array]]] = {}

    def reset_states(self) -> None:
        """Forget the states stateful layers carried over from earlier calls (like Keras)."""
        self.states.clear()

    def run(
        self,
        feeds: Mapping[str, Array],
        initial_states: Mapping[str, Mapping[str, list[Array]]] | None = None,
    ) -> tuple[list[Array], dict[str, dict[str, list[Array]]]]:
        """Run on ``feeds`` (model input name -> array).

        ``initial_states`` maps a recurrent node name to ``{direction: [h, c]}`` (direction ``""`` for
        a plain layer). Returns the outputs in model order and every recurrent node's final states.
        """
        values: dict[ir.TensorRef, Array] = {}
        masks: dict[ir.TensorRef, Array | None] = {}
        for spec in self.model.inputs:
            ref = ir.TensorRef(spec.name, 0)
            values[ref], masks[ref] = feeds[spec.name], None
        final_states: dict[str, dict[str, list[Array]]] = {}
        for node in self.model.nodes:
            xs = [values[r] for r in node.inputs]
            ms = [masks[r] for r in node.inputs]
            flowing = ms[0]
            if node.mask is not None:  # an explicit mask= argument replaces the propagated one
                ms = [values[node.mask].astype(bool), *ms[1:]]
            elif not node.receives_mask:  # computes unmasked; its outputs still carry the flowing mask
                ms = [None, *ms[1:]]
            outs, out_masks = self._node(node, xs, ms, values, initial_states, final_states)
            if not node.receives_mask:
                out_masks = [flowing if k < ir.mask_carrying_outputs(node.layer) else None for k in range(len(outs))]
            for index, (value, mask) in enumerate(zip(outs, out_masks, strict=True)):
                values[ir.TensorRef(node.name, index)] = value
                masks[ir.TensorRef(node.name, index)] = mask
        return [values[ref] for ref in self.model.outputs], final_states

    def _node(self, node, xs, ms, values, initial_states, final_states):
        layer, major = node.layer, self.model.keras_major
        if isinstance(layer, ir.Recurrent | ir.Bidirectional):
            return self._recurrent(node, xs[0], ms[0], values, initial_states, final_states)
        if isinstance(layer, ir.Dense):
            return [layers.dense(layer, xs[0], major)], [ms[0]]
        if isinstance(layer, ir.Embedding):
            out, mask = layers.embedding(layer, xs[0], f"layer '{node.name}'")
            return [out], [mask]
        if isinstance(layer, ir.Masking):
            out, mask = layers.masking(layer, xs[0])
            return [out], [mask]
        if isinstance(layer, ir.Activation):
            return [numpy_activation(layer.activation, major)(xs[0]).astype(np.float32, copy=False)], [ms[0]]
        if isinstance(layer, ir.Concatenate):
            out, mask = layers.concatenate(layer, xs, ms, major)
            return [out], [mask]
        if isinstance(layer, ir.Add):
            out, mask = layers.add(xs, ms, major)
            return [out], [mask]
        if isinstance(layer, ir.NotEqual):
            return [xs[0] != np.float32(layer.value)], [None]
        if isinstance(layer, ir.ReduceAny):
            return [np.any(xs[0], axis=layer.axis, keepdims=layer.keepdims)], [None]
        return [xs[0]], [ms[0]]  # Identity

    def _start_states(self, node: ir.Node, values, initial_states, batch: int) -> dict[str, list[Array] | None]:
        directions = ir.recurrent_directions(node.layer)
        if node.initial_state:  # states wired in the Keras graph: forward's first, then backward's
            flat = [values[r].astype(np.float32, copy=False) for r in node.initial_state]
            result, start = {}, 0
            for name, layer in directions.items():
                result[name] = flat[start : start + len(layer.state_names)]
                start += len(layer.state_names)
            return result
        given = (initial_states or {}).get(node.name) or self.states.get(node.name) or {}
        result = {}
        for name, layer in directions.items():
            states = given.get(name)
            if states is not None:
                for state in states:
                    if state.shape != (batch, layer.units):
                        raise BadInputs(
                            f"layer '{node.name}': a state of shape {state.shape} does not fit; it needs "
                            f"{(batch, layer.units)} (a stateful layer keeps the batch size of its first call; "
                            "reset_states() to change it)."
                        )
            result[name] = states
        return result

    def _recurrent(self, node, x, mask, values, initial_states, final_states):
        layer = node.layer
        cells = self.cells[node.name]
        starts = self._start_states(node, values, initial_states, x.shape[0])
        if isinstance(layer, ir.Recurrent):
            out, states = run_recurrent(cells[""], x, mask, starts[""])
            finals = {"": states}
            outs = [out]
        else:
            fw, fw_states = run_recurrent(cells["forward"], x, mask, starts["forward"])
            bw, bw_states = run_recurrent(cells["backward"], x, mask, starts["backward"])
            if layer.return_sequences:
                bw = bw[:, ::-1]
            finals = {"forward": fw_states, "backward": bw_states}
            outs = [fw, bw] if layer.merge_mode is None else [_merge(layer.merge_mode, fw, bw)]
        final_states[node.name] = finals
        if any(d.stateful for d in ir.recurrent_directions(layer).values()):
            self.states[node.name] = finals
        out_mask = mask if layer.return_sequences else None
        out_masks: list[Array | None] = [out_mask] * len(outs)
        if layer.return_state:
            flat = [s for states in finals.values() for s in states]
            outs += flat
            out_masks += [None] * len(flat)
        return outs, out_masks


def _merge(mode: str, fw: Array, bw: Array) -> Array:
    if mode == "concat":
        return np.concatenate([fw, bw], axis=-1)
    if mode == "sum":
        return fw + bw
    if mode == "ave":
        return (fw + bw) / 2
    return fw * bw


def as_feeds(model: ir.Model, inputs: Array | Sequence[Array] | Mapping[str, Array], where: str) -> dict[str, Array]:
    """Accept what Keras' predict accepts: one array, a list in input order, or a dict by input name."""
    names = [spec.name for spec in model.inputs]
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        extra = [n for n in inputs if n not in names]
        if missing or extra:
            raise BadInputs(
                f"{where}: inputs are named {sorted(inputs)}, but the model's inputs are {names}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {extra})" if extra else "")
                + "."
            )
        arrays = [inputs[n] for n in names]
    elif isinstance(inputs, np.ndarray):
        arrays = [inputs]
    else:
        arrays = list(inputs)
    if len(arrays) != len(names):
        raise BadInputs(f"{where}: the model takes {len(names)} inputs ({', '.join(names)}), got {len(arrays)}.")
    feeds = {}
    for spec, array in zip(model.inputs, arrays, strict=True):
        feeds[spec.name] = check_input(spec, np.asarray(array), where)
    batches = {a.shape[0] for a in feeds.values()}
    if len(batches) > 1:
        raise BadInputs(f"{where}: the inputs have different batch sizes {sorted(batches)}.")
    return feeds


def check_input(spec: ir.InputSpec, array: Array, where: str) -> Array:
    """Check one input array against its spec; return it as float32 (or int64 for ids)."""
    expected = (spec.batch_size, *spec.shape)
    if array.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, array.shape, strict=True)):
        shown = tuple("batch" if i == 0 and e is None else ("any" if e is None else e) for i, e in enumerate(expected))
        raise BadInputs(f"{where}: input '{spec.name}' has shape {array.shape}, but the model needs {shown}.")
    if array.dtype.kind not in "fiub":
        raise BadInputs(f"{where}: input '{spec.name}' has dtype {array.dtype}; it needs numbers.")
    if spec.dtype == "float32":
        return array.astype(np.float32, copy=False)
    return array
