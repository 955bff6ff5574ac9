"""Build the ONNX graph of an IR model: one fused LSTM/GRU/RNN node per recurrent layer, no Loop/Scan/If.

Graph inputs are the Keras inputs (batch-first, Keras names), then, for layers with state I/O, one
``<layer>/h0`` (``/c0``) input per state: a plain required input (no initializer, which some runtimes
and optimisers drop), shaped with the graph's batch axis. Graph outputs are the Keras outputs, then each
such layer's final states ``<layer>/h`` (``/c``): feeding them back as the next call's ``h0``/``c0``
streams a long sequence in chunks, like a stateful Keras layer. A ``return_state`` output is named the
same way (``<layer>/h``), so no state name can collide with another layer's output; the Keras output names
are in ``metadata_props`` (``keras_outputs``).

Each layer op emits its own nodes (``Op.to_onnx`` in ``converter.layers``); this module walks the model.
"""

from __future__ import annotations

import onnx
from onnx import helper

from converter import __version__, ir
from converter.errors import BadOptions
from converter.export.onnx_builder import BOOL, FLOAT, INT64, Builder, ExternalData
from converter.layers.base import Dim, OnnxContext
from converter.layers.base import OnnxTensor as Tensor
from converter.layers.recurrent.onnx_node import has_state_io, state_base, state_output_index

#: Deliberately conservative: opset 13 (ONNX 1.8, 2020) is read by onnxruntime >= 1.6 and by the TensorRT and
#: OpenVINO releases of the last years, its IR version (7) by all of them, and it already has every op the
#: graph needs (Unsqueeze axes as an input, GatherND batch_dims, single-axis Softmax, CumSum, Range).
DEFAULT_OPSET = 13
#: The lowest opset whose op signatures the graph uses (Unsqueeze/Squeeze take axes as an input from 13).
MIN_OPSET = 13
#: The highest opset that onnx 1.23 and onnxruntime 1.32 both accept (see FACTS.md).
MAX_OPSET = min(28, onnx.defs.onnx_opset_version())


def graph_output_names(model: ir.Model) -> list[str]:
    """The ONNX name of each Keras output: its Keras name, or ``<layer>/h`` (``/c``, ``<layer>/forward/h``)
    for a recurrent layer's ``return_state`` output (Keras' ``lstm_1`` could be another layer's name)."""
    nodes = {node.name: node for node in model.nodes}
    names: list[str] = []
    for ref, keras_name in zip(model.outputs, model.output_names, strict=True):
        node = nodes.get(ref.node)
        state = state_output_index(node.layer, ref.index) if node is not None and node.layer.has_states else None
        name = f"{state_base(node.name, state[0])}/{state[1]}" if state else keras_name  # type: ignore[union-attr]
        names.append(name if name not in names else keras_name)  # the same state output twice
    return names


def state_io_names(model: ir.Model, *, state_io: bool = True) -> tuple[list[str], list[str]]:
    """The graph inputs and outputs ``build_onnx(model, state_io=state_io)`` adds to the Keras ones, in
    graph order. Stateful layers always get them; a layer fed initial states by Keras inputs gets outputs
    only; an output that is already there as a ``return_state`` output is not added again.
    """
    inputs: list[str] = []
    outputs: list[str] = []
    present = set(graph_output_names(model))
    for node in model.recurrent_nodes:
        if not has_state_io(node.layer, state_io):
            continue
        for direction, layer in node.layer.directions.items():
            base = state_base(node.name, direction)
            if not node.initial_state:
                inputs += [f"{base}/{s}0" for s in layer.state_names]
            outputs += [f"{base}/{s}" for s in layer.state_names if f"{base}/{s}" not in present]
    return inputs, outputs


