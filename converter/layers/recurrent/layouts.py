"""A recurrent layer's tensors in each npz/JSON layout, and back: the gate table does every reordering.

- ``keras``: the gate tensors as they are, ``lstm/W_i`` (input_dim, units), ``bidirectional/forward/U_f``.
- ``onnx``: the ONNX LSTM/GRU/RNN operator inputs ``lstm/W`` (D, G*H, in), ``lstm/R`` (D, G*H, H) and
  ``lstm/B`` (D, 2*G*H) = [Wb, Rb], direction axis first.
- ``pytorch``: ``lstm.weight_ih_l0`` ... (``_reverse`` for a backward direction), for ``nn.LSTM``/``nn.GRU``/
  ``nn.RNN`` once the ``lstm.`` prefix is stripped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from converter.errors import UnsupportedLayer
from converter.gates import GATE_ORDER, PEEPHOLE_ORDER, gate_tensor_name, join_gates, split_gates
from converter.layers.base import LayoutTensor as Tensor
from converter.layers.recurrent.layer import Recurrent, RecurrentLayer

Array = np.ndarray
_WORDS = {"i": "input gate", "f": "forget gate", "c": "cell candidate", "o": "output gate"}
_WORDS |= {"z": "update gate", "r": "reset gate", "h": "candidate", "": "cell"}
_TORCH_LETTER = {"c": "g", "h": "n"}  # PyTorch's names for the LSTM and GRU candidates
_TORCH_MODULE = {"lstm": "nn.LSTM", "gru": "nn.GRU", "simple_rnn": "nn.RNN"}
_TORCH_SUFFIX = {"": "", "forward": "", "backward": "_reverse"}


def layout_tensors(name: str, layer: RecurrentLayer, layout: str) -> list[Tensor]:
    """The tensors of a recurrent layer (all its directions) in ``layout``."""
    return {"keras": _keras_recurrent, "onnx": _onnx_recurrent, "pytorch": _torch_recurrent}[layout](name, layer)


def _keras_recurrent(name: str, layer: RecurrentLayer) -> list[Tensor]:
    out = []
    for d, r in layer.directions.items():
        where = f"{d} direction: " if d else ""
        for tname in ir_names(r):
            prefix, _, gate = tname.partition("_")
            shape = {"W": (r.input_dim, r.units), "U": (r.units, r.units)}.get(prefix, (r.units,))
            rows = {"W": "input_dim x units", "U": "units x units"}.get(prefix, "units")
            what = {"W": "input kernel", "U": "recurrent kernel", "b": "bias", "rb": "recurrent bias"}.get(prefix)
            what = what or "peephole weights (times the cell state)"
            what = "input bias" if prefix == "b" and _two_biases(r) else what
            key = f"{name}/{d}/{tname}" if d else f"{name}/{tname}"
            meaning = f"{where}{what} of the {_WORDS[gate]} ({rows})"
            out.append(Tensor(key, shape, meaning, lambda r=r, t=tname: r.weights[t]))
    return out


def _part(r: Recurrent, order: tuple[str, ...], k: int) -> Array:
    """Part ``k`` of a direction in ``order``: 0 kernel (G*H, in), 1 recurrent kernel (G*H, H), 2 input bias,
    3 recurrent bias (G*H,). Keras keeps one bias except for GRU reset_after; the second one is then zero."""
    if k in (0, 1):
        return join_gates({g: r.tensor("WU"[k], g).T for g in r.gates}, order, axis=0)
    if k == 2 and r.use_bias:
        return join_gates({g: r.tensor("b", g) for g in r.gates}, order, axis=0)
    if k == 3 and r.use_bias and _two_biases(r):
        return join_gates({g: r.tensor("rb", g) for g in r.gates}, order, axis=0)
    return np.zeros(len(order) * r.units, np.float32)


def _gate_list(r: Recurrent, layout: str) -> str:
    letters = GATE_ORDER[layout][r.kind]
    if layout == "pytorch":
        letters = tuple(_TORCH_LETTER.get(g, g) if r.kind != "simple_rnn" else g for g in letters)
    return f"gates {', '.join(letters)} stacked" if r.kind != "simple_rnn" else "one block"


def _second_bias(r: Recurrent) -> str:
    return "Keras' recurrent bias (reset_after)" if _two_biases(r) else "all zero (Keras has one bias)"


def _onnx_recurrent(name: str, layer: RecurrentLayer) -> list[Tensor]:
    dirs = list(layer.directions.values())
    r, d, n, gates = dirs[0], len(dirs), len(dirs[0].gates), _gate_list(dirs[0], "onnx")
    order, gh = GATE_ORDER["onnx"][r.kind], len(r.gates) * r.units
    part = lambda k: np.stack([_part(x, order, k) for x in dirs])  # noqa: E731
    lbr = f"; linear_before_reset={int(r.reset_after)}" if r.kind == "gru" else ""
    ways = "forward, backward" if d == 2 else "one direction"
    specs = [
        ("W", (d, gh, r.input_dim), f"input weights, {gates} (num_directions x {n}*units x input_dim; {ways})"),
        ("R", (d, gh, r.units), f"recurrent weights, {gates} (num_directions x {n}*units x units)"),
        ("B", (d, 2 * gh), f"biases [Wb, Rb] (num_directions x {2 * n}*units); Rb is {_second_bias(r)}{lbr}"),
    ][: 3 if r.use_bias else 2]
    if any(x.peephole for x in dirs):
        order_p = ", ".join(PEEPHOLE_ORDER["onnx"])
        specs.append(("P", (d, 3 * r.units), f"peephole weights, gates {order_p} stacked (num_directions x 3*units)"))
    build = {
        "W": lambda: part(0),
        "R": lambda: part(1),
        "B": lambda: np.concatenate([part(2), part(3)], axis=1),
        "P": lambda: np.stack([_peepholes(x) for x in dirs]),
    }
    return [Tensor(f"{name}/{k}", shape, f"ONNX {k}: {text}", build[k]) for k, shape, text in specs]


def _peepholes(r: Recurrent) -> Array:
    """ONNX's P row of a direction: its peephole vectors in ONNX order (zeros for a plain direction)."""
    zeros = np.zeros(r.units, np.float32)
    return np.concatenate([r.tensor("P", g) if r.peephole else zeros for g in PEEPHOLE_ORDER["onnx"]])


