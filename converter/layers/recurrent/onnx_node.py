"""One fused ONNX LSTM/GRU/RNN node per Keras recurrent layer, with Keras' masks, go_backwards and states.

ONNX's ``sequence_lens`` only knows post-padding, while Keras skips masked steps anywhere. So a masked
batch is compacted first: per sample, a stable permutation moves the valid steps to the front, the
fused op runs with ``sequence_lens`` = number of valid steps, and its outputs are gathered back to the
original steps with Keras' rule at masked steps (repeat the previous output, zeros before the first
valid step, or zeros where ``zero_output_for_mask``). ONNX's reverse direction over the compacted
steps is exactly Keras' backward layer, which also skips masked steps. Recurrent ops run in layout 0
(onnxruntime rejects layout=1), with Transposes around them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from converter.export.onnx_builder import FLOAT, INT32, INT64, INT64_MAX, INT64_MIN, Builder
from converter.ir import Node
from converter.layers.base import OnnxContext, OnnxResult, OnnxTensor
from converter.layers.recurrent.layer import Bidirectional, Recurrent, RecurrentLayer
from converter.layers.recurrent.onnx_weights import (
    ONNX_OP,
    activation_attrs,
    check_recurrent,
    linear_before_reset,
    peephole_weights,
    recurrent_weights,
)


@dataclass(frozen=True)
class Compaction:
    """A masked batch whose valid steps were moved to the front (all (B, T) tensors in processing order)."""

    mask: str  # bool
    mask_int: str  # int64 0/1
    count: str  # int64: valid steps at or before t
    length: str  # (B, 1) int64: valid steps in all
    empty: str  # (B, 1) bool: no valid step at all
    last: str  # 0-D int64: T - 1
    seq_lens: str  # (B,) int32, for the fused op


@dataclass
class RecurrentOut:
    outputs: list[str]  # the Keras outputs of the layer call, in Keras' order
    masks: list[str | None]  # the Keras mask of each output
    finals: dict[str, list[str]]  # direction -> final states (B, units), Keras' state order


def reverse_time(b: Builder, x: str, name: str) -> str:
    return b.slice(x, [-1], [INT64_MIN], [1], name, steps=[-1])


def compact(b: Builder, x: str, mask: str, p: str) -> tuple[str, Compaction]:
    """Move each sample's valid steps to the front, keeping their order."""
    i64 = np.int64
    mask_int = b.op("Cast", [mask], f"{p}/mask_int", to=INT64)
    count = b.op("CumSum", [mask_int, b.scalar(1, i64)], f"{p}/valid_count")
    length = b.slice(count, [-1], [INT64_MAX], [1], f"{p}/length")
    steps = b.op("Gather", [b.op("Shape", [mask], f"{p}/mask_shape"), b.scalar(1, i64)], f"{p}/steps", axis=0)
    t = b.op("Range", [b.scalar(0, i64), steps, b.scalar(1, i64)], f"{p}/t")
    # Destination of step t: valid steps to count-1, masked ones after all valid ones, each in order.
    valid_slot = b.op("Sub", [count, b.scalar(1, i64)], f"{p}/valid_slot")
    masked_slot = b.op("Add", [length, b.op("Sub", [t, count], f"{p}/masked_before")], f"{p}/masked_slot")
    destination = b.op("Where", [mask, valid_slot, masked_slot], f"{p}/destination")
    t_all = b.op("Expand", [t, b.op("Shape", [mask_int], f"{p}/mask_int_shape")], f"{p}/t_all")
    # Scattering t to its destination inverts the permutation: order[k] = the step that goes to slot k.
    order = b.op("ScatterElements", [mask_int, destination, t_all], f"{p}/order", axis=1)
    compacted = b.op("GatherND", [x, b.unsqueeze(order, [2], f"{p}/order_nd")], f"{p}/x_compact", batch_dims=1)
    seq_lens = b.op("Cast", [b.op("Reshape", [length, b.i64(-1)], f"{p}/length_flat")], f"{p}/seq_lens", to=INT32)
    empty = b.op("Equal", [length, b.scalar(0, i64)], f"{p}/empty")
    last = b.op("Sub", [steps, b.scalar(1, i64)], f"{p}/last_step")
    return compacted, Compaction(mask, mask_int, count, length, empty, last, seq_lens)