def build_onnx(
    model: ir.Model, *, opset: int = DEFAULT_OPSET, state_io: bool = False, external: ExternalData | None = None
) -> onnx.ModelProto:
    """The ONNX model computing what the Keras model computes, masks and states included.

    With ``external``, weight tensors are written to that file as they are made (ONNX external data), so
    the model holds none of their bytes.

    Raises ``UnsupportedLayer`` for what fused ONNX ops cannot compute exactly, ``BadOptions`` for an
    opset outside ``MIN_OPSET..MAX_OPSET``.

    >>> import converter
    >>> proto = build_onnx(converter.load("fixtures/keras3/tutorial.keras").ir)
    >>> [n.op_type for n in proto.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    ['LSTM']
    >>> [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]
    (['input_layer'], ['dense'])
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise BadOptions(
            f"ONNX opset {opset} is not supported: choose one from {MIN_OPSET} to {MAX_OPSET} "
            f"(default {DEFAULT_OPSET})."
        )
    proto = onnx.ModelProto()
    _GraphBuild(model, Builder(opset, proto.graph, external), state_io).run()
    opset_id = helper.make_opsetid("", opset)
    proto.opset_import.append(opset_id)
    # The lowest IR version for the opset: what older runtimes (which refuse newer IR versions) read.
    proto.ir_version = helper.find_min_ir_version_for([opset_id])
    proto.producer_name = "lstm-convert"
    proto.producer_version = __version__
    return proto


class _GraphBuild:
    """One walk over the IR nodes, keeping each Keras tensor's ONNX name and mask."""

    def __init__(self, model: ir.Model, b: Builder, state_io: bool) -> None:
        self.model, self.b, self.state_io = model, b, state_io
        self.major = model.keras_major
        self.batch: Dim = model.inputs[0].batch_size if model.inputs and model.inputs[0].batch_size else "batch"
        self.values: dict[ir.TensorRef, Tensor] = {}
        self.masks: dict[ir.TensorRef, str | None] = {}
        self.finals: dict[str, dict[str, list[str]]] = {}

    def run(self) -> None:
        b, model = self.b, self.model
        state_inputs, state_outputs = state_io_names(model, state_io=self.state_io)
        output_names = graph_output_names(model)
        for name in [*(s.name for s in model.inputs), *state_inputs, *output_names, *state_outputs]:
            b.reserve(name)
        self._inputs()
        for node in model.nodes:
            self._node(node)
        for ref, name in zip(model.outputs, output_names, strict=True):
            t = self.values[ref]
            b.node("Identity", [t.name], [name], f"output/{name}")
            b.graph.output.append(helper.make_tensor_value_info(name, t.type, list(t.shape)))
        for node in model.recurrent_nodes:
            if has_state_io(node.layer, self.state_io):
                for direction, layer in node.layer.directions.items():
                    base = state_base(node.name, direction)
                    for s_name, final in zip(layer.state_names, self.finals[node.name][direction], strict=True):
                        if f"{base}/{s_name}" not in state_outputs:
                            continue  # a return_state output of that name is there already
                        b.node("Identity", [final], [f"{base}/{s_name}"], f"output/{base}/{s_name}")
                        info = helper.make_tensor_value_info(f"{base}/{s_name}", FLOAT, [self.batch, layer.units])
                        b.graph.output.append(info)
        b.prune([o.name for o in b.graph.output])  # layout changes that cancelled leave unused nodes
        b.graph.name = model.name or "model"

    def _inputs(self) -> None:
        open_time = sum(1 for s in self.model.inputs if s.shape and s.shape[0] is None)
        for spec in self.model.inputs:
            kind = BOOL if spec.dtype == "bool" else FLOAT if spec.dtype.startswith(("float", "bfloat")) else INT64
            dims: list[Dim] = [spec.batch_size or "batch"]
            for k, d in enumerate(spec.shape):
                # "time" when unambiguous; several open-length inputs may differ in length.
                symbol = "time" if k == 0 and open_time == 1 else f"{spec.name}_dim{k + 1}"
                dims.append(symbol if d is None else d)
            self.b.graph.input.append(helper.make_tensor_value_info(spec.name, kind, dims))
            ref = ir.TensorRef(spec.name, 0)
            self.values[ref], self.masks[ref] = Tensor(spec.name, kind, tuple(dims)), None

    def _node(self, node: ir.Node) -> None:
        b, p = self.b, node.name
        xs = [self.values[r] for r in node.inputs]
        ms = [self.masks[r] for r in node.inputs]
        flowing = ms[0]
        if node.mask is not None:  # an explicit mask= replaces the propagated one (like the runtime)
            given = self.values[node.mask]
            ms[0] = given.name if given.type == BOOL else b.op("Cast", [given.name], f"{p}/mask", to=BOOL)
        elif not node.receives_mask:  # computes unmasked; its outputs still carry the flowing mask
            ms[0] = None
        g = OnnxContext(b, node, self.major, self.state_io, self.batch, [self.values[r] for r in node.initial_state])
        b.shared_weights = (f"{p}/", f"{node.weights_of}/") if node.weights_of else None
        outs, out_masks, types = node.layer.to_onnx(g, xs, ms)
        b.shared_weights = None
        if not node.receives_mask:
            carrying = node.layer.mask_carrying_outputs()
            out_masks = [flowing if k < carrying else None for k in range(len(outs))]
        if g.final_states is not None:
            self.finals[node.name] = g.final_states
        shapes = node.layer.output_shapes([x.shape[1:] for x in xs])
        for k, (out, mask) in enumerate(zip(outs, out_masks, strict=True)):
            ref = ir.TensorRef(node.name, k)
            self.values[ref] = Tensor(out, types[min(k, len(types) - 1)], (self.batch, *shapes[k]))
            self.masks[ref] = mask
