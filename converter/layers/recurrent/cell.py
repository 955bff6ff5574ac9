"""LSTM, GRU and SimpleRNN forward passes in NumPy, vectorised over the batch (Bidirectional: both).

The input projection of all time steps is one matmul; only the recurrent part loops over time. Masked
steps follow Keras: the state is carried over unchanged and the output repeats the previous step's
(zeros before the first valid step), or is zero where Keras asks for ``zero_output_for_mask``
(inside Bidirectional with return_sequences).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from converter.activations import numpy_activation
from converter.errors import BadInputs
from converter.gates import gate_tensor_name, join_gates
from converter.layers.base import Mask, RunContext
from converter.layers.recurrent.layer import PEEPHOLES, Recurrent, RecurrentLayer

Array = np.ndarray


@dataclass
class Cell:
    """A recurrent layer's weights stacked for fast NumPy steps (canonical gate order)."""

    layer: Recurrent
    act: Callable[[Array], Array]
    rec_act: Callable[[Array], Array]
    kernel: Array  # (input_dim, gates*units)
    recurrent: Array  # (units, gates*units)
    bias: Array  # (gates*units,) added to the input projection
    recurrent_bias: Array  # (gates*units,) added to the recurrent projection (GRU reset_after only)
    peepholes: tuple[Array, Array, Array] | None  # P_i, P_f, P_o of a peephole LSTM

    @classmethod
    def of(cls, layer: Recurrent, keras_major: int) -> Cell:
        def stack(prefix: str) -> Array:
            if (prefix in ("b", "rb") and not layer.use_bias) or (prefix == "rb" and not layer.reset_after):
                return np.zeros(len(layer.gates) * layer.units, np.float32)
            named = {g: layer.weights[gate_tensor_name(prefix, g)] for g in layer.gates}
            return join_gates(named, layer.gates, axis=-1)  # the file's own kernel when nothing moved it

        rec_name = layer.recurrent_activation or "linear"
        peepholes = tuple(layer.weights[gate_tensor_name("P", g)] for g in PEEPHOLES) if layer.peephole else None
        return cls(
            layer,
            numpy_activation(layer.activation, keras_major),
            numpy_activation(rec_name, keras_major),
            stack("W"),
            stack("U"),
            stack("b"),
            stack("rb"),
            peepholes,  # type: ignore[arg-type]
        )

    def step(self, xp: Array, states: list[Array], gates: dict[str, Array] | None = None) -> tuple[Array, list[Array]]:
        """One time step: ``xp`` is this step's input projection (x @ W + b). With ``gates``, also record
        the gate activations under the tutorials' names (LSTM ``i f c_tilde o``, GRU ``z r h_tilde``)."""
        kind, act, rec_act = self.layer.kind, self.act, self.rec_act
        h, units = states[0], self.layer.units
        if kind == "lstm" and self.peepholes is not None:
            return self._peephole_step(xp, states)
        if kind == "lstm":
            z = h @ self.recurrent
            z += xp
            # Keras order i, f, c, o: i and f are adjacent, so one call covers both gates.
            i_f = rec_act(z[:, : 2 * units])
            c_tilde = act(z[:, 2 * units : 3 * units])
            c = i_f[:, units:] * states[1]
            c += i_f[:, :units] * c_tilde
            o = rec_act(z[:, 3 * units :])
            h = o * act(c)
            if gates is not None:
                gates |= {"i": i_f[:, :units], "f": i_f[:, units:], "c_tilde": c_tilde, "o": o}
            return h, [h, c]
        if kind == "gru":
            xz, xr, xh = xp[:, :units], xp[:, units : 2 * units], xp[:, 2 * units :]
            if self.layer.reset_after:
                rzrh = h @ self.recurrent + self.recurrent_bias
                # Keras order z, r, h: the update and reset gates take one call.
                zr = rec_act(xp[:, : 2 * units] + rzrh[:, : 2 * units])
                z, r = zr[:, :units], zr[:, units:]
                hh = act(xh + r * rzrh[:, 2 * units :])
            else:
                rzr = h @ self.recurrent[:, : 2 * units]
                z, r = rec_act(xz + rzr[:, :units]), rec_act(xr + rzr[:, units:])
                hh = act(xh + (r * h) @ self.recurrent[:, 2 * units :])
            h = z * h + (1 - z) * hh
            if gates is not None:
                gates |= {"z": z, "r": r, "h_tilde": hh}
            return h, [h]
        h = act(xp + h @ self.recurrent)
        return h, [h]

    def _peephole_step(self, xp: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        """tf.keras' PeepholeLSTMCell: i and f see the previous cell state, o the new one."""
        act, rec_act, units = self.act, self.rec_act, self.layer.units
        p_i, p_f, p_o = self.peepholes  # type: ignore[misc]
        c_prev = states[1]
        z = states[0] @ self.recurrent + xp
        i = rec_act(z[:, :units] + p_i * c_prev)
        f = rec_act(z[:, units : 2 * units] + p_f * c_prev)
        c = f * c_prev + i * act(z[:, 2 * units : 3 * units])
        o = rec_act(z[:, 3 * units :] + p_o * c)
        h = o * act(c)
        return h, [h, c]


def run_recurrent(
    cell: Cell,
    x: Array,
    mask: Array | None,
    states: list[Array] | None,
    trace: dict[str, Array] | None = None,
) -> tuple[Array, list[Array]]:
    """Run one recurrent layer over ``x`` (batch, time, features).

    Returns the output (the whole sequence, in processing order, when return_sequences; else the last
    output) and the final states. With ``trace``, fills it with every gate and state per step, shaped
    (batch, time, units) in the input's time order; a masked step, which Keras skips, shows NaN gates and
    the states carried over it.
    """
    layer = cell.layer
    batch, steps = x.shape[0], x.shape[1]
    if layer.go_backwards:  # Keras returns the sequence in processing (reversed) order
        x = x[:, ::-1]
        mask = None if mask is None else mask[:, ::-1]
    if states is None:
        states = [np.zeros((batch, layer.units), np.float32) for _ in layer.state_names]
    projected = x.astype(np.float32, copy=False) @ cell.kernel + cell.bias  # all steps in one matmul
    outputs = np.zeros((steps, batch, layer.units), np.float32) if layer.return_sequences else None
    previous = np.zeros((batch, layer.units), np.float32)
    steps_seen: list[dict[str, Array]] = []
    for t in range(steps):
        gates: dict[str, Array] | None = {} if trace is not None else None
        out, new_states = cell.step(projected[:, t], states, gates)
        if mask is not None:
            valid = mask[:, t, None]
            new_states = [np.where(valid, new, old) for new, old in zip(new_states, states, strict=True)]
            out = np.where(valid, out, 0.0 if layer.zero_output_for_mask else previous)
            if gates is not None:
                gates = {k: np.where(valid, g, np.nan) for k, g in gates.items()}
        states, previous = new_states, out
        if outputs is not None:
            outputs[t] = out
        if gates is not None:
            steps_seen.append(gates | dict(zip(layer.state_names[::-1], states[::-1], strict=True)))
    if trace is not None and steps_seen:
        order = slice(None, None, -1) if layer.go_backwards else slice(None)
        for key in steps_seen[0]:
            trace[key] = np.stack([s[key] for s in steps_seen], axis=1)[:, order].astype(np.float32)
    result = outputs.transpose(1, 0, 2) if outputs is not None else previous
    return np.ascontiguousarray(result, dtype=np.float32), [s.astype(np.float32, copy=False) for s in states]


def merge(mode: str | None, fw: Array, bw: Array) -> list[Array]:
    """Bidirectional's merge of the two directions' outputs, as Keras computes it."""
    if mode is None:
        return [fw, bw]
    if mode == "concat":
        return [np.concatenate([fw, bw], axis=-1)]
    if mode == "sum":
        return [fw + bw]
    if mode == "ave":
        return [(fw + bw) / 2]
    return [fw * bw]


def start_states(layer: RecurrentLayer, run: RunContext, batch: int) -> dict[str, list[Array] | None]:
    """Per direction the initial states: wired in the Keras graph, given from outside, or None (zeros)."""
    directions = layer.directions
    if run.initial_state:  # states wired in the Keras graph: forward's first, then backward's
        flat = [v.astype(np.float32, copy=False) for v in run.initial_state]
        result, start = {}, 0
        for name, d in directions.items():
            result[name] = flat[start : start + len(d.state_names)]
            start += len(d.state_names)
        return result
    given = run.given_states or {}
    result = {}
    for name, d in directions.items():
        states = given.get(name)
        for state in states or []:
            if state.shape != (batch, d.units):
                raise BadInputs(
                    f"{run.where}: a state of shape {state.shape} does not fit; it needs "
                    f"{(batch, d.units)} (a stateful layer keeps the batch size of its first call; "
                    "reset_states() to change it)."
                )
        result[name] = states
    return result


def run_layer(
    layer: RecurrentLayer, x: Array, mask: Mask, run: RunContext, merge_mode: str | None
) -> tuple[list[Array], list[Mask]]:
    """The NumPy forward pass of a recurrent layer call: outputs, their masks; sets ``run.final_states``."""
    cells = run.cache.get("cells")
    if cells is None:  # the stacked weights, made once per runtime
        cells = run.cache["cells"] = {d: Cell.of(r, run.keras_major) for d, r in layer.directions.items()}
    starts = start_states(layer, run, x.shape[0])
    traces: dict[str, dict[str, Array]] = {d: {} for d in layer.directions}
    if isinstance(layer, Recurrent):
        out, states = run_recurrent(cells[""], x, mask, starts[""], traces[""] if run.trace is not None else None)
        finals, outs = {"": states}, [out]
    else:
        tracing = run.trace is not None
        fw, fw_states = run_recurrent(
            cells["forward"], x, mask, starts["forward"], traces["forward"] if tracing else None
        )
        bw, bw_states = run_recurrent(
            cells["backward"], x, mask, starts["backward"], traces["backward"] if tracing else None
        )
        if layer.return_sequences:
            bw = bw[:, ::-1]
        finals, outs = {"forward": fw_states, "backward": bw_states}, merge(merge_mode, fw, bw)
    run.final_states = finals
    if run.trace is not None:
        prefix = run.node.name
        for d, found in traces.items():
            run.trace |= {f"{prefix}/{d}/{k}" if d else f"{prefix}/{k}": v for k, v in found.items()}
    out_mask = mask if layer.return_sequences else None  # Keras keeps the input mask, even go_backwards
    out_masks: list[Mask] = [out_mask] * len(outs)
    if layer.return_state:
        flat = [s for states in finals.values() for s in states]
        outs += flat
        out_masks += [None] * len(flat)
    return outs, out_masks