def expand_sequence(b: Builder, y: str, c: Compaction, reverse: bool, zero_masked: bool, p: str) -> str:
    """Compacted (B, T, H) output back to the original steps, as Keras fills masked steps.

    Forward: step t shows compacted output count[t]-1 (zeros while that is -1). Reverse direction:
    a masked step shows the next valid step's output, compacted index count[t]-mask[t] (zeros when
    no valid step follows).
    """
    i64 = np.int64
    if reverse:
        before = b.op("Sub", [c.count, c.mask_int], f"{p}/valid_before")
        index = b.op("Min", [before, c.last], f"{p}/index")
        keep = b.op("Less", [before, c.length], f"{p}/has_output")
    else:
        index = b.op("Max", [b.op("Sub", [c.count, b.scalar(1, i64)], f"{p}/slot"), b.scalar(0, i64)], f"{p}/index")
        keep = b.op("Greater", [c.count, b.scalar(0, i64)], f"{p}/has_output")
    if zero_masked:
        keep = c.mask
    gathered = b.op("GatherND", [y, b.unsqueeze(index, [2], f"{p}/index_nd")], f"{p}/gathered", batch_dims=1)
    keep3 = b.unsqueeze(keep, [2], f"{p}/keep")
    return b.op("Where", [keep3, gathered, b.scalar(0.0)], f"{p}/y")


def merge(b: Builder, mode: str | None, parts: list[str], p: str) -> list[str]:
    """Bidirectional merge, computed like Keras (and the runtime): ave is (fw + bw) / 2."""
    if len(parts) == 1 or mode is None:
        return parts
    if mode == "concat":
        return [b.op("Concat", parts, f"{p}/concat", axis=-1)]
    if mode == "mul":
        return [b.op("Mul", parts, f"{p}/mul")]
    total = b.op("Add", parts, f"{p}/sum")
    return [total if mode == "sum" else b.op("Div", [total, b.scalar(2.0)], f"{p}/ave")]


@dataclass(frozen=True)
class _Call:
    """What the helpers of ``emit_recurrent`` share about one layer call."""

    b: Builder
    prefix: str
    directions: dict[str, Recurrent]  # "" or "forward"/"backward" -> layer

    def name(self, direction: str, label: str) -> str:
        """Readable names: ``lstm/h``, ``bidirectional/forward/h``."""
        return "/".join(part for part in (self.prefix, direction, label) if part)

    def pick(self, t: str, j: int, axis: int, label: str) -> str:
        """Direction ``j`` of a stacked ONNX output (the axis disappears)."""
        return self.b.op("Gather", [t, self.b.scalar(j, np.int64)], label, axis=axis)


def _initial_states(
    call: _Call, x: str, start: dict[str, list[str]], expand: bool
) -> tuple[list[list[str]], dict[str, str]]:
    """Per direction the (B, units) start states, and per state name the stacked (D, B, units) ONNX input."""
    b, first = call.b, next(iter(call.directions.values()))
    starts = [start[n] for n in call.directions]
    if expand:  # a (1, units) default or a fed (batch, units) state, broadcast to (batch, units)
        batch = b.batch_size(x, call.name("", "batch"))
        target = b.op("Concat", [batch, b.i64(first.units)], call.name("", "state_shape"), axis=0)
        starts = [
            [
                b.op("Expand", [s, target], call.name(n, f"{s_name}0_batch"))
                for s, s_name in zip(ss, first.state_names, strict=True)
            ]
            for n, ss in zip(call.directions, starts, strict=True)
        ]
    stacked = {}
    for k, s_name in enumerate(first.state_names):
        parts = [
            b.unsqueeze(ss[k], [0], call.name(n, f"initial_{s_name}"))
            for n, ss in zip(call.directions, starts, strict=True)
        ]
        stacked[s_name] = (
            parts[0] if len(parts) == 1 else b.op("Concat", parts, call.name("", f"initial_{s_name}"), axis=0)
        )
    return starts, stacked


