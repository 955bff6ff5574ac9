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

GATE_COUNT = {"lstm": 4, "gru": 3, "simple_rnn": 1}


def _recurrent_terms(layer: ir.Recurrent) -> tuple[str, int]:
    """The bracketed sum for one direction, e.g. ``3*5 + 5*5 + 5``, and its value (one gate's worth)."""
    n, h = layer.input_dim, layer.units
    terms, value = [f"{n}*{h}", f"{h}*{h}"], n * h + h * h
    if layer.use_bias:
        terms.append(f"2*{h}" if layer.reset_after else f"{h}")
        value += 2 * h if layer.reset_after else h
    return " + ".join(terms), value


def _recurrent_formula(layer: ir.Recurrent) -> tuple[str, int]:
    terms, value = _recurrent_terms(layer)
    gates = GATE_COUNT[layer.kind]
    total = gates * value
    return (f"{gates}*({terms})" if gates > 1 else terms), total


def params_formula(layer: ir.Layer) -> tuple[int, str]:
    """The parameter count and its formula, the way ``model.summary()`` readers check it."""
    if isinstance(layer, ir.Recurrent):
        expr, total = _recurrent_formula(layer)
        return total, f"{expr} = {total}"
    if isinstance(layer, ir.Bidirectional):
        (fw, n_fw), (bw, n_bw) = _recurrent_formula(layer.forward), _recurrent_formula(layer.backward)
        expr = f"2*[{fw}]" if fw == bw else f"[{fw}] + [{bw}]"
        return n_fw + n_bw, f"{expr} = {n_fw + n_bw}"
    if isinstance(layer, ir.Dense):
        rows = layer.weights["W"].shape[0]
        total = rows * layer.units + (layer.units if layer.use_bias else 0)
        expr = f"{rows}*{layer.units}" + (f" + {layer.units}" if layer.use_bias else "")
        return total, f"{expr} = {total}"
    if isinstance(layer, ir.Embedding):
        total = layer.input_dim * layer.output_dim
        return total, f"{layer.input_dim}*{layer.output_dim} = {total}"
    return 0, ""


def _options(layer: ir.Layer) -> dict[str, Any]:
    if isinstance(layer, ir.Recurrent):
        options: dict[str, Any] = {"units": layer.units, "activation": layer.activation}
        if layer.recurrent_activation is not None:
            options["recurrent_activation"] = layer.recurrent_activation
        options |= {
            "use_bias": layer.use_bias,
            "return_sequences": layer.return_sequences,
            "return_state": layer.return_state,
            "go_backwards": layer.go_backwards,
            "stateful": layer.stateful,
        }
        if layer.kind == "gru":
            options["reset_after"] = layer.reset_after
        return options
    if isinstance(layer, ir.Bidirectional):
        directions = {"forward": _options(layer.forward), "backward": _options(layer.backward)}
        return {"merge_mode": layer.merge_mode, **directions}
    if isinstance(layer, ir.Dense):
        return {"units": layer.units, "activation": layer.activation, "use_bias": layer.use_bias}
    if isinstance(layer, ir.Embedding):
        return {"input_dim": layer.input_dim, "output_dim": layer.output_dim, "mask_zero": layer.mask_zero}
    if isinstance(layer, ir.Masking):
        return {"mask_value": layer.mask_value}
    if isinstance(layer, ir.Activation):
        return {"activation": layer.activation}
    if isinstance(layer, ir.Concatenate | ir.ReduceAny):
        return {"axis": layer.axis}
    if isinstance(layer, ir.NotEqual):
        return {"value": layer.value}
    return {}


def _tensors(layer: ir.Layer) -> list[dict[str, Any]]:
    if isinstance(layer, ir.Bidirectional):
        return [
            {**t, "name": f"{direction}/{t['name']}"}
            for direction, inner in (("forward", layer.forward), ("backward", layer.backward))
            for t in _tensors(inner)
        ]
    weights = getattr(layer, "weights", None) or {}
    return [{"name": name, "shape": list(array.shape)} for name, array in weights.items()]


def _batch_shape(shape: ir.Shape, batch: int | None = None) -> list[int | None]:
    return [batch, *shape]


def summarize(model: ir.Model) -> dict[str, Any]:
    """The ``inspect --json`` document of a model."""
    shapes = infer_shapes(model.inputs, model.nodes)
    layers = []
    for node in model.nodes:
        params, formula = params_formula(node.layer)
        n_out = sum(1 for ref in shapes if ref.node == node.name)
        layers.append(
            {
                "name": node.name,
                "class": node.keras_class,
                "inputs": [f"{r.node}:{r.index}" if r.index else r.node for r in node.inputs],
                "input_shapes": [_batch_shape(shapes[r]) for r in node.inputs],
                "output_shapes": [_batch_shape(shapes[ir.TensorRef(node.name, i)]) for i in range(n_out)],
                "options": _options(node.layer),
                "params": params,
                "formula": formula,
                "tensors": _tensors(node.layer),
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
            {"name": name, "tensor": f"{ref.node}:{ref.index}", "shape": _batch_shape(shapes[ref])}
            for name, ref in zip(model.output_names, model.outputs, strict=True)
        ],
        "layers": layers,
        "total_params": sum(layer["params"] for layer in layers),
    }
