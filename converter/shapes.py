"""Output shapes of each IR layer from its input shapes (batch axis excluded, None = any length).

Also the place where a layer is checked against what feeds it: an LSTM whose kernel expects 3 features
fed with 4 is reported here, naming the layer.
"""

from __future__ import annotations

from converter import ir
from converter.ir import Shape


class ShapeMismatch(ValueError):
    """Raised with a message that the caller prefixes with the file and layer (``node``, when known)."""

    def __init__(self, message: str, node: ir.Node | None = None) -> None:
        super().__init__(message)
        self.node = node


def _recurrent(layer: ir.Recurrent, shape: Shape) -> list[Shape]:
    if len(shape) != 2:
        raise ShapeMismatch(f"expects (time, features) inputs but gets shape {shape}")
    if shape[1] is not None and shape[1] != layer.input_dim:
        raise ShapeMismatch(f"its kernel expects {layer.input_dim} features but it is fed {shape[1]}")
    out: Shape = (shape[0], layer.units) if layer.return_sequences else (layer.units,)
    states: list[Shape] = [(layer.units,)] * len(layer.state_names) if layer.return_state else []
    return [out, *states]


def _bidirectional(layer: ir.Bidirectional, shape: Shape) -> list[Shape]:
    fw, *fw_states = _recurrent(layer.forward, shape)
    bw, *bw_states = _recurrent(layer.backward, shape)
    if fw != bw:
        raise ShapeMismatch(f"its forward and backward outputs differ ({fw} and {bw})")
    if layer.merge_mode is None:
        return [fw, bw, *fw_states, *bw_states]
    merged = (*fw[:-1], 2 * fw[-1]) if layer.merge_mode == "concat" else fw  # type: ignore[operator]
    return [merged, *fw_states, *bw_states]


def _concatenate(layer: ir.Concatenate, shapes: list[Shape]) -> Shape:
    rank = len(shapes[0])
    axis = layer.axis if layer.axis >= 0 else layer.axis + rank + 1  # Keras counts the batch axis
    if not 1 <= axis <= rank or any(len(s) != rank for s in shapes):
        raise ShapeMismatch(f"cannot concatenate shapes {shapes} on axis {layer.axis}")
    axis -= 1
    for s in shapes[1:]:
        if any(a != b and None not in (a, b) for i, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if i != axis):
            raise ShapeMismatch(f"cannot concatenate shapes {shapes} on axis {layer.axis}")
    sizes = [s[axis] for s in shapes]
    total = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
    return (*shapes[0][:axis], total, *shapes[0][axis + 1 :])


def _compatible(a: Shape, b: Shape) -> bool:
    return len(a) == len(b) and all(x == y or None in (x, y) for x, y in zip(a, b, strict=True))


def output_shapes(layer: ir.Layer, shapes: list[Shape]) -> list[Shape]:
    """The shapes of every output of ``layer`` when fed tensors of ``shapes``."""
    if isinstance(layer, ir.Concatenate | ir.Add):
        if len(shapes) < 2:
            raise ShapeMismatch(f"needs at least two inputs, gets {len(shapes)}")
        if isinstance(layer, ir.Concatenate):
            return [_concatenate(layer, shapes)]
        if not all(_compatible(s, shapes[0]) for s in shapes):
            raise ShapeMismatch(f"cannot add shapes {shapes}")
        return [shapes[0]]
    if len(shapes) != 1:
        raise ShapeMismatch(f"takes one input, gets {len(shapes)}")
    (shape,) = shapes
    if isinstance(layer, ir.Recurrent):
        return _recurrent(layer, shape)
    if isinstance(layer, ir.Bidirectional):
        return _bidirectional(layer, shape)
    if isinstance(layer, ir.Dense):
        rows = layer.weights["W"].shape[0]
        if not shape or (shape[-1] is not None and shape[-1] != rows):
            raise ShapeMismatch(f"its kernel expects {rows} features but it is fed shape {shape}")
        return [(*shape[:-1], layer.units)]
    if isinstance(layer, ir.Embedding):
        return [(*shape, layer.output_dim)]
    if isinstance(layer, ir.ReduceAny):
        axis = layer.axis - 1 if layer.axis > 0 else layer.axis + len(shape)  # Keras counts the batch axis
        if not 0 <= axis < len(shape):
            raise ShapeMismatch(f"cannot reduce axis {layer.axis} of shape {shape}")
        return [(*shape[:axis], *((1,) if layer.keepdims else ()), *shape[axis + 1 :])]
    return [shape]  # Masking, Activation, Identity


def state_shapes(layer: ir.Recurrent | ir.Bidirectional) -> list[Shape]:
    """Shapes of the initial states a recurrent layer accepts, in Keras' order."""
    directions = ir.recurrent_directions(layer).values()
    return [(d.units,) for d in directions for _ in d.state_names]


def infer_shapes(inputs: tuple[ir.InputSpec, ...], nodes: tuple[ir.Node, ...]) -> dict[ir.TensorRef, Shape]:
    """The shape of every tensor of a model, checking each node against what feeds it."""
    shapes: dict[ir.TensorRef, Shape] = {ir.TensorRef(s.name, 0): s.shape for s in inputs}
    for node in nodes:
        try:
            extra = (node.mask,) if node.mask else ()
            missing = [r for r in (*node.inputs, *node.initial_state, *extra) if r not in shapes]
            if missing:
                raise ShapeMismatch(f"its input {missing[0].node}:{missing[0].index} does not exist")
            outs = output_shapes(node.layer, [shapes[r] for r in node.inputs])
            if node.initial_state:
                if not isinstance(node.layer, ir.Recurrent | ir.Bidirectional):
                    raise ShapeMismatch("only recurrent layers take initial states")
                expected = state_shapes(node.layer)
                got = [shapes[r] for r in node.initial_state]
                if got != expected:
                    raise ShapeMismatch(f"its initial states have shapes {got}, but it needs {expected}")
        except ShapeMismatch as exc:
            raise ShapeMismatch(str(exc), node) from None
        for index, shape in enumerate(outs):
            shapes[ir.TensorRef(node.name, index)] = shape
    return shapes