def _final_states(
    call: _Call, state_outs: list[str], comp: Compaction | None, starts: list[list[str]] | None
) -> dict[str, list[str]]:
    """Per direction the final (B, units) states; a sample with no valid step keeps its initial state."""
    b, finals = call.b, {}
    for j, (n, layer) in enumerate(call.directions.items()):
        states = []
        for k, s_name in enumerate(layer.state_names):
            s = call.pick(state_outs[k], j, 0, call.name(n, f"{s_name}_last"))
            if comp is not None:  # onnxruntime gives zeros for sequence_lens 0, not initial_h
                kept = starts[j][k] if starts is not None else b.scalar(0.0)
                s = b.op("Where", [comp.empty, kept, s], call.name(n, s_name))
            states.append(s)
        finals[n] = states
    return finals


def _sequences(call: _Call, y: str, comp: Compaction | None, merge_mode: str | None) -> list[str]:
    """The return_sequences output(s), batch-first, merged like Keras."""
    b = call.b
    ys = b.op("Transpose", [y], call.name("", "Y_batch_first"), perm=[2, 0, 1, 3])  # (B, T, D, H)
    if comp is None and (len(call.directions) == 1 or merge_mode == "concat"):
        return [b.op("Reshape", [ys, b.i64(0, 0, -1)], call.name("", "y"))]  # D*H features in direction order
    parts = []
    for j, (n, layer) in enumerate(call.directions.items()):
        part = call.pick(ys, j, 2, call.name(n, "y_compact" if comp else "y"))
        if comp is not None:
            part = expand_sequence(b, part, comp, j == 1, layer.zero_output_for_mask, call.name("", n))
        parts.append(part)
    return merge(b, merge_mode, parts, call.prefix)


def _last_outputs(call: _Call, y_h: str, comp: Compaction | None, merge_mode: str | None) -> list[str]:
    """The last output when not return_sequences: Y_h, which is the last valid step's output."""
    b, parts = call.b, []
    for j, (n, layer) in enumerate(call.directions.items()):
        h = call.pick(y_h, j, 0, call.name(n, "h_out"))
        if comp is not None:
            # Zeros when no step is valid; with zero_output_for_mask zeros unless the last processed step is
            # valid (for the backward direction, step 0).
            if layer.zero_output_for_mask:
                bounds = ([0], [1]) if j == 1 else ([-1], [INT64_MAX])
                keep = b.slice(comp.mask, *bounds, [1], call.name(n, "last_valid"))
            else:
                keep = b.op("Not", [comp.empty], call.name(n, "not_empty"))
            h = b.op("Where", [keep, h, b.scalar(0.0)], call.name(n, "last_output"))
        parts.append(h)
    return merge(b, merge_mode, parts, call.prefix)


