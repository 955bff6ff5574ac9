"""Evaluate an IR model node by node (each layer op's own ``call``), carrying Keras masks and stateful states."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from converter import ir
from converter.errors import BadInputs
from converter.layers.base import RunContext

Array = np.ndarray


class Runtime:
    """Runs an IR model with NumPy; stateful layers keep their states between calls.

    >>> import converter
    >>> model = converter.load("fixtures/keras3/tutorial.keras")  # doctest: +SKIP
    >>> Runtime(model.ir).run({"input_layer": x})  # doctest: +SKIP
    """

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        #: Per node, what its op computed once and reuses (stacked recurrent weights).
        self.caches: dict[str, dict] = {node.name: {} for node in model.nodes}
        self.states: dict[str, dict[str, list[Array]]] = {}

    def reset_states(self) -> None:
        """Forget the states stateful layers carried over from earlier calls (like Keras)."""
        self.states.clear()

    def run(
        self,
        feeds: Mapping[str, Array],
        initial_states: Mapping[str, Mapping[str, list[Array]]] | None = None,
        trace: dict[str, Array] | None = None,
    ) -> tuple[list[Array], dict[str, dict[str, list[Array]]]]:
        """Run on ``feeds`` (model input name -> array).

        ``initial_states`` maps a recurrent node name to ``{direction: [h, c]}`` (direction ``""`` for
        a plain layer). Returns the outputs in model order and every recurrent node's final states.
        ``trace`` receives every recurrent layer's per-step gates and states (``lstm/i`` ... ``lstm/h``).
        """
        values: dict[ir.TensorRef, Array] = {}
        masks: dict[ir.TensorRef, Array | None] = {}
        for spec in self.model.inputs:
            ref = ir.TensorRef(spec.name, 0)
            values[ref], masks[ref] = feeds[spec.name], None
        final_states: dict[str, dict[str, list[Array]]] = {}
        major = self.model.keras_major
        for node in self.model.nodes:
            xs = [values[r] for r in node.inputs]
            ms = [masks[r] for r in node.inputs]
            flowing = ms[0]
            if node.mask is not None:  # an explicit mask= argument replaces the propagated one
                ms = [values[node.mask].astype(bool), *ms[1:]]
            elif not node.receives_mask:  # computes unmasked; its outputs still carry the flowing mask
                ms = [None, *ms[1:]]
            given = (initial_states or {}).get(node.name) or self.states.get(node.name)
            run = RunContext(
                major,
                f"layer '{node.name}'",
                node,
                [values[r] for r in node.initial_state],
                given,
                self.caches[node.name],
                trace=trace,
            )
            outs, out_masks = node.layer.call(xs, ms, run)
            if not node.receives_mask:
                carrying = node.layer.mask_carrying_outputs()
                out_masks = [flowing if k < carrying else None for k in range(len(outs))]
            if run.final_states is not None:
                final_states[node.name] = run.final_states
                if node.layer.keeps_states():
                    self.states[node.name] = run.final_states
            for index, (value, mask) in enumerate(zip(outs, out_masks, strict=True)):
                values[ir.TensorRef(node.name, index)] = value
                masks[ir.TensorRef(node.name, index)] = mask
        return [values[ref] for ref in self.model.outputs], final_states


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
        count = f"{len(names)} input{'s' if len(names) != 1 else ''}"
        raise BadInputs(f"{where}: the model takes {count} ({', '.join(names)}), got {len(arrays)}.")
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
