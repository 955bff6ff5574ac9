"""A recurrent layer in the standalone NumPy script: one plainly written function per direction, the gates
named as the tutorials name them and a plain loop over the time steps.

The rules are those of ``cell.py`` (the NumPy runtime): go_backwards runs over the steps in reverse and
returns the outputs in that (processing) order; a masked step is skipped (the states stay) and its
output repeats the previous one (zeros before the first valid step), or is zeros with
zero_output_for_mask (inside Bidirectional); a Bidirectional layer's backward outputs are put back in
time order before the merge. States come from the Keras graph (``initial_state=``), or for a stateful
layer from the ``states`` dict the caller passes to ``predict``, which gets the final states back.
"""

from __future__ import annotations

from converter.gates import gate_tensor_name
from converter.layers.pycode import PyContext, PyResult
from converter.layers.recurrent.layer import Bidirectional, Recurrent
from converter.layers.recurrent.stacked import Stacked

_CLASS = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}

#: Tutorial names of the gate pre-activation each Keras gate letter computes (LSTM c is c_tilde, GRU h h_tilde).
_GATE_VAR = {("lstm", "c"): "c_tilde", ("gru", "h"): "h_tilde"}

STARTS = '''def carried(states, name, count):
    """A stateful layer's states from the caller's dict (None: start from zeros, as after reset_states)."""
    if states is None or name not in states:
        return [None] * count
    return list(states[name])'''


def _weights(g: PyContext, r: Recurrent, prefix: str) -> list[str]:
    """``W_i, W_f = WEIGHTS[...], WEIGHTS[...]`` lines: the layer's gate tensors under their own names."""
    lines = []
    groups = ["W", "U"] + (["b"] if r.use_bias else []) + (["rb"] if r.use_bias and r.reset_after else [])
    groups += ["P"] if r.peephole else []
    for group in groups:
        names = [n for n in r.weights if n.partition("_")[0] == group]
        if not names:
            continue
        values = [g.weight(f"{prefix}{n}", r.weights[n]) for n in names]
        line = f"{', '.join(names)} = {', '.join(values)}"
        lines += [line] if len(line) <= 110 else [f"{n} = {v}" for n, v in zip(names, values, strict=True)]
    return lines


def _term(r: Recurrent, gate: str, recurrent: str = "h") -> str:
    """``x_t @ W_i + h @ U_i + b_i`` (the bias where the layer has one)."""
    w = gate_tensor_name("W", gate)
    u = gate_tensor_name("U", gate)
    b = f" + {gate_tensor_name('b', gate)}" if r.use_bias else ""
    return f"x_t @ {w} + {recurrent} @ {u}{b}"


def _step(g: PyContext, r: Recurrent) -> list[str]:
    """One time step: new states from ``x_t`` and the previous states, in the tutorials' words."""

    def act(expr: str) -> str:
        return g.apply(r.activation, expr)

    def rec(expr: str) -> str:
        return g.apply(r.recurrent_activation or "linear", expr)

    if r.kind == "simple_rnn":
        return [f"h = {act(_term(r, ''))}"]
    if r.kind == "lstm":
        peep = {k: f" + P_{k} * c" for k in "ifo"} if r.peephole else dict.fromkeys("ifo", "")
        return [
            f"i = {rec(_term(r, 'i') + peep['i'])}  # input gate",
            f"f = {rec(_term(r, 'f') + peep['f'])}  # forget gate",
            f"c_tilde = {act(_term(r, 'c'))}  # candidate cell state",
            *([] if r.peephole else [f"o = {rec(_term(r, 'o'))}  # output gate"]),
            "c = f * c + i * c_tilde",
            *([f"o = {rec(_term(r, 'o') + peep['o'])}  # output gate (sees the new c)"] if r.peephole else []),
            f"h = o * {act('c')}",
        ]
    b, rb = ("b_{}", "rb_{}") if r.use_bias else ("", "")

    def plus(template: str, gate: str) -> str:
        return f" + {template.format(gate)}" if template else ""

    if r.reset_after:  # Keras' default: the reset gate multiplies h @ U_h after the recurrent bias
        z = rec(f"x_t @ W_z{plus(b, 'z')} + h @ U_z{plus(rb, 'z')}")
        reset = rec(f"x_t @ W_r{plus(b, 'r')} + h @ U_r{plus(rb, 'r')}")
        candidate = act(f"x_t @ W_h{plus(b, 'h')} + r * (h @ U_h{plus(rb, 'h')})")
        which = "reset_after=True"
    else:
        z, reset = rec(_term(r, "z")), rec(_term(r, "r"))
        candidate = act(f"x_t @ W_h + (r * h) @ U_h{plus(b, 'h')}")
        which = "reset_after=False"
    return [
        f"z = {z}  # update gate",
        f"r = {reset}  # reset gate",
        f"h_tilde = {candidate}  # candidate ({which})",
        "h = z * h + (1 - z) * h_tilde",
    ]


