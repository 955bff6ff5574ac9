"""A recurrent layer in the generated PyTorch source: one ``nn.LSTM``/``nn.GRU``/``nn.RNN`` per Keras layer
(a Bidirectional one ``bidirectional=True``), with Keras' semantics written around it.

The rules are those of ``cell.py`` (NumPy) and ``onnx_node.py`` (ONNX): go_backwards runs and returns the
reversed sequence; the last output of a backward direction is its output at time 0, not ``out[:, -1]``;
masked steps are skipped wherever they are (``pack_padded_sequence`` only skips them at the end, so each
sample's valid steps are moved to the front first, as ``onnx_node.compact`` does, and the outputs put
back at Keras' steps); a sample without a valid step keeps its initial states. Weights load from the
``pytorch`` layout (``layouts.py``), which also refuses what torch's modules cannot compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from converter.errors import UnsupportedLayer
from converter.layers.base import LayoutTensor, TorchContext, TorchResult
from converter.layers.recurrent.layer import Bidirectional, Recurrent, RecurrentLayer
from converter.layers.recurrent.layouts import check_layout, layout_tensors
from converter.layers.recurrent.torch_loop import loop_call, loop_module, loop_weights, needs_loop

if TYPE_CHECKING:
    from converter.layers.recurrent.stacked import Stacked

_MODULE = {"lstm": "nn.LSTM", "gru": "nn.GRU", "simple_rnn": "nn.RNN"}

#: The generated file's helper for masked layers (and the one it calls).
MASKED_RNN = '''def _at_steps(y, index, keep):
    """y[b, index[b, t]] where keep[b, t], else zeros."""
    y = y.gather(1, index.unsqueeze(-1).expand(-1, -1, y.shape[-1]))
    return torch.where(keep.unsqueeze(-1), y, 0.0)


def _keras_masked_rnn(rnn, x, mask, hx=None, zero_masked=False):
    """Run a torch RNN module as Keras runs a masked layer: masked steps are skipped wherever they are.

    pack_padded_sequence only skips steps at the end, so each sample's valid steps are moved to the front
    (in order), run packed, and the outputs put back at Keras' steps: a masked step repeats the previous
    output (for the reverse direction the next step's), zeros before any valid one; zeros at every masked
    step with zero_masked (inside Bidirectional). A sample without a valid step keeps its states hx.
    """
    steps, valid = x.shape[1], mask.long()
    order = torch.argsort(1 - valid, dim=1, stable=True)  # valid steps first, both groups in time order
    x = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    lengths = valid.sum(dim=1)
    packed = nn.utils.rnn.pack_padded_sequence(
        x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
    )
    y, states = rnn(packed, hx)
    y = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=steps)[0]
    count = valid.cumsum(dim=1)  # valid steps up to and including each step
    units = rnn.hidden_size
    parts = [_at_steps(y[..., :units], (count - 1).clamp(min=0), mask if zero_masked else count > 0)]
    if rnn.bidirectional:
        before = count - valid
        keep = mask if zero_masked else before < lengths.unsqueeze(1)
        parts.append(_at_steps(y[..., units:], before.clamp(max=steps - 1), keep))
    empty = (lengths == 0).view(1, -1, 1)
    finals = states if isinstance(states, tuple) else (states,)
    starts = hx if isinstance(hx, tuple) else (hx,) * len(finals)
    kept = tuple(torch.where(empty, 0.0 if s0 is None else s0, s) for s, s0 in zip(finals, starts))
    return torch.cat(parts, dim=-1), kept if isinstance(states, tuple) else kept[0]
'''


def check_source(node: object, layer: RecurrentLayer) -> None:
    """What the generated code cannot compute: the two directions of a Bidirectional layer differing (in
    size, or in activations where Keras' loop runs), and, where torch's modules run, what they refuse."""
    directions = list(layer.directions.values())
    if len({(r.kind, r.units, r.input_dim, r.use_bias, r.reset_after) for r in directions}) > 1:
        raise UnsupportedLayer(
            f"layer '{node.name}' (Bidirectional): its forward and backward layers differ in kind, size or "  # type: ignore[attr-defined]
            "options; the generated code runs both directions in one torch module. to-npz/to-json in the keras "
            "layout convert it."
        )
    if not needs_loop(layer):
        check_layout(node, layer, "pytorch")
        return
    if len({(r.activation, r.recurrent_activation) for r in directions}) > 1:
        raise UnsupportedLayer(
            f"layer '{node.name}' (Bidirectional): its forward and backward layers have different activations; "  # type: ignore[attr-defined]
            "the generated loop runs both directions with one. to-npz/to-json in the keras layout convert it."
        )


def torch_weights(layer: RecurrentLayer, attribute: str) -> list[LayoutTensor]:
    """The state_dict of the module ``torch_module`` gives: the pytorch layout's, or Keras' own weights."""
    return loop_weights(layer, attribute) if needs_loop(layer) else layout_tensors(attribute, layer, "pytorch")


def _first(layer: RecurrentLayer) -> Recurrent:
    return next(iter(layer.directions.values()))


def torch_module(layer: RecurrentLayer, g: TorchContext) -> str:
    """``nn.LSTM(3, 5, batch_first=True)``; its state_dict keys are the pytorch layout's."""
    r = _first(layer)
    if isinstance(layer, Bidirectional) and (layer.forward.go_backwards or not layer.backward.go_backwards):
        raise g.unsupported(
            "its forward layer has go_backwards=True (or its backward layer False); a torch bidirectional "
            "module reads forward and then backward. Save the model with the default directions."
        )
    if needs_loop(layer):  # Keras' own loop: exact where torch's modules compute something else
        return loop_module(layer, g)
    args = [str(r.input_dim), str(r.units)]
    if r.kind == "simple_rnn" and r.activation == "relu":
        args.append('nonlinearity="relu"')
    if not r.use_bias:
        args.append("bias=False")
    args.append("batch_first=True")
    if isinstance(layer, Bidirectional):
        args.append("bidirectional=True")
    return f"{_MODULE[r.kind]}({', '.join(args)})"


def _start(layer: RecurrentLayer, g: TorchContext) -> str:
    """The modules' hx: states wired in the Keras graph (forward's h, c, then backward's), a stateful
    layer's carried states, or None (zeros)."""
    r = _first(layer)
    per = len(r.state_names)
    if g.initial_state:
        groups = [g.initial_state[k * per : (k + 1) * per] for k in range(len(layer.directions))]
        if len(groups) == 1:
            stacked = [f"{s}.unsqueeze(0)" for s in groups[0]]
        else:
            stacked = [f"torch.stack([{', '.join(group[k] for group in groups)}])" for k in range(per)]
        return f"({', '.join(stacked)})" if per == 2 else stacked[0]
    if layer.keeps_states():
        return f"self.states.get({g.node.name!r})"
    return "None"


def torch_forward(layer: RecurrentLayer, g: TorchContext, outs: list[str], x: str, mask: str | None) -> TorchResult:
    """The lines of one layer call: the full output sequence of every direction (aligned to the steps
    Keras returns), then what the Keras layer returns picked from it."""
    r, lines = _first(layer), []
    bidi = isinstance(layer, Bidirectional)
    in_mask = mask
    if not bidi and r.go_backwards:
        reversed_x = g.var("reversed")
        lines.append(f"{reversed_x} = {x}.flip(1)  # go_backwards: Keras runs and returns the reversed sequence")
        x = reversed_x
        if mask is not None:
            reversed_mask = g.var("mask_reversed")
            lines.append(f"{reversed_mask} = {mask}.flip(1)")
            mask = reversed_mask
    start = _start(layer, g)
    needs_states = r.return_state or layer.keeps_states()
    whole = r.return_sequences and (not bidi or layer.merge_mode == "concat")  # the module's output as it is
    seq, states = outs[0] if whole else g.var("seq"), g.var("states") if needs_states else "_"
    if needs_loop(layer):
        lines.append(f"{seq}, {states} = {loop_call(layer, g, x, mask, start)}")
    elif mask is None:
        hx = "" if start == "None" else f", {start}"
        lines.append(f"{seq}, {states} = {g.module}({x}{hx})")
    else:
        helper = g.helper(MASKED_RNN)
        zero = ", zero_masked=True" if r.zero_output_for_mask else ""
        hx = "" if start == "None" else f", {start}"
        lines.append(f"{seq}, {states} = {helper}({g.module}, {x}, {mask}{hx}{zero})")
    if layer.keeps_states():
        carried = f"tuple(s.detach() for s in {states})" if r.kind == "lstm" else f"{states}.detach()"
        lines.append(f"self.states[{g.node.name!r}] = {carried}  # stateful: the next call starts here")
    results = _outputs(layer, seq, states, lines)
    lines += [f"{name} = {value}" for name, value in zip(outs, results, strict=True) if name != value]
    out_mask = in_mask if r.return_sequences else None  # Keras keeps the input mask, even go_backwards
    carrying = layer.mask_carrying_outputs()
    return lines, [out_mask if k < carrying else None for k in range(len(outs))]


def _outputs(layer: RecurrentLayer, seq: str, states: str, lines: list[str]) -> list[str]:
    """The expressions of the Keras outputs: the sequence or last output (merged), then the states."""
    r = _first(layer)
    lstm = r.kind == "lstm"
    if isinstance(layer, Recurrent):
        results = [seq if r.return_sequences else f"{seq}[:, -1]"]
        if r.return_state:
            results += [f"{states}[0][0]", f"{states}[1][0]"] if lstm else [f"{states}[0]"]
        return results
    units = r.units
    fw, bw = f"{seq}[..., :{units}]", f"{seq}[..., {units}:]"  # torch aligns the backward outputs to time
    if r.return_sequences and layer.merge_mode == "concat":
        results = [seq]
    else:
        if not r.return_sequences:  # the backward direction ends at time 0
            lines.append("# the last outputs: forward's at the last step, backward's at step 0, where it ends")
            fw, bw = f"{seq}[:, -1, :{units}]", f"{seq}[:, 0, {units}:]"
        results = {
            "concat": lambda: [f"torch.cat([{fw}, {bw}], dim=-1)"],
            "sum": lambda: [f"{fw} + {bw}"],
            "ave": lambda: [f"({fw} + {bw}) / 2"],
            "mul": lambda: [f"{fw} * {bw}"],
            None: lambda: [fw, bw],
        }[layer.merge_mode]()
    if r.return_state:
        directions = range(2)
        results += (
            [f"{states}[{k}][{d}]" for d in directions for k in range(2)]
            if lstm
            else [f"{states}[{d}]" for d in directions]
        )
    return results


# --- RNN(StackedRNNCells): one torch module per cell --------------------------------------------------


def stacked_module(layer: Stacked, g: TorchContext) -> str:
    """``nn.ModuleList([nn.LSTM(3, 4, batch_first=True), nn.GRU(4, 5, batch_first=True)])``: cell k is
    module k, whatever the cells' kinds and sizes."""
    return f"nn.ModuleList([{', '.join(torch_module(cell, g) for cell in layer.cells)}])"


def _cell_start(layer: Stacked, g: TorchContext, k: int, offset: int) -> str:
    """Cell k's hx: its states among the Keras graph's (cell 0's h (, c), then cell 1's ...), its carried
    states when stateful, or None (zeros)."""
    cell = layer.cells[k]
    if g.initial_state:
        states = [f"{s}.unsqueeze(0)" for s in g.initial_state[offset : offset + len(cell.state_names)]]
        return f"({', '.join(states)})" if cell.kind == "lstm" else states[0]
    if layer.keeps_states():
        return f"self.states.get({f'{g.node.name}/cell_{k}'!r})"
    return "None"


def stacked_forward(layer: Stacked, g: TorchContext, outs: list[str], x: str, mask: str | None) -> TorchResult:
    """Keras feeds cell k's output to cell k+1 at every step, which is running the cells one after the
    other over the whole sequence (a masked step skipped by every cell); go_backwards reverses the input
    and the mask once, before the first cell."""
    lines, in_mask = [], mask
    if layer.go_backwards:
        reversed_x = g.var("reversed")
        lines.append(f"{reversed_x} = {x}.flip(1)  # go_backwards: Keras runs and returns the reversed sequence")
        x = reversed_x
        if mask is not None:
            reversed_mask = g.var("mask_reversed")
            lines.append(f"{reversed_mask} = {mask}.flip(1)")
            mask = reversed_mask
    finals, offset = [], 0
    for k, cell in enumerate(layer.cells):
        seq, states = g.var(f"cell_{k}"), g.var(f"cell_{k}_states")
        start = _cell_start(layer, g, k, offset)
        offset += len(cell.state_names)
        hx = "" if start == "None" else f", {start}"
        module = f"{g.module}[{k}]"
        if needs_loop(cell):
            cell_g = TorchContext(g.node, g.keras_major, module, g.shapes, new_name=g.new_name)
            cell_g.helpers = g.helpers
            lines.append(f"{seq}, {states} = {loop_call(cell, cell_g, x, mask, start)}")
        elif mask is None:
            lines.append(f"{seq}, {states} = {module}({x}{hx})")
        else:
            zero = ", zero_masked=True" if cell.zero_output_for_mask else ""
            lines.append(f"{seq}, {states} = {g.helper(MASKED_RNN)}({module}, {x}, {mask}{hx}{zero})")
        if layer.keeps_states():
            carried = f"tuple(s.detach() for s in {states})" if cell.kind == "lstm" else f"{states}.detach()"
            lines.append(
                f"self.states[{f'{g.node.name}/cell_{k}'!r}] = {carried}  # stateful: the next call starts here"
            )
        finals += [f"{states}[0][0]", f"{states}[1][0]"] if cell.kind == "lstm" else [f"{states}[0]"]
        x = seq
    results = [x if layer.return_sequences else f"{x}[:, -1]"] + (finals if layer.return_state else [])
    lines += [f"{name} = {value}" for name, value in zip(outs, results, strict=True)]
    out_mask = in_mask if layer.return_sequences else None  # Keras keeps the input mask, even go_backwards
    return lines, [out_mask] + [None] * (len(outs) - 1)
