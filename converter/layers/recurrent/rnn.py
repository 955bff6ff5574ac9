"""``keras.layers.RNN`` of a cell: ``LSTMCell``, ``GRUCell``, ``SimpleRNNCell``, tf.keras' ``PeepholeLSTMCell``, or
``StackedRNNCells`` of them.

An RNN of one cell computes exactly what the LSTM, GRU or SimpleRNN layer of that cell computes, so it is
read into the same ``Recurrent`` op: the RNN's config gives the sequence options (return_sequences,
return_state, go_backwards, stateful, zero_output_for_mask), the cell's config the cell's (units,
activations, use_bias, reset_after). A stack of cells becomes a ``Stacked`` op (``stacked.py``) holding one
``Recurrent`` per cell. Weights arrive cell after cell, each in ``get_weights()`` order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from converter.layers.base import NamedArray, Op, ReadContext, flag, float32_only, inner_layer
from converter.layers.recurrent.layer import PEEPHOLES, Recurrent, RecurrentKind

#: Keras cell class -> (recurrent kind, has peepholes).
CELL_CLASSES: dict[str, tuple[RecurrentKind, bool]] = {
    "LSTMCell": ("lstm", False),
    "GRUCell": ("gru", False),
    "SimpleRNNCell": ("simple_rnn", False),
    "PeepholeLSTMCell": ("lstm", True),  # tf.keras 2.x: tf.keras.experimental.PeepholeLSTMCell
}
#: The RNN options that shape the sequence; every cell of a stack gets them (Stacked adjusts the inner ones).
_SEQUENCE_OPTIONS = ("return_sequences", "return_state", "go_backwards", "stateful", "zero_output_for_mask")


def cell_configs(config: Mapping[str, Any], ctx: ReadContext) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """The (class, config) of each cell of an RNN config, and whether they form a ``StackedRNNCells``."""
    allowed = (*CELL_CLASSES, "StackedRNNCells")
    class_name, cell = inner_layer(config.get("cell"), ctx, allowed)
    if class_name != "StackedRNNCells":
        return [(class_name, cell)], False
    float32_only(cell, ctx)
    entries = cell.get("cells")
    if not isinstance(entries, list) or not entries:
        raise ctx.bad("its StackedRNNCells config lists no cells.")
    return [inner_layer(entry, ctx, tuple(CELL_CLASSES)) for entry in entries], True


def array_count(class_name: str, config: Mapping[str, Any]) -> int:
    """How many weight arrays a cell of ``class_name`` with ``config`` has (kernel, recurrent kernel, bias, and
    a peephole LSTM's three peephole vectors)."""
    n = 3 if config.get("use_bias", True) else 2
    return n + (len(PEEPHOLES) if CELL_CLASSES.get(class_name, ("", False))[1] else 0)


def read_cell(
    class_name: str, cell: Mapping[str, Any], rnn: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext
) -> Recurrent:
    """One cell with the RNN's sequence options, as the LSTM/GRU/SimpleRNN layer it equals."""
    kind, peephole = CELL_CLASSES[class_name]
    if flag(rnn, "time_major"):
        raise ctx.unsupported("time_major=True is not supported; save the model with batch-major inputs.")
    merged = {**cell, **{k: rnn[k] for k in _SEQUENCE_OPTIONS if k in rnn}}
    return Recurrent.of_kind(kind, merged, arrays, ctx, peephole=peephole)


def read_single(config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Recurrent:
    """An RNN of one cell (also a direction of a Bidirectional RNN): a stack is refused here."""
    cells, stacked = cell_configs(config, ctx)
    if stacked:
        raise ctx.unsupported(
            "an RNN of StackedRNNCells inside Bidirectional is not supported; wrap each cell's RNN in its own "
            "Bidirectional layer."
        )
    float32_only(config, ctx)
    return read_cell(*cells[0], config, arrays, ctx)


def read_rnn(config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Op:
    """``keras.layers.RNN``: a ``Recurrent`` op for one cell, a ``Stacked`` op for ``StackedRNNCells``."""
    from converter.layers.recurrent.stacked import Stacked

    float32_only(config, ctx)
    cells, stacked = cell_configs(config, ctx)
    if not stacked:
        return read_cell(*cells[0], config, arrays, ctx)
    ops, start = [], 0
    for k, (class_name, cell) in enumerate(cells):
        n = array_count(class_name, cell)
        part = arrays[start : start + n]
        if len(part) != n:
            raise ctx.bad(f"the file holds too few weight arrays for cell {k} ({class_name}) of its StackedRNNCells.")
        ops.append(read_cell(class_name, cell, config, part, ctx.inner(f"cell_{k}", class_name)))
        start += n
    if start != len(arrays):
        raise ctx.bad(f"the file holds {len(arrays)} weight arrays for it, but its {len(cells)} cells need {start}.")
    return Stacked.of_cells(ops, config)
