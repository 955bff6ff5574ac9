"""One fused ONNX LSTM/GRU/RNN node per Keras recurrent layer, with Keras' masks, go_backwards and states.

ONNX's ``sequence_lens`` only knows post-padding, while Keras skips masked steps anywhere. So a masked
batch is compacted first: per sample, a stable permutation moves the valid steps to the front, the
fused op runs forward with ``sequence_lens`` = number of valid steps (onnxruntime then skips the
padding), and its outputs are gathered back to the original steps with Keras' rule at masked steps
(repeat the previous output, zeros before the first valid step, or zeros where ``zero_output_for_mask``).
Only ``Y`` before each row's length is ever read (the last output and final ``h`` at ``length-1``, not
``Y_h``), so runtimes that ignore ``sequence_lens`` give the same answer; a masked Bidirectional layer is
two forward nodes, the backward one over its own reversed compaction. The one exception is the final
``c`` of a masked LSTM, which only ``Y_c`` holds (``converter.export.onnx_portability`` finds it). Recurrent ops run in
layout 0 (onnxruntime rejects layout=1), with Transposes around them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from converter.export.onnx_builder import FLOAT, INT32, INT64, INT64_MAX, INT64_MIN, Builder
from converter.ir import Node
from converter.layers.base import OnnxContext, OnnxResult, OnnxTensor
from converter.layers.recurrent.layer import Bidirectional, Recurrent, RecurrentLayer
from converter.layers.recurrent.onnx_unrolled import unrolled_rnn, unrolls
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
    return compacted, Compaction(mask, mask_int, count, length, empty, seq_lens)


def expand_sequence(b: Builder, y: str, c: Compaction, zero_masked: bool, p: str) -> str:
    """Compacted (B, T, H) output back to the original steps, as Keras fills masked steps.

    Step t shows compacted output count[t]-1 (zeros while that is -1): only slots before ``length`` are
    ever read, so the result does not depend on what a runtime writes past a row's length.
    """
    i64 = np.int64
    index = b.op("Max", [b.op("Sub", [c.count, b.scalar(1, i64)], f"{p}/slot"), b.scalar(0, i64)], f"{p}/index")
    keep = c.mask if zero_masked else b.op("Greater", [c.count, b.scalar(0, i64)], f"{p}/has_output")
    gathered = b.op("GatherND", [y, b.unsqueeze(index, [2], f"{p}/index_nd")], f"{p}/gathered", batch_dims=1)
    keep3 = b.unsqueeze(keep, [2], f"{p}/keep")
    return b.op("Where", [keep3, gathered, b.scalar(0.0)], f"{p}/y")


def last_valid(b: Builder, y: str, c: Compaction, p: str) -> str:
    """(B, H): the compacted output at slot ``length-1`` (slot 0 for an empty row, masked by the caller).

    This is what ``Y_h`` holds in a runtime that honours ``sequence_lens``, read from ``Y`` instead so that
    runtimes ignoring ``sequence_lens`` (OpenVINO with a symbolic batch, onnx's ReferenceEvaluator) agree.
    """
    i64 = np.int64
    slot = b.op("Max", [b.op("Sub", [c.length, b.scalar(1, i64)], f"{p}/last_slot"), b.scalar(0, i64)], f"{p}/slot")
    gathered = b.op("GatherND", [y, b.unsqueeze(slot, [2], f"{p}/slot_nd")], f"{p}/at_last", batch_dims=1)
    return b.op("Reshape", [gathered, b.i64(0, -1)], f"{p}/last")


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
    """What the helpers of ``emit_recurrent`` share about one fused node."""

    b: Builder
    prefix: str  # the layer's name
    directions: dict[str, Recurrent]  # "" or "forward"/"backward" (or one of them) -> layer
    steps: int | None = None  # the time axis when the graph fixes it (a SimpleRNN may then be unrolled)

    def name(self, direction: str, label: str) -> str:
        """Readable names: ``lstm/h``, ``bidirectional/forward/h``."""
        return "/".join(part for part in (self.prefix, direction, label) if part)

    @property
    def tag(self) -> str:
        """The node's own prefix: ``lstm``, or ``bidirectional/backward`` for one direction of a split layer."""
        return self.name(next(iter(self.directions)) if len(self.directions) == 1 else "", "")

    def pick(self, t: str, j: int, axis: int, label: str) -> str:
        """Direction ``j`` of a stacked ONNX output (the axis disappears)."""
        return self.b.op("Gather", [t, self.b.scalar(j, np.int64)], label, axis=axis)


@dataclass
class _Fused:
    """One fused node's outputs, per direction (B, ...) and batch-first."""

    sequences: list[str]  # (B, T, H), Keras' rule at masked steps (ONNX's reverse direction: in time order)
    last: list[str]  # (B, H): the last output as Keras returns it without return_sequences
    finals: dict[str, list[str]]  # direction -> final states


def _fused(
    call: _Call, x: str, comp: Compaction | None, start: dict[str, list[str]] | None, keras_major: int, finals: bool
) -> _Fused:
    """The fused LSTM/GRU/RNN node over ``x`` (batch-first; compacted when ``comp``), and its outputs.

    With a compaction only one direction runs per node, forward, so every value read from it (``Y`` before
    a row's length) is fixed by the valid steps alone, whatever a runtime does with ``sequence_lens``.
    ``finals``: emit the final states (only then is a masked LSTM's ``Y_c`` read).
    """
    b, t, dirs = call.b, call.tag, list(call.directions.values())
    first = dirs[0]
    initial = {}
    if start is not None:
        for k, s_name in enumerate(first.state_names):
            parts = [b.unsqueeze(start[n][k], [0], call.name(n, f"initial_{s_name}")) for n in call.directions]
            initial[s_name] = parts[0] if len(parts) == 1 else b.op("Concat", parts, f"{t}/initial_{s_name}", axis=0)
    x_tbi = b.op("Transpose", [x], f"{t}/X", perm=[1, 0, 2])
    if unrolls(first, len(dirs), call.steps, keras_major):  # faster than the fused RNN: onnx_unrolled.py
        y, y_h = unrolled_rnn(b, t, first, x_tbi, initial.get("h", ""), call.steps)  # type: ignore[arg-type]
        return _outputs(call, y, y_h, [], comp, start, finals)
    w, r, bias = recurrent_weights(b, t, dirs)
    inputs = [x_tbi, w, r, bias]
    inputs += [comp.seq_lens if comp else "", initial.get("h", "")]  # sequence_lens: onnxruntime skips padding
    if first.kind == "lstm":
        inputs += [initial.get("c", ""), peephole_weights(b, t, dirs)]
    while not inputs[-1]:  # trailing optional inputs are left out, inner ones are ""
        inputs.pop()
    attrs: dict = {"hidden_size": first.units}
    if len(dirs) == 2:
        attrs["direction"] = "bidirectional"
    attrs |= activation_attrs(dirs, keras_major)
    if first.kind == "gru" and linear_before_reset(dirs):
        attrs["linear_before_reset"] = 1
    op = ONNX_OP[first.kind]
    out_names = [f"{t}/Y", f"{t}/Y_h"] + ([f"{t}/Y_c"] if first.kind == "lstm" else [])
    y, y_h, *y_c = b.op_n(op, inputs, f"{t}/{op}", out_names, **attrs)  # every output named (OpenCV needs it)
    return _outputs(call, y, y_h, y_c, comp, start, finals)


def _outputs(
    call: _Call,
    y: str,
    y_h: str,
    y_c: list[str],
    comp: Compaction | None,
    start: dict[str, list[str]] | None,
    finals: bool,
) -> _Fused:
    """Keras' outputs from the recurrent op's ``Y`` (T, D, B, H), ``Y_h`` and ``Y_c`` (D, B, H)."""
    b, t, dirs = call.b, call.tag, list(call.directions.values())
    ys = b.op("Transpose", [y], f"{t}/Y_batch_first", perm=[2, 0, 1, 3])  # (B, T, D, H)
    result = _Fused([], [], {})
    for j, (n, layer) in enumerate(call.directions.items()):
        seq = b.op("Reshape", [ys, b.i64(0, 0, -1)], f"{t}/y") if len(dirs) == 1 else call.pick(ys, j, 2, f"{t}/y")
        starts = start[n] if start is not None else None
        if comp is None:
            h = call.pick(y_h, j, 0, call.name(n, "h_out"))
            result.sequences.append(seq)
            result.last.append(h)
            if finals:
                result.finals[n] = [h] + [call.pick(c, j, 0, call.name(n, "c_out")) for c in y_c]
            continue
        h = last_valid(b, seq, comp, call.name(n, "h"))
        if finals:
            raw = [h] + [call.pick(c, j, 0, call.name(n, "c_out")) for c in y_c]
            # A row with no valid step keeps its initial state (onnxruntime would give zeros).
            result.finals[n] = [
                b.op("Where", [comp.empty, starts[k] if starts else b.scalar(0.0), s], call.name(n, f"{s_name}_final"))
                for k, (s, s_name) in enumerate(zip(raw, layer.state_names, strict=True))
            ]
        result.sequences.append(expand_sequence(b, seq, comp, layer.zero_output_for_mask, call.name(n, "")))
        # Zeros when no step is valid; with zero_output_for_mask zeros unless the last processed step is valid.
        if layer.zero_output_for_mask:
            keep = b.slice(comp.mask, [-1], [INT64_MAX], [1], call.name(n, "last_valid"))
        else:
            keep = b.op("Not", [comp.empty], call.name(n, "not_empty"))
        result.last.append(b.op("Where", [keep, h, b.scalar(0.0)], call.name(n, "last_output")))
    return result


def _run(
    call: _Call,
    x: str,
    mask: str | None,
    start: dict[str, list[str]] | None,
    reverse: bool,
    keras_major: int,
    finals: bool,
) -> _Fused:
    """One direction in processing order: ``reverse`` runs it over the reversed sequence (go_backwards)."""
    b, t = call.b, call.tag
    if reverse:
        x = reverse_time(b, x, f"{t}/x_reversed")
        mask = None if mask is None else reverse_time(b, mask, f"{t}/mask_reversed")
    comp = None
    if mask is not None:
        x, comp = compact(b, x, mask, t)
    return _fused(call, x, comp, start, keras_major, finals)


def emit_recurrent(
    b: Builder,
    node: Node,
    x: str,
    mask: str | None,
    start: dict[str, list[str]] | None,
    *,
    keras_major: int,
    need_finals: bool = False,
    steps: int | None = None,
) -> RecurrentOut:
    """Emit one layer call. ``start``: direction -> initial (B, units) states, or None for zeros;
    ``need_finals``: the final states are wanted without return_state (state outputs); ``steps``: the
    time axis when the graph fixes it.

    A masked Bidirectional layer becomes two forward nodes, the backward one over its own reversed
    compaction, so that it starts at each row's last valid step in every runtime (ONNX's reverse
    direction would start at the padding of a runtime that ignores ``sequence_lens``).
    """
    check_recurrent(node, keras_major)
    layer, p = node.layer, node.name
    merge_mode = layer.merge_mode if isinstance(layer, Bidirectional) else None
    first = next(iter(layer.directions.values()))
    finals = need_finals or first.return_state
    if isinstance(layer, Recurrent):
        call = _Call(b, p, layer.directions, steps)
        fused = _run(call, x, mask, start, layer.go_backwards, keras_major, finals)
    elif mask is None:  # one bidirectional node: no sequence_lens, nothing to depend on
        fused = _fused(_Call(b, p, layer.directions), x, None, start, keras_major, finals)  # Y is in time order
    else:
        fw = _run(_Call(b, p, {"forward": layer.forward}), x, mask, start, False, keras_major, finals)
        bw = _run(_Call(b, p, {"backward": layer.backward}), x, mask, start, True, keras_major, finals)
        # Keras returns the backward sequence in the original time order.
        bw.sequences = [reverse_time(b, bw.sequences[0], f"{p}/backward/y_in_time")]
        fused = _Fused(fw.sequences + bw.sequences, fw.last + bw.last, fw.finals | bw.finals)
    outs = merge(b, merge_mode, fused.sequences if first.return_sequences else fused.last, p)
    out_mask = mask if first.return_sequences else None  # Keras keeps the input mask, even go_backwards
    masks: list[str | None] = [out_mask] * len(outs)
    if first.return_state:
        flat = [s for n in layer.directions for s in fused.finals[n]]
        outs, masks = outs + flat, masks + [None] * len(flat)
    return RecurrentOut(outs, masks, fused.finals)


def has_state_io(layer: RecurrentLayer, state_io: bool) -> bool:
    """Whether the graph carries this layer's states in and out: always for stateful layers."""
    return state_io or layer.keeps_states()


def state_base(node_name: str, direction: str) -> str:
    """``lstm`` or ``bidirectional/forward``: the prefix of a layer's state inputs and outputs."""
    return f"{node_name}/{direction}" if direction else node_name


def layer_start(layer: RecurrentLayer, g: OnnxContext) -> tuple[dict[str, list[str]] | None, bool]:
    """Per direction (or stacked cell) the start states of a layer call: Keras inputs, state inputs of the
    graph, or None (zeros); and whether the graph carries the layer's states in and out.

    State inputs are plain required graph inputs (no initializer: runtimes and optimisers that drop inputs
    with defaults would otherwise run from zero states silently), shaped (graph batch, units).
    """
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
    elif with_io:
        start = {}
        for name, d in directions.items():
            start[name] = []
            for s_name in d.state_names:
                input_name = f"{state_base(p, name)}/{s_name}0"
                b.graph.input.append(helper.make_tensor_value_info(input_name, FLOAT, [g.batch, d.units]))
                start[name].append(input_name)
    return start, with_io


def emit_layer(layer: RecurrentLayer, g: OnnxContext, x: OnnxTensor, mask: str | None) -> OnnxResult:
    """A recurrent layer call: its start states, the fused node(s), and the final states for the graph's
    state outputs when it carries them."""
    start, with_io = layer_start(layer, g)
    steps = x.shape[1] if isinstance(x.shape[1], int) else None
    result = emit_recurrent(
        g.b, g.node, g.as_float(x), mask, start, keras_major=g.keras_major, need_finals=with_io, steps=steps
    )
    if with_io or layer.return_state:
        g.final_states = result.finals
    return result.outputs, result.masks, [FLOAT]


def state_output_index(layer: RecurrentLayer, index: int) -> tuple[str, str] | None:
    """``(direction, state)`` when output ``index`` of a layer call is a ``return_state`` state, else None."""
    if not layer.return_state:
        return None
    states = [(n, s) for n, d in layer.directions.items() for s in d.state_names]
    sequences = 2 if isinstance(layer, Bidirectional) and layer.merge_mode is None else 1
    k = index - sequences
    return states[k] if 0 <= k < len(states) else None