def direction_function(g: PyContext, r: Recurrent, label: str, prefix: str, masked: bool) -> str:
    """Define ``def <label>(x, [mask,] h, c)`` returning ``(output, h, c)``: the output sequence (in
    processing order) with return_sequences, else the last output; ``prefix`` of the weight keys."""
    states = list(r.state_names)
    args = ", ".join(["x", *(["mask"] if masked else []), *states])
    what = "the output sequence" if r.return_sequences else "the last output"
    doc = (
        f"{_CLASS[r.kind]}({r.units}){' go_backwards' if r.go_backwards else ''}: returns {what}, {', '.join(states)}."
    )
    body = _weights(g, r, prefix)
    body += ["batch, steps = x.shape[0], x.shape[1]"]
    body += [f"{s} = np.zeros((batch, {r.units}), np.float32) if {s} is None else {s}" for s in states]
    body += [f"output = np.zeros((batch, {r.units}), np.float32)  # the last output (zeros before any step)"]
    if r.return_sequences:
        body.append("outputs = []")
    order = "reversed(range(steps))" if r.go_backwards else "range(steps)"
    comment = "  # go_backwards: the last step first" if r.go_backwards else ""
    body.append(f"for t in {order}:{comment}")
    loop = ["x_t = x[:, t]"]
    if masked:
        loop.append(f"{', '.join(s + '_prev' for s in states)} = {', '.join(states)}")
    loop += _step(g, r)
    if masked:
        rule = "zeros" if r.zero_output_for_mask else "the previous output"
        loop += [
            f"keep = mask[:, t, None]  # a masked step is skipped: the states stay, the output is {rule}",
            *(f"{s} = np.where(keep, {s}, {s}_prev)" for s in states),
            f"output = np.where(keep, h, {'0.0' if r.zero_output_for_mask else 'output'})",
        ]
    else:
        loop.append("output = h")
    if r.return_sequences:
        loop.append("outputs.append(output)")
    body += [f"    {line}" for line in loop]
    result = "np.stack(outputs, axis=1)" if r.return_sequences else "output"
    body.append(f"return {', '.join([result, *states])}")
    return g.function(label, args, doc, body)


def _starts(g: PyContext, count: int, stateful: bool) -> tuple[list[str], list[str]]:
    """Lines and the variables of the layer's initial states (graph inputs, carried, or None)."""
    if g.initial_state:
        return [], list(g.initial_state)
    if not stateful:
        return [], ["None"] * count
    start = g.var("start")
    return [f"{start} = {g.helper(STARTS)}(states, {g.node.name!r}, {count})"], [f"{start}[{k}]" for k in range(count)]


def _keep(g: PyContext, finals: list[str], stateful: bool) -> list[str]:
    if not stateful:
        return []
    return [
        "if states is not None:  # stateful: the next call starts here",
        f"    states[{g.node.name!r}] = ({', '.join(finals)},)",
    ]


