"""A recurrent layer that torch's ``nn.LSTM``/``nn.GRU``/``nn.RNN`` cannot compute (peephole LSTM cells, a
GRU with reset_after=False, gate activations other than tanh/sigmoid) as Keras' own loop, step by step, in
the generated PyTorch source: exact rather than refused.

Its weights are Keras' stacked ones (``kernel`` (input_dim, gates*units), ``recurrent_kernel``, ``bias``,
GRU reset_after's ``recurrent_bias``, ``peephole_i/f/o``) in a small holder module per direction; the
helper returns what torch's modules return (all directions' outputs concatenated along the features, the
backward one put back in time order; final states shaped (directions, batch, units)), so the code around a
module call (``torch_code``) serves both. The step follows ``cell.py`` operation for operation.
"""

from __future__ import annotations

import numpy as np

from converter.gates import gate_tensor_name, join_gates
from converter.layers.base import TORCH_TENSORS, LayoutTensor, TorchContext, torch_activated
from converter.layers.recurrent.layer import PEEPHOLES, Recurrent, RecurrentLayer
from converter.layers.recurrent.layouts import _torch_problem

#: The generated file's Keras recurrent loop.
KERAS_LOOP = '''def _keras_cell_loop(cell, x, mask, states, kind, act, rec_act, reset_after=True, zero_masked=False):
    """Keras' recurrent loop over x (batch, time, features), one step at a time: a masked step keeps the
    states and repeats the previous output (zeros with zero_masked). The outputs and the final states."""
    units, u = cell.recurrent_kernel.shape[0], cell.recurrent_kernel
    projected = x @ cell.kernel + cell.bias if hasattr(cell, "bias") else x @ cell.kernel
    outputs, previous = [], x.new_zeros(x.shape[0], units)
    for t in range(x.shape[1]):
        xp, h = projected[:, t], states[0]
        if kind == "lstm":  # gates i, f, c, o
            z, c = h @ u + xp, states[1]
            if hasattr(cell, "peephole_i"):  # i and f see the previous cell state, o the new one
                i = rec_act(z[:, :units] + cell.peephole_i * c)
                f = rec_act(z[:, units : 2 * units] + cell.peephole_f * c)
                c = f * c + i * act(z[:, 2 * units : 3 * units])
                o = rec_act(z[:, 3 * units :] + cell.peephole_o * c)
            else:
                i, f = rec_act(z[:, :units]), rec_act(z[:, units : 2 * units])
                c = f * c + i * act(z[:, 2 * units : 3 * units])
                o = rec_act(z[:, 3 * units :])
            h = o * act(c)
            new = [h, c]
        elif kind == "gru":  # gates z, r, h
            if reset_after:
                hu = h @ u + cell.recurrent_bias if hasattr(cell, "recurrent_bias") else h @ u
                zr = rec_act(xp[:, : 2 * units] + hu[:, : 2 * units])
                update, reset = zr[:, :units], zr[:, units:]
                candidate = act(xp[:, 2 * units :] + reset * hu[:, 2 * units :])
            else:  # the reset gate applied before the recurrent matmul
                hu = h @ u[:, : 2 * units]
                update = rec_act(xp[:, :units] + hu[:, :units])
                reset = rec_act(xp[:, units : 2 * units] + hu[:, units:])
                candidate = act(xp[:, 2 * units :] + (reset * h) @ u[:, 2 * units :])
            h = update * h + (1 - update) * candidate
            new = [h]
        else:
            h = act(xp + h @ u)
            new = [h]
        if mask is not None:
            valid = mask[:, t, None]
            new = [torch.where(valid, n, s) for n, s in zip(new, states)]
            h = torch.where(valid, h, 0.0 if zero_masked else previous)
        states, previous = new, h
        outputs.append(h)
    return torch.stack(outputs, dim=1), states


def _keras_rnn(cells, x, mask=None, hx=None, **options):
    """Keras' loop for each direction's cell (forward, then backward: run over the reversed steps, its
    outputs put back in time order), returned as torch's modules return it: the outputs concatenated along
    the features, the final states (h (, c)) shaped (directions, batch, units)."""
    outs, finals = [], []
    starts = None if hx is None else (hx if isinstance(hx, tuple) else (hx,))
    for d, cell in enumerate(cells):
        xd, md = (x.flip(1), None if mask is None else mask.flip(1)) if d else (x, mask)
        if starts is None:
            zeros = x.new_zeros(x.shape[0], cell.recurrent_kernel.shape[0])
            states = [zeros] * (2 if options["kind"] == "lstm" else 1)
        else:
            states = [s[d] for s in starts]
        y, states = _keras_cell_loop(cell, xd, md, states, **options)
        outs.append(y.flip(1) if d else y)
        finals.append(states)
    stacked = tuple(torch.stack([f[k] for f in finals]) for k in range(len(finals[0])))
    return torch.cat(outs, dim=-1), stacked if len(stacked) == 2 else stacked[0]
'''


