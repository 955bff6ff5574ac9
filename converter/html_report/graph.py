"""The layer graph of the report: one box per model input and layer call, one arrow per tensor it reads.

Boxes are placed in rows by depth (the longest path from an input), so a Sequential model is one column
and a functional model's branches sit side by side. Each box shows the name, the Keras class, the output
shape(s) and the parameter count, with the formula in its title.
"""

from __future__ import annotations

from typing import Any

from converter import ir
from converter.html_report.svg import svg, text

BOX_W, BOX_H, GAP_X, GAP_Y = 200, 62, 24, 34


def _shape(shape: list) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _short(label: str, limit: int = 28) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def edges(model: ir.Model) -> list[tuple[str, str]]:
    """(source, target) per tensor a layer reads: its inputs, then the initial states wired to it."""
    return [(ref.node, node.name) for node in model.nodes for ref in (*node.inputs, *node.initial_state)]


def layer_graph(model: ir.Model, doc: dict[str, Any]) -> str:
    """The graph as SVG; ``doc`` is the model's ``inspect`` document (``converter.summary.summarize``)."""
    depth: dict[str, int] = {spec.name: 0 for spec in model.inputs}
    for node in model.nodes:  # nodes are in topological order
        sources = [ref.node for ref in (*node.inputs, *node.initial_state)]
        depth[node.name] = 1 + max((depth.get(s, 0) for s in sources), default=0)
    rows: dict[int, list[str]] = {}
    for name, d in depth.items():
        rows.setdefault(d, []).append(name)
    widest = max(len(r) for r in rows.values())
    width = widest * (BOX_W + GAP_X) + GAP_X
    place: dict[str, tuple[float, float]] = {}
    for d, names in rows.items():
        offset = (width - len(names) * (BOX_W + GAP_X) + GAP_X) / 2
        for k, name in enumerate(names):
            place[name] = (offset + k * (BOX_W + GAP_X), GAP_Y / 2 + d * (BOX_H + GAP_Y))
    height = (max(rows) + 1) * (BOX_H + GAP_Y)
    layers = {layer["name"]: layer for layer in doc["layers"]}
    inputs = {spec["name"]: spec for spec in doc["inputs"]}
    parts = [
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>'
    ]
    for source, target in edges(model):
        (x1, y1), (x2, y2) = place[source], place[target]
        parts.append(
            f'<line class="edge" x1="{x1 + BOX_W / 2:.1f}" y1="{y1 + BOX_H:.1f}" x2="{x2 + BOX_W / 2:.1f}" '
            f'y2="{y2 - 2:.1f}" stroke="#555" marker-end="url(#arrow)"/>'
        )
    for name, (x, y) in place.items():
        if name in inputs:
            lines = [name, "Input", _shape(inputs[name]["shape"]), inputs[name]["dtype"]]
            tip, cls = f"input {name} {_shape(inputs[name]['shape'])}", "input"
        else:
            layer = layers[name]
            shapes = ", ".join(_shape(s) for s in layer["output_shapes"])
            lines = [name, layer["class"], shapes, f"{layer['params']:,} params"]
            tip = f"{name} ({layer['class']}): {shapes}; params {layer['formula'] or 0}"
            cls = "recurrent" if any(n.name == name and n.layer.has_states for n in model.nodes) else "layer"
        body = "".join(
            f'<text x="{x + 8}" y="{y + 15 + 14 * k}" class="{"name" if k == 0 else "info"}">{text(_short(s))}</text>'
            for k, s in enumerate(lines)
        )
        parts.append(
            f'<g class="node {cls}" data-node="{text(name)}"><title>{text(tip)}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/>{body}</g>'
        )
    return svg(width, height, "".join(parts), "graph", nodes=len(place), edges=len(edges(model)))
