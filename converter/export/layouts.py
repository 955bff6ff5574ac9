"""Tensor layouts: a layer's weights as the named arrays Keras, ONNX or PyTorch use, and back to the IR.

- ``keras``: the IR's gate tensors, ``lstm/W_i`` (input_dim, units), ``bidirectional/forward/U_f``, ``dense/W``.
- ``onnx``: the ONNX LSTM/GRU/RNN operator inputs ``lstm/W`` (D, G*H, in), ``lstm/R`` (D, G*H, H) and
  ``lstm/B`` (D, 2*G*H) = [Wb, Rb], direction axis first; Dense ``dense/W`` (in, out), ``dense/b``.
- ``pytorch``: ``lstm.weight_ih_l0`` ... (``_reverse`` for a backward direction), ``dense.weight`` (out, in),
  so that ``nn.LSTM``/``nn.GRU``/``nn.RNN``/``nn.Linear`` load them once the ``lstm.`` prefix is stripped.

Gate blocks are reordered only through ``converter.gates``. Arrays are built lazily (``Tensor.array()``) so a
writer holds one converted tensor at a time.

>>> import converter
>>> model = converter.load("fixtures/keras3/tutorial.keras").ir
>>> {key: array.shape for key, array in to_layout(model, "onnx").items()}
{'lstm/W': (1, 20, 3), 'lstm/R': (1, 20, 5), 'lstm/B': (1, 40), 'dense/W': (5, 1), 'dense/b': (1,)}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from converter import ir
from converter.errors import BadModelFile, UnsupportedLayer
from converter.gates import GATE_ORDER, gate_tensor_name, join_gates, split_gates

Array = np.ndarray
LAYOUTS = ("keras", "onnx", "pytorch")
_WORDS = {"i": "input gate", "f": "forget gate", "c": "cell candidate", "o": "output gate"}
_WORDS |= {"z": "update gate", "r": "reset gate", "h": "candidate", "": "cell"}
_TORCH_LETTER = {"c": "g", "h": "n"}  # PyTorch's names for the LSTM and GRU candidates
_TORCH_MODULE = {"lstm": "nn.LSTM", "gru": "nn.GRU", "simple_rnn": "nn.RNN"}
_TORCH_SUFFIX = {"": "", "forward": "", "backward": "_reverse"}
_SEP = {"keras": "/", "onnx": "/", "pytorch": "."}


@dataclass(frozen=True)
class Tensor:
    """One named array of a layout: its key, shape, a one-line meaning, and how to build it."""

    key: str
    shape: tuple[int, ...]
    meaning: str
    build: Callable[[], Array] = field(repr=False, compare=False)

    def array(self) -> Array:
        return np.ascontiguousarray(self.build(), dtype=np.float32)


def to_layout(model: ir.Model, layout: str) -> dict[str, Array]:
    """Every weight of ``model`` as named float32 arrays of ``layout`` (see the module docstring)."""
    return {t.key: t.array() for tensors in model_tensors(model, layout).values() for t in tensors}


def model_tensors(model: ir.Model, layout: str) -> dict[str, list[Tensor]]:
    """The tensors of each node, by node name; raises ``UnsupportedLayer`` before anything is built."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    for node in model.nodes:
        check_supported(node, layout)
    result, seen = {}, set()
    for node in model.nodes:
        result[node.name] = node_tensors(node, layout)
        for t in result[node.name]:
            if t.key in seen:  # only possible with odd layer names such as "a/forward"
                raise UnsupportedLayer(f"layer '{node.name}': two tensors would be named '{t.key}'; rename it.")
            seen.add(t.key)
    return result


def check_supported(node: ir.Node, layout: str) -> None:
    """Refuse a layer the layout cannot hold exactly (PyTorch computes fewer variants than Keras)."""
    if layout == "keras" or not isinstance(node.layer, ir.Recurrent | ir.Bidirectional):
        return
    dirs = list(ir.recurrent_directions(node.layer).values())
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
                f"supports only {supports}. Export it in the keras or onnx layout instead."
            )
    if len(dirs) == 2 and dirs[0].activation != dirs[1].activation:
        raise UnsupportedLayer(
            f"layer '{node.name}' (Bidirectional) has activation {dirs[0].activation!r} forward and "
            f"{dirs[1].activation!r} backward; one nn.RNN uses one nonlinearity for both directions."
        )