def _torch_recurrent(name: str, layer: RecurrentLayer, level: int = 0) -> list[Tensor]:
    """``level``: the layer number of a multi-layer torch module (``weight_ih_l1``: a stacked RNN's cell 1)."""
    out = []
    for d, r in layer.directions.items():
        side, n, gates = f" of the {d} direction" if d else "", len(r.gates), _gate_list(r, "pytorch")
        specs = [
            ("weight_ih", (n * r.units, r.input_dim), f"input-hidden weights{side}, {gates} ({n}*units x input_dim)"),
            ("weight_hh", (n * r.units, r.units), f"hidden-hidden weights{side}, {gates} ({n}*units x units)"),
            ("bias_ih", (n * r.units,), f"input-hidden bias{side} ({gates})"),
            ("bias_hh", (n * r.units,), f"hidden-hidden bias{side}, {_second_bias(r)}"),
        ]
        for k, (what, shape, meaning) in enumerate(specs[: 4 if r.use_bias else 2]):
            build = lambda r=r, k=k: _part(r, GATE_ORDER["pytorch"][r.kind], k)  # noqa: E731
            out.append(Tensor(f"{name}.{what}_l{level}{_TORCH_SUFFIX[d]}", shape, meaning, build))
    return out


def torch_stacked(name: str, cells: list[Recurrent]) -> list[Tensor]:
    """A stack of cells as one multi-layer torch module: cell k's tensors are layer k's (``weight_ih_l1``)."""
    return [t for k, c in enumerate(cells) for t in _torch_recurrent(name, c, level=k)]


def check_layout(node: Any, layer: RecurrentLayer, layout: str) -> None:
    """Refuse a layer the layout cannot hold exactly (PyTorch computes fewer variants than Keras)."""
    if layout == "keras":
        return
    dirs = list(layer.directions.values())
    if len(dirs) == 2 and _dims(dirs[0]) != _dims(dirs[1]):
        raise UnsupportedLayer(
            f"layer '{node.name}' (Bidirectional): its forward and backward layers differ in kind, size or "
            f"options; the {layout} layout stacks both directions in one operator. Use the keras layout."
        )
    if layout != "pytorch":
        return
    for r in dirs:
        has, supports = _torch_problem(r)
        if has:
            raise UnsupportedLayer(
                f"layer '{node.name}' ({node.keras_class}) has {has}; PyTorch's {_TORCH_MODULE[r.kind]} "
                f"supports only {supports}. to-onnx, and to-npz/to-json in the keras or onnx layout, convert it."
            )
    if len(dirs) == 2 and dirs[0].activation != dirs[1].activation:
        raise UnsupportedLayer(
            f"layer '{node.name}' (Bidirectional) has activation {dirs[0].activation!r} forward and "
            f"{dirs[1].activation!r} backward; one nn.RNN uses one nonlinearity for both directions."
        )


