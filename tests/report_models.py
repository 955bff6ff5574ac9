"""What the visual report must draw for a model, counted from the model itself, and a big model built in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter import ir
from converter.api import LoadedModel
from converter.layers.reading import ReadContext
from converter.layers.recurrent.layer import Recurrent

#: traced names per step of each kind of cell (what ``LoadedModel.trace`` returns per direction)
TRACED = {"lstm": 6, "gru": 4, "simple_rnn": 1}


def expected_panels(model: ir.Model) -> dict[str, int]:
    """Per panel kind how many the report of ``model`` must hold: one layer graph; per recurrent layer one
    cell diagram per distinct cell; one heatmap per gate block (W and U of every gate, every direction),
    one bias chart per direction with biases, drawn once for a shared layer; one plot per traced array."""
    counts = {"graph": 1, "cell": 0, "heatmap": 0, "bias": 0, "trace": 0}
    for node in model.recurrent_nodes:
        directions = ir.recurrent_directions(node.layer).values()
        counts["cell"] += len({(d.kind, d.activation, d.recurrent_activation, d.reset_after) for d in directions})
        counts["trace"] += sum(TRACED[d.kind] for d in directions)
        if node.weights_of is None:
            counts["heatmap"] += sum(2 * len(d.gates) for d in directions)
            counts["bias"] += sum(1 for d in directions if d.use_bias or d.peephole)
    return counts


def stacked_lstms(units: int, input_dim: int, layers: int = 2, steps: int = 12, seed: int = 0) -> LoadedModel:
    """``layers`` LSTM(units) layers on (steps, input_dim) inputs with random weights, without Keras."""
    rng = np.random.default_rng(seed)
    nodes, previous, dim = [], "x", input_dim
    for k in range(layers):
        name = f"lstm_{k}"
        shapes = {"kernel": (dim, 4 * units), "recurrent_kernel": (units, 4 * units), "bias": (4 * units,)}
        arrays = [(key, (rng.normal(size=shape) * 0.1).astype(np.float32)) for key, shape in shapes.items()]
        ctx = ReadContext(Path("big.keras"), name, "LSTM", 3)
        op = Recurrent.of_kind("lstm", {"units": units, "return_sequences": k < layers - 1}, arrays, ctx)
        nodes.append(ir.Node(name, "LSTM", op, (ir.TensorRef(previous),)))
        previous, dim = name, units
    spec = ir.InputSpec("x", (steps, input_dim))
    model = ir.Model("big", (spec,), tuple(nodes), (ir.TensorRef(previous),), (previous,), "3.15.1", "big.keras")
    return LoadedModel(model, Path("big.keras"))