def _torch_problem(r: ir.Recurrent) -> tuple[str, str]:
    if r.kind == "simple_rnn":
        ok = r.activation in ("tanh", "relu")
        return ("" if ok else f"activation={r.activation!r}", "nonlinearity 'tanh' or 'relu'")
    if (r.activation, r.recurrent_activation) != ("tanh", "sigmoid"):
        has = f"activation={r.activation!r} and recurrent_activation={r.recurrent_activation!r}"
        return has, "activation='tanh' with recurrent_activation='sigmoid'"
    if r.kind == "gru" and not r.reset_after:
        return "reset_after=False", "the reset_after=True form (the reset gate applied after the recurrent matmul)"
    return "", ""


def _dims(r: ir.Recurrent) -> tuple:
    return (r.kind, r.units, r.input_dim, r.use_bias, r.reset_after)


def ir_names(r: ir.Recurrent) -> list[str]:
    """The IR tensor names of a recurrent layer in a fixed order: W_*, U_*, then b_* and rb_* if it has them."""
    prefixes = ["W", "U"] + (["b"] if r.use_bias else []) + (["rb"] if r.use_bias and _two_biases(r) else [])
    return [gate_tensor_name(p, g) for p in prefixes for g in r.gates]


def _two_biases(r: ir.Recurrent) -> bool:
    return r.kind == "gru" and r.reset_after


def node_tensors(node: ir.Node, layout: str) -> list[Tensor]:
    """The tensors ``node`` owns in ``layout`` (none for layers without weights)."""
    layer, name = node.layer, node.name
    if isinstance(layer, ir.Recurrent | ir.Bidirectional):
        return {"keras": _keras_recurrent, "onnx": _onnx_recurrent, "pytorch": _torch_recurrent}[layout](name, layer)
    if isinstance(layer, ir.Dense):
        w, is_torch = layer.weights["W"], layout == "pytorch"
        kernel = Tensor(f"{name}.weight", w.shape[::-1], "nn.Linear weight (out x in): kernel transposed", lambda: w.T)
        if not is_torch:
            kernel = Tensor(f"{name}/W", w.shape, "kernel (in x out): y = activation(x @ W + b)", lambda: w)
        if not layer.use_bias:
            return [kernel]
        return [
            kernel,
            Tensor(
                f"{name}{_SEP[layout]}{'bias' if is_torch else 'b'}",
                (layer.units,),
                "bias (out)",
                lambda: layer.weights["b"],
            ),
        ]
    if isinstance(layer, ir.Embedding):
        key = f"{name}.weight" if layout == "pytorch" else f"{name}/E"
        meaning = "embedding matrix (input_dim x output_dim): row k is the vector of id k"
        return [Tensor(key, (layer.input_dim, layer.output_dim), meaning, lambda: layer.weights["E"])]
    return []


def _keras_recurrent(name: str, layer: ir.Recurrent | ir.Bidirectional) -> list[Tensor]:
    out = []
    for d, r in ir.recurrent_directions(layer).items():
        where = f"{d} direction: " if d else ""
        for tname in ir_names(r):
            prefix, _, gate = tname.partition("_")
            shape = {"W": (r.input_dim, r.units), "U": (r.units, r.units)}.get(prefix, (r.units,))
            rows = {"W": "input_dim x units", "U": "units x units"}.get(prefix, "units")
            what = {"W": "input kernel", "U": "recurrent kernel", "b": "bias", "rb": "recurrent bias"}[prefix]
            what = "input bias" if prefix == "b" and _two_biases(r) else what
            key = f"{name}/{d}/{tname}" if d else f"{name}/{tname}"
            meaning = f"{where}{what} of the {_WORDS[gate]} ({rows})"
            out.append(Tensor(key, shape, meaning, lambda r=r, t=tname: r.weights[t]))
    return out


