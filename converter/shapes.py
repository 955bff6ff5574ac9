"""The shape of every tensor of a model, from each layer op's own shape rule (batch axis excluded).

Also the place where a layer is checked against what feeds it: an LSTM whose kernel expects 3 features
fed with 4 is reported here, naming the layer.
"""

from __future__ import annotations

from converter import ir
from converter.layers.base import Shape, ShapeMismatch

__all__ = ["ShapeMismatch", "infer_shapes", "output_shapes"]


def output_shapes(layer: ir.Layer, shapes: list[Shape]) -> list[Shape]:
    """The shapes of every output of ``layer`` when fed tensors of ``shapes``."""
    return layer.output_shapes(shapes)


def infer_shapes(inputs: tuple[ir.InputSpec, ...], nodes: tuple[ir.Node, ...]) -> dict[ir.TensorRef, Shape]:
    """The shape of every tensor of a model, checking each node against what feeds it."""
    shapes: dict[ir.TensorRef, Shape] = {ir.TensorRef(s.name, 0): s.shape for s in inputs}
    for node in nodes:
        try:
            extra = (node.mask,) if node.mask else ()
            missing = [r for r in (*node.inputs, *node.initial_state, *extra) if r not in shapes]
            if missing:
                raise ShapeMismatch(f"its input {missing[0].node}:{missing[0].index} does not exist")
            outs = node.layer.output_shapes([shapes[r] for r in node.inputs])
            if node.initial_state:
                expected = node.layer.state_shapes()
                if not expected:
                    raise ShapeMismatch("only recurrent layers take initial states")
                got = [shapes[r] for r in node.initial_state]
                if got != expected:
                    raise ShapeMismatch(f"its initial states have shapes {got}, but it needs {expected}")
        except ShapeMismatch as exc:
            raise ShapeMismatch(str(exc), node) from None
        for index, shape in enumerate(outs):
            shapes[ir.TensorRef(node.name, index)] = shape
    return shapes