def emit_recurrent(
    b: Builder,
    node: Node,
    x: str,
    mask: str | None,
    start: dict[str, list[str]] | None,
    *,
    expand_start: bool,
    need_finals: bool,
    keras_major: int,
) -> RecurrentOut:
    """Emit one layer call. ``start``: direction -> initial states, (1, units) defaults if ``expand_start``;
    ``need_finals``: compute final states even without return_state (for state outputs)."""
    check_recurrent(node, keras_major)
    layer, p = node.layer, node.name
    call = _Call(b, p, layer.directions)
    dirs = list(call.directions.values())
    first = dirs[0]
    merge_mode = layer.merge_mode if isinstance(layer, Bidirectional) else None
    in_mask = mask
    if isinstance(layer, Recurrent) and layer.go_backwards:
        # Keras processes (and returns) the reversed sequence: reverse it and run forward.
        x = reverse_time(b, x, f"{p}/x_reversed")
        mask = None if mask is None else reverse_time(b, mask, f"{p}/mask_reversed")
    comp = None
    if mask is not None:
        x, comp = compact(b, x, mask, p)
    starts, initial = _initial_states(call, x, start, expand_start) if start is not None else (None, {})

    w, r, bias = recurrent_weights(b, p, dirs)
    inputs = [b.op("Transpose", [x], f"{p}/X", perm=[1, 0, 2]), w, r, bias]
    inputs += [comp.seq_lens if comp else "", initial.get("h", "")]
    if first.kind == "lstm":
        inputs += [initial.get("c", ""), peephole_weights(b, p, dirs)]
    while not inputs[-1]:  # trailing optional inputs are left out, inner ones are ""
        inputs.pop()
    attrs = {"hidden_size": first.units, "direction": "bidirectional" if len(dirs) == 2 else "forward"}
    attrs |= activation_attrs(dirs, keras_major)
    if first.kind == "gru":
        attrs["linear_before_reset"] = linear_before_reset(dirs)
    wanted_states = need_finals or first.return_state
    out_names = [f"{p}/Y" if first.return_sequences else "", f"{p}/Y_h"]
    if first.kind == "lstm":
        out_names.append(f"{p}/Y_c" if wanted_states else "")
    op = ONNX_OP[first.kind]
    y, *state_outs = b.op_n(op, inputs, f"{p}/{op}", out_names, **attrs)

    finals = _final_states(call, state_outs, comp, starts) if wanted_states else {}
    if first.return_sequences:
        outs = _sequences(call, y, comp, merge_mode)
    else:
        outs = _last_outputs(call, state_outs[0], comp, merge_mode)
    out_mask = in_mask if first.return_sequences else None  # Keras keeps the input mask, even go_backwards
    masks: list[str | None] = [out_mask] * len(outs)
    if first.return_state:
        flat = [s for n in call.directions for s in finals[n]]
        outs, masks = outs + flat, masks + [None] * len(flat)
    return RecurrentOut(outs, masks, finals)


def has_state_io(layer: RecurrentLayer, state_io: bool) -> bool:
    """Whether the graph carries this layer's states in and out: always for stateful layers."""
    return state_io or layer.keeps_states()


def state_base(node_name: str, direction: str) -> str:
    """``lstm`` or ``bidirectional/forward``: the prefix of a layer's state inputs and outputs."""
    return f"{node_name}/{direction}" if direction else node_name


def layer_start(layer: RecurrentLayer, g: OnnxContext) -> tuple[dict[str, list[str]] | None, bool]:
    """Per direction (or stacked cell) the start states of a layer call: Keras inputs, state inputs of the
    graph (``(1, units)`` zeros by default, to be broadcast to the batch), or None (zeros); and whether the
    graph carries the layer's states in and out."""
    b, p = g.b, g.p
    directions = layer.directions
    with_io = has_state_io(layer, g.state_io)
    start: dict[str, list[str]] | None = None
    if g.initial_state:  # Keras inputs: forward direction's states first, then backward's
        flat = [g.as_float(t) for t in g.initial_state]
        start, k = {}, 0
        for name, d in directions.items():
            start[name] = flat[k : k + len(d.state_names)]
            k += len(d.state_names)
    elif with_io:  # graph inputs that default to (1, units) zeros, broadcast to the batch
        start = {}
        for name, d in directions.items():
            start[name] = []
            for s_name in d.state_names:
                input_name = f"{state_base(p, name)}/{s_name}0"
                b.graph.input.append(helper.make_tensor_value_info(input_name, FLOAT, ["batch", d.units]))
                b.weight(input_name, np.zeros((1, d.units), np.float32), exact=True)
                start[name].append(input_name)
    return start, with_io


def emit_layer(layer: RecurrentLayer, g: OnnxContext, x: OnnxTensor, mask: str | None) -> OnnxResult:
    """A recurrent layer call: its start states (Keras inputs, state inputs, or zeros), the fused node,
    and the final states for the graph's state outputs when it carries them."""
    start, with_io = layer_start(layer, g)
    result = emit_recurrent(
        g.b,
        g.node,
        g.as_float(x),
        mask,
        start,
        expand_start=start is not None and not g.initial_state,
        need_finals=with_io,
        keras_major=g.keras_major,
    )
    if with_io:
        g.final_states = result.finals
    return result.outputs, result.masks, [FLOAT]