def _part(r: ir.Recurrent, order: tuple[str, ...], k: int) -> Array:
    """Part ``k`` of a direction in ``order``: 0 kernel (G*H, in), 1 recurrent kernel (G*H, H), 2 input bias,
    3 recurrent bias (G*H,). Keras keeps one bias except for GRU reset_after; the second one is then zero."""
    if k in (0, 1):
        return join_gates({g: r.tensor("WU"[k], g).T for g in r.gates}, order, axis=0)
    if k == 2 and r.use_bias:
        return join_gates({g: r.tensor("b", g) for g in r.gates}, order, axis=0)
    if k == 3 and r.use_bias and _two_biases(r):
        return join_gates({g: r.tensor("rb", g) for g in r.gates}, order, axis=0)
    return np.zeros(len(order) * r.units, np.float32)


def _gate_list(r: ir.Recurrent, layout: str) -> str:
    letters = GATE_ORDER[layout][r.kind]
    if layout == "pytorch":
        letters = tuple(_TORCH_LETTER.get(g, g) if r.kind != "simple_rnn" else g for g in letters)
    return f"gates {', '.join(letters)} stacked" if r.kind != "simple_rnn" else "one block"


def _second_bias(r: ir.Recurrent) -> str:
    return "Keras' recurrent bias (reset_after)" if _two_biases(r) else "all zero (Keras has one bias)"


def _onnx_recurrent(name: str, layer: ir.Recurrent | ir.Bidirectional) -> list[Tensor]:
    dirs = list(ir.recurrent_directions(layer).values())
    r, d, n, gates = dirs[0], len(dirs), len(dirs[0].gates), _gate_list(dirs[0], "onnx")
    order, gh = GATE_ORDER["onnx"][r.kind], len(r.gates) * r.units
    part = lambda k: np.stack([_part(x, order, k) for x in dirs])  # noqa: E731
    lbr = f"; linear_before_reset={int(r.reset_after)}" if r.kind == "gru" else ""
    ways = "forward, backward" if d == 2 else "one direction"
    specs = [
        ("W", (d, gh, r.input_dim), f"input weights, {gates} (num_directions x {n}*units x input_dim; {ways})"),
        ("R", (d, gh, r.units), f"recurrent weights, {gates} (num_directions x {n}*units x units)"),
        ("B", (d, 2 * gh), f"biases [Wb, Rb] (num_directions x {2 * n}*units); Rb is {_second_bias(r)}{lbr}"),
    ]
    build = {"W": lambda: part(0), "R": lambda: part(1), "B": lambda: np.concatenate([part(2), part(3)], axis=1)}
    return [
        Tensor(f"{name}/{k}", shape, f"ONNX {k}: {text}", build[k])
        for k, shape, text in specs[: 3 if r.use_bias else 2]
    ]


def _torch_recurrent(name: str, layer: ir.Recurrent | ir.Bidirectional) -> list[Tensor]:
    out = []
    for d, r in ir.recurrent_directions(layer).items():
        side, n, gates = f" of the {d} direction" if d else "", len(r.gates), _gate_list(r, "pytorch")
        specs = [
            ("weight_ih", (n * r.units, r.input_dim), f"input-hidden weights{side}, {gates} ({n}*units x input_dim)"),
            ("weight_hh", (n * r.units, r.units), f"hidden-hidden weights{side}, {gates} ({n}*units x units)"),
            ("bias_ih", (n * r.units,), f"input-hidden bias{side} ({gates})"),
            ("bias_hh", (n * r.units,), f"hidden-hidden bias{side}, {_second_bias(r)}"),
        ]
        for k, (what, shape, meaning) in enumerate(specs[: 4 if r.use_bias else 2]):
            build = lambda r=r, k=k: _part(r, GATE_ORDER["pytorch"][r.kind], k)  # noqa: E731
            out.append(Tensor(f"{name}.{what}_l0{_TORCH_SUFFIX[d]}", shape, meaning, build))
    return out


# --- back to the IR -------------------------------------------------------------------------------------


