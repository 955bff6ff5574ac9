"""Weights and attributes of ONNX LSTM/GRU/RNN nodes, from IR recurrent layers, via the gate table.

ONNX stacks all directions and gates into W (D, G*H, in), R (D, G*H, H) and B (D, 2*G*H) = [Wb, Rb],
gates in ``GATE_ORDER["onnx"]``. W and R are ``Stacked`` (direction, gate) blocks: inline they are joined
once; to external data they stream in slices, so a big layer costs no copy of its kernels.
"""

from __future__ import annotations

import numpy as np

from converter.activations import onnx_activation, supported_activations
from converter.errors import UnsupportedLayer
from converter.export.onnx_builder import Builder, Stacked
from converter.gates import GATE_ORDER, PEEPHOLE_ORDER, join_gates
from converter.ir import Node
from converter.layers.recurrent.layer import Recurrent

ONNX_OP = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "RNN"}
#: The activations an ONNX recurrent op uses when its ``activations`` attribute is absent (per direction).
DEFAULT_ACTIVATIONS = {"lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"], "simple_rnn": ["Tanh"]}
#: Recurrent activations every runtime we know computes; the others are onnxruntime-only (see README).
PORTABLE_ACTIVATIONS = ("Sigmoid", "Tanh", "Relu")


def _where(node: Node) -> str:
    return f"layer '{node.name}' ({node.keras_class})"


def expressible_activations(keras_major: int) -> list[str]:
    """Keras activation names the ONNX recurrent operators compute exactly."""
    return [a for a in supported_activations(keras_major) if onnx_activation(a, keras_major) is not None]


def check_recurrent(node: Node, keras_major: int) -> None:
    """Raise UnsupportedLayer for anything one fused ONNX recurrent node cannot compute exactly."""
    dirs = list(node.layer.directions.values())
    for layer in dirs:
        for role, name in (("activation", layer.activation), ("recurrent_activation", layer.recurrent_activation)):
            if layer.kind == "simple_rnn" and role == "recurrent_activation":
                continue  # SimpleRNN has no recurrent activation
            if onnx_activation(name or "linear", keras_major) is None:
                raise UnsupportedLayer(
                    f"{_where(node)}: its {role} '{name}' has no exact equivalent among the activations of "
                    f"ONNX's {ONNX_OP[layer.kind]} operator, so it cannot become one fused ONNX node. ONNX "
                    f"recurrent operators can express: {', '.join(expressible_activations(keras_major))}."
                )
    if len(dirs) == 2:
        fw, bw = dirs
        same = (fw.kind, fw.units, fw.input_dim) == (bw.kind, bw.units, bw.input_dim)
        if not same or (fw.kind == "gru" and fw.reset_after != bw.reset_after):
            raise UnsupportedLayer(
                f"{_where(node)}: its forward and backward layers differ in kind, units or reset_after; one "
                "bidirectional ONNX node needs them equal (different activations and use_bias are supported)."
            )
        if fw.go_backwards or not bw.go_backwards:
            raise UnsupportedLayer(
                f"{_where(node)}: only a forward layer with a go_backwards backward layer (Keras' default) "
                "maps to ONNX direction='bidirectional'."
            )


def linear_before_reset(dirs: list[Recurrent]) -> int:
    """GRU reset_after=True is ONNX linear_before_reset=1: r*(h@U) versus (r*h)@U, bias or not."""
    return int(dirs[0].reset_after)


def activation_attrs(dirs: list[Recurrent], keras_major: int) -> dict:
    """activations f, g, h per direction, with alpha/beta written for every activation that takes them.

    Nothing at all when they are the op's defaults (sigmoid, tanh). Otherwise onnxruntime's alpha/beta
    defaults differ from the spec, so every alpha and beta is written; the lists are consumed in order
    only by the activations that take them.
    """
    names: list[str] = []
    for d in dirs:
        if d.kind == "lstm":  # f: gates, g: cell input, h: cell output
            names += [d.recurrent_activation, d.activation, d.activation]
        elif d.kind == "gru":  # f: gates, g: candidate
            names += [d.recurrent_activation, d.activation]
        else:
            names += [d.activation]
    acts = [a for n in names if (a := onnx_activation(n or "linear", keras_major)) is not None]
    assert len(acts) == len(names), "check_recurrent refuses inexpressible activations first"
    if [a.op for a in acts] == DEFAULT_ACTIVATIONS[dirs[0].kind] * len(dirs) and all(a.alpha is None for a in acts):
        return {}  # the ONNX default: written out, some importers (OpenCV) refuse it on GRU and RNN
    attrs: dict = {"activations": [a.op for a in acts]}
    alphas = [a.alpha for a in acts if a.alpha is not None]
    betas = [a.beta for a in acts if a.beta is not None]
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    return attrs


def recurrent_weights(b: Builder, prefix: str, dirs: list[Recurrent]) -> tuple[str, str, str]:
    """Initializers W, R and B (B is "" when no direction has a bias: ONNX then uses zeros)."""
    order = GATE_ORDER["onnx"][dirs[0].kind]
    count, units = len(dirs), dirs[0].units
    keys = [(k, g) for k in range(count) for g in order]

    def stacked(tensor: str) -> Stacked:
        # ONNX rows are gate outputs: transpose each Keras (in, H) block (a view, no copy).
        blocks = [dirs[k].tensor(tensor, g).T for k, g in keys]
        return Stacked((count, len(order) * units, blocks[0].shape[1]), blocks)

    w = b.weight(f"{prefix}/W", stacked("W"))
    r = b.weight(f"{prefix}/R", stacked("U"))
    if not any(d.use_bias for d in dirs):
        return w, r, ""
    zeros = np.zeros(units, np.float32)
    blocks: dict[str, np.ndarray] = {}
    names: list[str] = []
    for k, d in enumerate(dirs):
        for part, tensor in (("Wb", "b"), ("Rb", "rb")):
            for g in order:
                # Keras' single LSTM/RNN bias is the input bias; GRU reset_after adds a recurrent one.
                has = d.use_bias and (tensor == "b" or (d.kind == "gru" and d.reset_after))
                blocks[f"{k}/{part}/{g}"] = d.tensor(tensor, g) if has else zeros
                names.append(f"{k}/{part}/{g}")
    bias = b.weight(f"{prefix}/B", join_gates(blocks, names, axis=0).reshape(count, -1))
    return w, r, bias


def peephole_weights(b: Builder, prefix: str, dirs: list[Recurrent]) -> str:
    """ONNX LSTM's P (D, 3H): the peepholes of the input, output and forget gates, in that order (the ONNX
    spec's ``[Pi, Po, Pf]``); "" when no direction has peepholes. A direction without them gets zeros."""
    if not any(d.peephole for d in dirs):
        return ""
    zeros = np.zeros(dirs[0].units, np.float32)
    rows = [np.concatenate([d.tensor("P", g) if d.peephole else zeros for g in PEEPHOLE_ORDER["onnx"]]) for d in dirs]
    return b.weight(f"{prefix}/P", np.stack(rows))
