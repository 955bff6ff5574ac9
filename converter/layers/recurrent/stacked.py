"""``RNN(StackedRNNCells([...]))``: one ``Recurrent`` op per cell, run one after the other.

At each time step Keras feeds cell k's output to cell k+1, so the stack computes exactly what a chain of
recurrent layers computes in which every inner layer returns its sequence: each cell becomes one fused
ONNX node (``rnn/cell_0/LSTM``, ``rnn/cell_1/LSTM``), and in the NumPy runtime one ``run_recurrent``. What
the stack does as a whole is done once, around the chain:

- go_backwards reverses the input and the mask once (Keras reverses them before its loop), so every cell
  runs forward over the reversed steps and the output comes in processing order, as in Keras;
- a mask is given to every cell: a masked step keeps every cell's state, and the last cell's output
  follows the RNN's rule (repeat the previous output, or zeros with zero_output_for_mask); the inner
  cells' outputs at masked steps are never read, because the next cell skips those steps too;
- return_sequences applies to the last cell; return_state returns every cell's states in Keras' order
  (cell 0's h (, c), then cell 1's, ...), and initial_state takes them in that order;
- the states of cell k are named ``cell_k`` wherever a recurrent layer's directions are named
  (``rnn/cell_0/h0`` state inputs of the ONNX graph, ``rnn/cell_0/W_i`` tensors of the npz/JSON exports).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from converter.errors import UnsupportedLayer
from converter.layers.base import (
    Array,
    LayoutTensor,
    Mask,
    NamedArray,
    OnnxContext,
    OnnxResult,
    OnnxTensor,
    Op,
    RunContext,
    Shape,
    TorchContext,
    TorchResult,
    flag,
    one_input,
)
from converter.layers.recurrent.layer import Recurrent

if TYPE_CHECKING:
    from converter.layers.pycode import PyContext, PyResult


def cell_name(k: int) -> str:
    return f"cell_{k}"


@dataclass(frozen=True, eq=False)
class Stacked(Op):
    """An RNN of stacked cells (see the module docstring)."""

    op_type: ClassVar[str] = "stacked"
    has_states: ClassVar[bool] = True
    #: The cells in order; all run forward and return no states of their own; the inner ones return
    #: sequences, the last one follows the RNN's return_sequences.
    cells: tuple[Recurrent, ...]
    return_sequences: bool
    return_state: bool
    go_backwards: bool
    stateful: bool

    @classmethod
    def of_cells(cls, cells: list[Recurrent], config: Mapping[str, Any]) -> Stacked:
        """The stack from its cells as read with the RNN's options."""
        return_sequences = flag(config, "return_sequences")
        last = len(cells) - 1
        inner = [
            replace(c, return_sequences=k < last or return_sequences, return_state=False, go_backwards=False)
            for k, c in enumerate(cells)
        ]
        return cls(
            tuple(inner),
            return_sequences,
            flag(config, "return_state"),
            flag(config, "go_backwards"),
            flag(config, "stateful"),
        )

    # what it is ------------------------------------------------------------------------------------------
    @property
    def directions(self) -> dict[str, Recurrent]:
        """The cells by name (``cell_0``, ...): what carries states, as a Bidirectional layer's directions do."""
        return {cell_name(k): c for k, c in enumerate(self.cells)}

    def keeps_states(self) -> bool:
        return self.stateful

    def mask_carrying_outputs(self) -> int:
        """The sequence output carries the mask; states never do (the hook main's Op gained for calls that
        compute unmasked; unused before that)."""
        return 1 if self.return_sequences else 0

    # shapes ----------------------------------------------------------------------------------------------
    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        for cell in self.cells:
            shape = cell.output_shapes([shape])[0]
        states: list[Shape] = [(c.units,) for c in self.cells for _ in c.state_names] if self.return_state else []
        return [shape, *states]

    def state_shapes(self) -> list[Shape]:
        return [(c.units,) for c in self.cells for _ in c.state_names]

    # inspect ---------------------------------------------------------------------------------------------
    def params(self) -> tuple[int, str]:
        parts = [c.formula() for c in self.cells]
        total = sum(n for _, n in parts)
        return total, " + ".join(f"[{expr}]" for expr, _ in parts) + f" = {total}"

    def explained_formula(self) -> str:
        terms = " + ".join(f"{name} [{cell.explained_terms()}]" for name, cell in self.directions.items())
        return f"{terms} = {self.params()[0]}"

    def tensor_shapes(self) -> list[dict[str, Any]]:
        return [{**t, "name": f"{d}/{t['name']}"} for d, cell in self.directions.items() for t in cell.tensor_shapes()]

    def options(self) -> dict[str, Any]:
        options = {
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
        }
        return options | {"cells": [_cell_options(c) for c in self.cells]}

    def weight_items(self) -> list[NamedArray]:
        return [(f"{d}/{k}", a) for d, c in self.directions.items() for k, a in c.weights.items()]

    def activations(self) -> list[tuple[str, str]]:
        return [a for c in self.cells for a in c.activations()]

    # NumPy -----------------------------------------------------------------------------------------------
    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        from converter.layers.recurrent.cell import Cell, run_recurrent, start_states

        x, mask = xs[0], masks[0]
        cells = run.cache.get("cells")
        if cells is None:  # the stacked weights, made once per runtime
            cells = run.cache["cells"] = {d: Cell.of(c, run.keras_major) for d, c in self.directions.items()}
        starts = start_states(self, run, x.shape[0])  # type: ignore[arg-type]
        if self.go_backwards:
            x, run_mask = x[:, ::-1], None if mask is None else mask[:, ::-1]
        else:
            run_mask = mask
        finals = {}
        for d in self.directions:
            found: dict[str, Array] | None = {} if run.trace is not None else None
            x, finals[d] = run_recurrent(cells[d], x, run_mask, starts[d], found)
            if run.trace is not None and found:  # a go_backwards stack ran reversed: the input's order again
                run.trace |= {
                    f"{run.node.name}/{d}/{k}": v[:, ::-1] if self.go_backwards else v for k, v in found.items()
                }
        run.final_states = finals
        outs: list[Array] = [x]
        out_masks: list[Mask] = [mask if self.return_sequences else None]  # Keras keeps the input mask
        if self.return_state:
            flat = [s for states in finals.values() for s in states]
            outs += flat
            out_masks += [None] * len(flat)
        return outs, out_masks

    # ONNX ------------------------------------------------------------------------------------------------
    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        from converter.ir import Node
        from converter.layers.base import FLOAT
        from converter.layers.recurrent.onnx_node import emit_recurrent, layer_start, reverse_time

        b, p = g.b, g.p
        start, with_io = layer_start(self, g)  # type: ignore[arg-type]
        x, in_mask = g.as_float(xs[0]), masks[0]
        mask = in_mask
        if self.go_backwards:
            x = reverse_time(b, x, f"{p}/x_reversed")
            mask = None if mask is None else reverse_time(b, mask, f"{p}/mask_reversed")
        finals: dict[str, list[str]] = {}
        for d, cell in self.directions.items():
            node = Node(f"{p}/{d}", g.node.keras_class, cell, g.node.inputs)
            result = emit_recurrent(
                b,
                node,
                x,
                mask,
                None if start is None else {"": start[d]},
                need_finals=with_io or self.return_state,
                keras_major=g.keras_major,
            )
            x = result.outputs[0]
            if with_io or self.return_state:
                finals[d] = result.finals[""]
        if with_io or self.return_state:
            g.final_states = finals
        outs = [x]
        out_masks: list[str | None] = [in_mask if self.return_sequences else None]
        if self.return_state:
            flat = [s for d in self.directions for s in finals[d]]
            outs, out_masks = outs + flat, out_masks + [None] * len(flat)
        return outs, out_masks, [FLOAT]

    # PyTorch source ----------------------------------------------------------------------------------
    def check_torch_source(self, node: Any) -> None:
        """Each cell is its own torch module (or Keras' loop): each refuses what it cannot compute."""
        from converter.layers.recurrent.torch_code import check_source

        for cell in self.cells:
            check_source(node, cell)

    def torch_module(self, g: TorchContext) -> str | None:
        from converter.layers.recurrent.torch_code import stacked_module

        return stacked_module(self, g)

    def torch_weights(self, attribute: str) -> list[LayoutTensor]:
        """Module k's state_dict (``rnn.1.weight_ih_l0``): one single-layer module per cell."""
        from converter.layers.recurrent.torch_code import torch_weights

        return [t for k, c in enumerate(self.cells) for t in torch_weights(c, f"{attribute}.{k}")]

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        from converter.layers.recurrent.torch_code import stacked_forward

        return stacked_forward(self, g, outs, xs[0], masks[0])

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers.recurrent.python_code import stacked_code

        return stacked_code(self, g, outs, xs[0], masks[0])

    # npz / JSON ------------------------------------------------------------------------------------------
    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        from converter.layers.recurrent.layouts import layout_tensors, torch_stacked

        if layout == "pytorch":
            return torch_stacked(name, list(self.cells))
        return [t for d, c in self.directions.items() for t in layout_tensors(f"{name}/{d}", c, layout)]

    def check_layout(self, node: Any, layout: str) -> None:
        from converter.layers.recurrent.layouts import check_layout

        for cell in self.cells:
            check_layout(node, cell, layout)
        if layout == "pytorch" and len({_torch_key(c) for c in self.cells}) > 1:
            raise UnsupportedLayer(
                f"layer '{node.name}' ({node.keras_class}): its stacked cells differ in kind, units or options; "
                "PyTorch's multi-layer nn.LSTM/nn.GRU/nn.RNN (num_layers) needs them equal. "
                "Use the keras or onnx layout."
            )

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> Stacked:
        from converter.layers.recurrent.layouts import direction_weights

        cells = []
        for k, (d, c) in enumerate(self.directions.items()):
            if layout == "pytorch":  # one multi-layer module: cell k is layer k
                weights = direction_weights(name, "", 0, c, layout, got, level=k)
            else:
                weights = direction_weights(f"{name}/{d}", "", 0, c, layout, got)
            cells.append(replace(c, weights=weights))
        return replace(self, cells=tuple(cells))

    def config(self) -> dict[str, Any]:
        return {
            "cells": [c.config() for c in self.cells],
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Stacked:
        cells = tuple(Recurrent.from_config(c) for c in config["cells"])
        if not cells:
            raise ValueError("a stacked RNN needs at least one cell")
        return cls(
            cells, config["return_sequences"], config["return_state"], config["go_backwards"], config["stateful"]
        )


def _cell_options(cell: Recurrent) -> dict[str, Any]:
    """A cell's own options (the sequence options are the stack's)."""
    options = cell.options()
    for key in ("return_sequences", "return_state", "go_backwards", "stateful"):
        options.pop(key, None)
    return options


def _torch_key(c: Recurrent) -> tuple:
    """What the layers of one multi-layer torch module share."""
    return (c.kind, c.units, c.use_bias, c.activation, c.recurrent_activation, c.reset_after)