def load_layer(node: ir.Node, layout: str, arrays: Mapping[str, Array], where: str) -> ir.Layer:
    """``node.layer`` (weights empty) with its weights read from ``arrays`` in ``layout``; shapes checked first.

    >>> import converter
    >>> model = converter.load("fixtures/keras3/tutorial.keras").ir
    >>> node = model.node("lstm")
    >>> bare = replace(node, layer=replace(node.layer, weights={}))
    >>> rebuilt = load_layer(bare, "pytorch", to_layout(model, "pytorch"), "example")
    >>> bool((rebuilt.weights["W_f"] == node.layer.weights["W_f"]).all())
    True
    """
    layer = node.layer
    if not isinstance(layer, ir.Recurrent | ir.Bidirectional | ir.Dense | ir.Embedding):
        return layer
    if layout != "keras":  # only a hand-made file can get here with a layer the layout cannot hold
        try:
            check_supported(node, layout)
        except UnsupportedLayer as e:
            raise BadModelFile(f"{where}: {e}") from e
    got = _fetch(node, layout, arrays, where)
    if isinstance(layer, ir.Dense):
        w, b = got[f"{node.name}{_SEP[layout]}{'weight' if layout == 'pytorch' else 'W'}"], None
        if layer.use_bias:
            b = got[f"{node.name}{_SEP[layout]}{'bias' if layout == 'pytorch' else 'b'}"]
        w = np.ascontiguousarray(w.T) if layout == "pytorch" else w
        return replace(layer, weights={"W": w} if b is None else {"W": w, "b": b})
    if isinstance(layer, ir.Embedding):
        return replace(layer, weights={"E": got[f"{node.name}.weight" if layout == "pytorch" else f"{node.name}/E"]})
    dirs = ir.recurrent_directions(layer)
    weights = {d: _recurrent_weights(node.name, d, k, r, layout, got) for k, (d, r) in enumerate(dirs.items())}
    if isinstance(layer, ir.Recurrent):
        return replace(layer, weights=weights[""])
    return replace(
        layer,
        forward=replace(layer.forward, weights=weights["forward"]),
        backward=replace(layer.backward, weights=weights["backward"]),
    )


def expected_tensors(node: ir.Node, layout: str, arrays: Mapping[str, Array]) -> list[Tensor]:
    """The keys and shapes ``node`` (weights empty) needs in ``layout``; a Dense's input size comes from ``arrays``."""
    layer = node.layer
    if isinstance(layer, ir.Dense):  # the IR keeps no input size for Dense: take it from its kernel
        key = f"{node.name}.weight" if layout == "pytorch" else f"{node.name}/W"
        shape = np.shape(arrays[key]) if key in arrays else ()
        fan_in = (shape[-1] if layout == "pytorch" else shape[0]) if len(shape) == 2 else 0
        layer = replace(layer, weights={"W": np.broadcast_to(np.float32(0), (fan_in, layer.units))})
    return node_tensors(replace(node, layer=layer), layout)


def _fetch(node: ir.Node, layout: str, arrays: Mapping[str, Array], where: str) -> dict[str, Array]:
    got = {}
    for t in expected_tensors(node, layout, arrays):
        if t.key not in arrays:
            raise BadModelFile(f"{where}: tensor '{t.key}' of layer '{node.name}' is missing.")
        array = np.asarray(arrays[t.key])  # read once: an NpzFile re-reads on every access
        if array.shape != t.shape:
            raise BadModelFile(
                f"{where}: tensor '{t.key}' has shape {array.shape}; layer '{node.name}' needs {t.shape}."
            )
        if array.dtype != np.float32:
            raise BadModelFile(f"{where}: tensor '{t.key}' is {array.dtype}; lstm-convert files hold float32 weights.")
        got[t.key] = array
    return got


def _recurrent_weights(name: str, d: str, k: int, r: ir.Recurrent, layout: str, got: dict) -> dict[str, Array]:
    """Direction ``d`` (number ``k``) of a recurrent layer back to IR gate tensors."""
    if layout == "keras":
        return {t: got[f"{name}/{d}/{t}" if d else f"{name}/{t}"] for t in ir_names(r)}
    if layout == "onnx":
        w, u = got[f"{name}/W"][k], got[f"{name}/R"][k]
        wb, rb = np.split(got[f"{name}/B"][k], 2) if r.use_bias else (None, None)
    else:
        s = _TORCH_SUFFIX[d]
        w, u = got[f"{name}.weight_ih_l0{s}"], got[f"{name}.weight_hh_l0{s}"]
        wb, rb = (got[f"{name}.bias_ih_l0{s}"], got[f"{name}.bias_hh_l0{s}"]) if r.use_bias else (None, None)
    order = GATE_ORDER[layout][r.kind]
    weights = {}
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
