"""``--batch-size N`` and ``--time-steps N|dynamic``: the same model with other input shapes.

The batch size applies to every input. The time length applies to the inputs that have a time axis:
sequences (rank >= 2 without the batch axis) and token ids read by an Embedding; a Keras input that holds
initial states or plain features has none.

>>> from converter import ir
>>> m = ir.Model("m", (ir.InputSpec("x", (5, 3)),), (), (), (), "3.0", "m.keras")
>>> reshape_inputs(m, 4, "dynamic", "m.keras").inputs
(InputSpec(name='x', shape=(None, 3), dtype='float32', batch_size=4),)
"""

from __future__ import annotations

from dataclasses import replace

from converter import ir
from converter.errors import BadOptions


def time_inputs(model: ir.Model) -> list[str]:
    """The inputs with a time axis (their first axis after the batch)."""
    state_inputs = {ref.node for node in model.nodes for ref in node.initial_state}
    ids = {ref.node for node in model.nodes if node.layer.vocabulary() for ref in node.inputs}
    return [
        spec.name
        for spec in model.inputs
        if spec.name not in state_inputs and (len(spec.shape) >= 2 or (len(spec.shape) == 1 and spec.name in ids))
    ]


def reshape_inputs(model: ir.Model, batch_size: int | None, time_steps: int | str | None, where: str) -> ir.Model:
    """``model`` with a fixed batch (None: keep) and time length (an int, "dynamic" for an open axis, or
    None: keep)."""
    timed = set(time_inputs(model)) if time_steps is not None else set()
    if time_steps is not None and not timed:
        raise BadOptions(f"{where}: --time-steps: the model has no input with a time axis.")
    inputs = []
    for spec in model.inputs:
        shape = spec.shape
        if spec.name in timed:
            shape = (None if time_steps == "dynamic" else time_steps, *shape[1:])  # type: ignore[assignment]
        batch = batch_size if batch_size is not None else spec.batch_size
        inputs.append(replace(spec, shape=shape, batch_size=batch))
    return replace(model, inputs=tuple(inputs))