def _torch_problem(r: Recurrent) -> tuple[str, str]:
    if r.peephole:
        return "peephole connections (PeepholeLSTMCell)", "LSTMs without peepholes"
    if r.kind == "simple_rnn":
        ok = r.activation in ("tanh", "relu")
        return ("" if ok else f"activation={r.activation!r}", "nonlinearity 'tanh' or 'relu'")
    if (r.activation, r.recurrent_activation) != ("tanh", "sigmoid"):
        has = f"activation={r.activation!r} and recurrent_activation={r.recurrent_activation!r}"
        return has, "activation='tanh' with recurrent_activation='sigmoid'"
    if r.kind == "gru" and not r.reset_after:
        return "reset_after=False", "the reset_after=True form (the reset gate applied after the recurrent matmul)"
    return "", ""


def _dims(r: Recurrent) -> tuple:
    return (r.kind, r.units, r.input_dim, r.use_bias, r.reset_after)


def ir_names(r: Recurrent) -> list[str]:
    """The IR tensor names of a recurrent layer in a fixed order: W_*, U_*, then b_* and rb_* if it has them."""
    prefixes = ["W", "U"] + (["b"] if r.use_bias else []) + (["rb"] if r.use_bias and _two_biases(r) else [])
    names = [gate_tensor_name(p, g) for p in prefixes for g in r.gates]
    return names + ([gate_tensor_name("P", g) for g in PEEPHOLE_ORDER["keras"]] if r.peephole else [])


def _two_biases(r: Recurrent) -> bool:
    return r.kind == "gru" and r.reset_after


def direction_weights(
    name: str, d: str, k: int, r: Recurrent, layout: str, got: Mapping[str, Array], level: int = 0
) -> dict[str, Array]:
    """Direction ``d`` (number ``k``) of a recurrent layer back to IR gate tensors (``level``: see
    ``_torch_recurrent``)."""
    if layout == "keras":
        return {t: got[f"{name}/{d}/{t}" if d else f"{name}/{t}"] for t in ir_names(r)}
    weights = {}
    if layout == "onnx":
        w, u = got[f"{name}/W"][k], got[f"{name}/R"][k]
        wb, rb = np.split(got[f"{name}/B"][k], 2) if r.use_bias else (None, None)
        if r.peephole:
            for g, vector in split_gates(got[f"{name}/P"][k], PEEPHOLE_ORDER["onnx"], axis=0).items():
                weights[gate_tensor_name("P", g)] = vector.copy()
    else:
        s = f"_l{level}{_TORCH_SUFFIX[d]}"
        w, u = got[f"{name}.weight_ih{s}"], got[f"{name}.weight_hh{s}"]
        wb, rb = (got[f"{name}.bias_ih{s}"], got[f"{name}.bias_hh{s}"]) if r.use_bias else (None, None)
    order = GATE_ORDER[layout][r.kind]
    for prefix, matrix in (("W", w), ("U", u)):
        for g, block in split_gates(matrix, order, axis=0).items():
            weights[gate_tensor_name(prefix, g)] = np.ascontiguousarray(block.T)
    if wb is not None:
        wbs, rbs = split_gates(wb, order, axis=0), split_gates(rb, order, axis=0)
        for g in r.gates:
            if _two_biases(r):
                weights[gate_tensor_name("b", g)], weights[gate_tensor_name("rb", g)] = wbs[g].copy(), rbs[g].copy()
            else:  # fold a second bias into the one Keras has; where it is zero keep Wb's bits (even -0.0)
                weights[gate_tensor_name("b", g)] = np.where(rbs[g] == 0, wbs[g], wbs[g] + rbs[g]).astype(np.float32)
    return {t: weights[t] for t in ir_names(r)}
