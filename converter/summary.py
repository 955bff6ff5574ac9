"""``inspect``: a gate-level ``model.summary()`` of an IR model, as a JSON-able document.

Every layer gets its class, shapes, the options that change what it computes, its parameter count with
the formula people learn from the tutorials (LSTM(5) on 3 features: ``4*(3*5 + 5*5 + 5) = 180``) and
every named tensor with its shape. The document is valid against ``schemas/inspect.schema.json``.

>>> import converter
>>> doc = summarize(converter.load("fixtures/keras3/tutorial.keras").ir)
>>> doc["layers"][0]["formula"], doc["total_params"]
('4*(3*5 + 5*5 + 5) = 180', 186)
"""

from __future__ import annotations

from typing import Any

from converter import ir
from converter.shapes import infer_shapes


def _batch_shape(shape: ir.Shape, batch: int | None = None) -> list[int | None]:
    return [batch, *shape]


def summarize(model: ir.Model) -> dict[str, Any]:
    """The ``inspect --json`` document of a model."""
    shapes = infer_shapes(model.inputs, model.nodes)
    # A model of fixed batch (stateful layers) has it on every tensor, as Keras' summary shows it.
    batch = next((s.batch_size for s in model.inputs if s.batch_size), None)
    layers = []
    for node in model.nodes:
        params, formula = node.layer.params()
        explained = node.layer.explained_formula()
        if node.weights_of is not None:  # Keras counts a shared layer's weights once
            params, formula = 0, f"shares the weights of '{node.weights_of}'"
            explained = formula
        n_out = sum(1 for ref in shapes if ref.node == node.name)
        layers.append(
            {
                "name": node.name,
                "class": node.keras_class,
                "inputs": [f"{r.node}:{r.index}" if r.index else r.node for r in node.inputs],
                "input_shapes": [_batch_shape(shapes[r], batch) for r in node.inputs],
                "output_shapes": [_batch_shape(shapes[ir.TensorRef(node.name, i)], batch) for i in range(n_out)],
                "options": node.layer.options(),
                "params": params,
                "formula": formula,
                **({"explained": explained} if explained else {}),
                "tensors": [] if node.weights_of else node.layer.tensor_shapes(),
            }
        )
    return {
        "model": model.name,
        "source": model.source,
        "keras_version": model.keras_version,
        "inputs": [
            {"name": s.name, "shape": _batch_shape(s.shape, s.batch_size), "dtype": s.dtype} for s in model.inputs
        ],
        "outputs": [
            {"name": name, "tensor": f"{ref.node}:{ref.index}", "shape": _batch_shape(shapes[ref], batch)}
            for name, ref in zip(model.output_names, model.outputs, strict=True)
        ],
        "layers": layers,
        "total_params": sum(layer["params"] for layer in layers),
    }
