"""The gate diagram of a recurrent cell (LSTM, GRU, SimpleRNN) and its equations as the tutorials write them.

A diagram is a few named points (inputs, gates, pointwise operations, outputs) and the wires between
them, drawn as right-angled lines; the gate boxes show the layer's own activations.

>>> equations("simple_rnn", "tanh", None, reset_after=False, peephole=False)
['h = tanh(x @ W + h_prev @ U + b)']
>>> equations("gru", "tanh", "sigmoid", reset_after=True, peephole=False, use_bias=False)[2]
'h~ = tanh(x @ W_h + r * (h_prev @ U_h))'
"""

from __future__ import annotations

import re

from converter.html_report.svg import svg, text

Point = tuple[float, float]
#: kind -> name -> (x, y, label, style); style: "io" (a tensor), "gate" (a box), "op" (a circle)
_NODES: dict[str, dict[str, tuple[float, float, str, str]]] = {
    "lstm": {
        "c_prev": (40, 40, "c(t-1)", "io"),
        "h_prev": (40, 205, "h(t-1)", "io"),
        "x": (100, 245, "x(t)", "io"),
        "cat": (100, 205, "", "join"),
        "f": (150, 150, "f", "gate"),
        "i": (215, 150, "i", "gate"),
        "c_tilde": (295, 150, "c~", "gate"),
        "o": (365, 150, "o", "gate"),
        "fc": (150, 40, "×", "op"),
        "ic": (255, 95, "×", "op"),
        "plus": (255, 40, "+", "op"),
        "tanh": (440, 95, "act", "op"),
        "oh": (440, 150, "×", "op"),
        "c": (520, 40, "c(t)", "io"),
        "h": (520, 150, "h(t)", "io"),
    },
    "gru": {
        "h_prev": (40, 40, "h(t-1)", "io"),
        "x": (100, 245, "x(t)", "io"),
        "cat": (100, 205, "", "join"),
        "r": (170, 150, "r", "gate"),
        "z": (250, 150, "z", "gate"),
        "h_tilde": (430, 150, "h~", "gate"),
        "zh": (250, 40, "×", "op"),
        "one_minus": (320, 95, "1−", "op"),
        "zc": (400, 95, "×", "op"),
        "plus": (400, 40, "+", "op"),
        "h": (520, 40, "h(t)", "io"),
    },
    "simple_rnn": {
        "h_prev": (40, 205, "h(t-1)", "io"),
        "x": (100, 245, "x(t)", "io"),
        "cat": (100, 205, "", "join"),
        "gate": (260, 150, "h", "gate"),
        "h": (520, 150, "h(t)", "io"),
    },
}
#: kind -> wires, each a path through node names and (x, y) bends
_WIRES: dict[str, list[tuple]] = {
    "lstm": [
        ("h_prev", "cat"),
        ("x", "cat"),
        *(("cat", (x, 205), g) for g, x in (("f", 150), ("i", 215), ("c_tilde", 295), ("o", 365))),
        ("c_prev", "fc"),
        ("f", "fc"),
        ("fc", "plus"),
        ("i", (215, 95), "ic"),
        ("c_tilde", (295, 95), "ic"),
        ("ic", "plus"),
        ("plus", "c"),
        ("plus", (440, 40), "tanh"),
        ("tanh", "oh"),
        ("o", "oh"),
        ("oh", "h"),
    ],
    "gru": [
        ("h_prev", (40, 205), "cat"),
        ("x", "cat"),
        *(("cat", (x, 205), g) for g, x in (("r", 170), ("z", 250), ("h_tilde", 430))),
        ("r", (170, 185), (430, 185), "h_tilde"),
        ("h_prev", "zh"),
        ("z", "zh"),
        ("z", (250, 95), "one_minus"),
        ("one_minus", "zc"),
        ("h_tilde", (430, 95), "zc"),
        ("zc", "plus"),
        ("zh", "plus"),
        ("plus", "h"),
    ],
    "simple_rnn": [("h_prev", "cat"), ("x", "cat"), ("cat", (260, 205), "gate"), ("gate", "h")],
}
_SHORT = {"sigmoid": "σ", "hard_sigmoid": "hσ", "tanh": "tanh", "relu": "relu", "linear": "id"}