def recurrent_code(layer: Recurrent, g: PyContext, outs: list[str], x: str, mask: str | None) -> PyResult:
    """A plain LSTM/GRU/SimpleRNN layer call."""
    fn = direction_function(g, layer, g.node.name, "", mask is not None)
    lines, starts = _starts(g, len(layer.state_names), layer.stateful)
    seq = outs[0]
    finals = [g.var(s) for s in layer.state_names]
    args = ", ".join([x, *([mask] if mask else []), *starts])
    lines.append(f"{seq}, {', '.join(finals)} = {fn}({args})")
    lines += _keep(g, finals, layer.stateful)
    if layer.return_state:
        lines += [f"{o} = {f}" for o, f in zip(outs[1:], finals, strict=True)]
    out_mask = mask if layer.return_sequences else None  # Keras keeps the input mask, even go_backwards
    return lines, [out_mask if k < layer.mask_carrying_outputs() else None for k in range(len(outs))]


def bidirectional_code(layer: Bidirectional, g: PyContext, outs: list[str], x: str, mask: str | None) -> PyResult:
    """Both directions, the backward outputs put back in time order, then merged by merge_mode."""
    count = len(layer.forward.state_names)
    lines, starts = _starts(g, 2 * count, layer.keeps_states())
    seqs, finals = {}, []
    for k, (d, r) in enumerate(layer.directions.items()):
        fn = direction_function(g, r, f"{g.node.name}_{d}", f"{d}/", mask is not None)
        short = {"forward": "fw", "backward": "bw"}[d]
        seqs[d] = g.var(f"{short}_seq")
        states = [g.var(f"{short}_{s}") for s in r.state_names]
        finals += states
        args = ", ".join([x, *([mask] if mask else []), *starts[k * count : (k + 1) * count]])
        lines.append(f"{seqs[d]}, {', '.join(states)} = {fn}({args})")
    fw, bw = seqs["forward"], seqs["backward"]
    if layer.return_sequences:
        lines.append(f"{bw} = {bw}[:, ::-1]  # the backward outputs back in time order")
    merged = {
        "concat": [f"np.concatenate([{fw}, {bw}], axis=-1)"],
        "sum": [f"{fw} + {bw}"],
        "ave": [f"({fw} + {bw}) / 2"],
        "mul": [f"{fw} * {bw}"],
        None: [fw, bw],
    }[layer.merge_mode]
    lines += _keep(g, finals, layer.keeps_states())
    results = merged + (finals if layer.return_state else [])
    lines += [f"{o} = {v}" for o, v in zip(outs, results, strict=True)]
    out_mask = mask if layer.return_sequences else None
    return lines, [out_mask if k < layer.mask_carrying_outputs() else None for k in range(len(outs))]


def stacked_code(layer: Stacked, g: PyContext, outs: list[str], x: str, mask: str | None) -> PyResult:
    """``RNN(StackedRNNCells)``: go_backwards reverses the input and mask once, then every cell runs over
    the steps in turn, each taking the previous one's output sequence (Keras runs them per step: the same)."""
    cells = layer.directions
    count = sum(len(c.state_names) for c in cells.values())
    lines, starts = _starts(g, count, layer.stateful)
    run_mask = mask
    if layer.go_backwards:
        reversed_x = g.var("reversed")
        lines.append(f"{reversed_x} = {x}[:, ::-1]  # go_backwards: the cells run over the reversed steps")
        x = reversed_x
        if mask is not None:
            run_mask = g.var("mask_reversed")
            lines.append(f"{run_mask} = {mask}[:, ::-1]")
    finals, used = [], 0
    for d, cell in cells.items():
        fn = direction_function(g, cell, f"{g.node.name}_{d}", f"{d}/", mask is not None)
        y = g.var(d)
        states = [g.var(f"{d}_{s}") for s in cell.state_names]
        args = ", ".join([x, *([run_mask] if run_mask else []), *starts[used : used + len(states)]])
        lines.append(f"{y}, {', '.join(states)} = {fn}({args})")
        x, used, finals = y, used + len(states), finals + states
    lines += _keep(g, finals, layer.stateful)
    results = [x, *(finals if layer.return_state else [])]
    lines += [f"{o} = {v}" for o, v in zip(outs, results, strict=True)]
    out_mask = mask if layer.return_sequences else None
    return lines, [out_mask if k < layer.mask_carrying_outputs() else None for k in range(len(outs))]