def needs_loop(layer: RecurrentLayer) -> bool:
    """torch's recurrent modules cannot compute the layer: it runs Keras' loop instead."""
    return any(_torch_problem(r)[0] for r in layer.directions.values())


def _stacked(r: Recurrent) -> dict[str, np.ndarray]:
    """Keras' stacked weights of one direction (as the file keeps them; only those the layer has)."""

    def stack(prefix: str) -> np.ndarray:
        return join_gates({g: r.weights[gate_tensor_name(prefix, g)] for g in r.gates}, r.gates, axis=-1)

    weights = {"kernel": stack("W"), "recurrent_kernel": stack("U")}
    if r.use_bias:
        weights["bias"] = stack("b")
        if r.kind == "gru" and r.reset_after:
            weights["recurrent_bias"] = stack("rb")
    if r.peephole:
        weights |= {f"peephole_{g}": r.weights[gate_tensor_name("P", g)] for g in PEEPHOLES}
    return weights


def _holder(g: TorchContext, r: Recurrent) -> str:
    shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in _stacked(r).items())
    return f"{g.helper(TORCH_TENSORS)}({shapes})"


def loop_module(layer: RecurrentLayer, g: TorchContext) -> str:
    """The holder of each direction's Keras weights (a Bidirectional layer's in an nn.ModuleList)."""
    holders = [_holder(g, r) for r in layer.directions.values()]
    return holders[0] if len(holders) == 1 else f"nn.ModuleList([{', '.join(holders)}])"


def loop_weights(layer: RecurrentLayer, attribute: str) -> list[LayoutTensor]:
    directions = list(layer.directions.values())
    result = []
    for k, r in enumerate(directions):
        prefix = attribute if len(directions) == 1 else f"{attribute}.{k}"
        for key, array in _stacked(r).items():
            meaning = f"Keras' {key} ({'gates ' + ' '.join(r.gates) if r.gates else ''}), run by _keras_rnn"
            result.append(LayoutTensor(f"{prefix}.{key}", tuple(array.shape), meaning, lambda a=array: a))
    return result


def loop_call(layer: RecurrentLayer, g: TorchContext, x: str, mask: str | None, hx: str) -> str:
    """The call of the generated loop, returning ``(sequence, states)`` as a torch module's call does."""
    r = next(iter(layer.directions.values()))
    cells = f"[{g.module}]" if len(layer.directions) == 1 else f"list({g.module})"
    act = f"lambda z: {torch_activated(g, r.activation, 'z')}"
    options = [f'kind="{r.kind}"', f"act={act}"]
    rec = f"lambda z: {torch_activated(g, r.recurrent_activation, 'z')}" if r.recurrent_activation else "None"
    options.append(f"rec_act={rec}")
    if r.kind == "gru" and not r.reset_after:
        options.append("reset_after=False")
    if r.zero_output_for_mask and mask is not None:
        options.append("zero_masked=True")
    start = "" if hx == "None" else f", hx={hx}"
    return f"{g.helper(KERAS_LOOP)}({cells}, {x}, {mask or 'None'}{start}, {', '.join(options)})"