def _short(activation: str | None) -> str:
    return _SHORT.get(activation or "", (activation or "")[:5])


def diagram(kind: str, activation: str, recurrent_activation: str | None) -> str:
    """The cell's gates and states as SVG: one box per gate, labelled with its activation."""
    nodes = _NODES[kind]
    gate_act = {"c_tilde": activation, "h_tilde": activation, "gate": activation}

    def where(p: str | Point) -> Point:
        return (nodes[p][0], nodes[p][1]) if isinstance(p, str) else p

    parts = []
    for wire in _WIRES[kind]:
        points = " ".join(f"{x},{y}" for x, y in map(where, wire))
        parts.append(f'<polyline class="wire" points="{points}" fill="none" stroke="#777" stroke-width="1.4"/>')
    for name, (x, y, label, style) in nodes.items():
        if style == "gate":
            full = gate_act.get(name, recurrent_activation)
            parts.append(
                f'<g class="gate" data-gate="{text(name)}"><title>{text(label)}: {text(full)}</title>'
                f'<rect x="{x - 26}" y="{y - 16}" width="52" height="32" rx="4"/>'
                f'<text x="{x}" y="{y - 2}" text-anchor="middle">{text(_short(full))}</text>'
                f'<text x="{x}" y="{y + 11}" text-anchor="middle" class="gate-name">{text(label)}</text></g>'
            )
        elif style == "op":
            symbol = _short(activation) if label == "act" else label
            parts.append(
                f'<g class="op"><circle cx="{x}" cy="{y}" r="12"/>'
                f'<text x="{x}" y="{y + 4}" text-anchor="middle">{text(symbol)}</text></g>'
            )
        elif style == "io":
            anchor = "end" if x < 100 else ("start" if x > 500 else "middle")
            dx = {"end": -4, "start": 4, "middle": 0}[anchor]
            dy = 14 if y > 230 else 4
            parts.append(
                f'<g class="state"><circle cx="{x}" cy="{y}" r="3"/>'
                f'<text x="{x + dx}" y="{y + dy}" text-anchor="{anchor}">{text(label)}</text></g>'
            )
    body = f'<g transform="translate(40,0)">{"".join(parts)}</g>'
    return svg(610, 265, body, "cell-diagram", kind=kind)


def equations(
    kind: str,
    activation: str,
    recurrent_activation: str | None,
    *,
    reset_after: bool,
    peephole: bool,
    use_bias: bool = True,
) -> list[str]:
    """One step of the cell in the tutorials' notation, with the layer's activations and tensor names."""
    lines = _equations(kind, activation, recurrent_activation, reset_after, peephole)
    if not use_bias:
        lines = [re.sub(r" \+ r?b(_\w)?\b", "", line) for line in lines]
    return lines


def _equations(kind: str, act: str, rec: str | None, reset_after: bool, peephole: bool) -> list[str]:
    if kind == "simple_rnn":
        return [f"h = {act}(x @ W + h_prev @ U + b)"]
    if kind == "lstm":
        peep = {g: f" + P_{g} * c{'_prev' if g != 'o' else ''}" if peephole else "" for g in "ifo"}
        return [
            f"i = {rec}(x @ W_i + h_prev @ U_i + b_i{peep['i']})",
            f"f = {rec}(x @ W_f + h_prev @ U_f + b_f{peep['f']})",
            f"c~ = {act}(x @ W_c + h_prev @ U_c + b_c)",
            "c = f * c_prev + i * c~",
            f"o = {rec}(x @ W_o + h_prev @ U_o + b_o{peep['o']})",
            f"h = o * {act}(c)",
        ]
    if reset_after:
        gates = [f"{g} = {rec}(x @ W_{g} + b_{g} + h_prev @ U_{g} + rb_{g})" for g in "zr"]
        candidate = f"h~ = {act}(x @ W_h + b_h + r * (h_prev @ U_h + rb_h))"
    else:
        gates = [f"{g} = {rec}(x @ W_{g} + h_prev @ U_{g} + b_{g})" for g in "zr"]
        candidate = f"h~ = {act}(x @ W_h + (r * h_prev) @ U_h + b_h)"
    return [*gates, candidate, "h = z * h_prev + (1 - z) * h~"]
