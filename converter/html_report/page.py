"""The report page: every panel of a model assembled into one self-contained HTML document.

Panels are ``<figure data-panel="graph|cell|heatmap|bias|trace">``; the page's script marks each one
``data-drawn="1"`` once the browser has laid out its SVG with a non-empty box, and the body
``data-panels-drawn="N/M"``: what the headless-browser test reads back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converter import ir
from converter.html_report.cells import diagram, equations
from converter.html_report.graph import layer_graph
from converter.html_report.svg import bars, colour_bar, heatmap, line_plot, text

#: traced keys in the order the tutorials draw them, with the label they get
TRACE_NAMES = {
    "i": "i",
    "f": "f",
    "c_tilde": "c~",
    "o": "o",
    "c": "c",
    "z": "z",
    "r": "r",
    "h_tilde": "h~",
    "h": "h",
}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
figure{display:inline-block;vertical-align:top;margin:6px 10px 10px 0;padding:6px;border:1px solid #eee}
figcaption{font:12px monospace;color:#444;max-width:320px}
.note{color:#8a5a00;font-size:12px}
svg text{font:10px monospace;fill:#222}svg .name{font-weight:bold;font-size:11px}
.graph .node rect{fill:#f4f6fb;stroke:#7a869a}.graph .recurrent rect{fill:#e6f0ff;stroke:#2d6bd6}
.graph .input rect{fill:#f4fbf4;stroke:#6a9a6a}
.cell-diagram .gate rect{fill:#fff3d6;stroke:#b8860b}.cell-diagram .op circle{fill:#fff;stroke:#555}
.cell-diagram .state circle{fill:#555}.cell-diagram text{font-size:11px}
pre{background:#f7f7f7;padding:8px;font-size:12px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
#readout{position:fixed;right:12px;top:12px;background:#222;color:#fff;font:12px monospace;padding:4px 8px;
border-radius:4px;display:none;max-width:40em}
"""
_JS = """
(function(){
  var panels=document.querySelectorAll('[data-panel]'),drawn=0;
  panels.forEach(function(p){
    var s=p.querySelector('svg'),ok=false;
    if(s){var b=s.getBBox();ok=b.width>0&&b.height>0&&s.querySelectorAll('rect,polyline,circle,line').length>0;}
    p.setAttribute('data-drawn',ok?'1':'0');if(ok)drawn++;
  });
  document.body.setAttribute('data-panels-drawn',drawn+'/'+panels.length);
  var out=document.getElementById('readout');
  document.addEventListener('mouseover',function(e){
    var t=e.target.closest&&e.target.closest('svg *');t=t&&(t.querySelector(':scope>title')||
      (t.parentNode&&t.parentNode.querySelector&&t.parentNode.querySelector(':scope>title')));
    if(t){out.textContent=t.textContent;out.style.display='block';}
  });
})();
"""


def _figure(panel: str, caption: str, body: str, **data: str) -> str:
    attrs = "".join(f' data-{k}="{text(v)}"' for k, v in data.items())
    return f'<figure data-panel="{panel}"{attrs}>{body}<figcaption>{caption}</figcaption></figure>'


def _parameters(doc: dict[str, Any]) -> str:
    rows = []
    for layer in doc["layers"]:
        if not layer["params"] and not layer["tensors"]:
            continue
        tensors = ", ".join(
            f"{t['name']} {tuple(t['shape'])}" + (f" = {t['from']}" if t.get("from") else "") for t in layer["tensors"]
        )
        rows.append(
            f"<tr><td>{text(layer['name'])}</td><td>{text(layer['class'])}</td><td>{layer['params']:,}</td>"
            f"<td><code>{text(layer['formula'])}</code><br>{text(layer.get('explained', ''))}</td>"
            f"<td><code>{text(tensors)}</code></td></tr>"
        )
    head = "<tr><th>layer</th><th>class</th><th>params</th><th>formula</th><th>tensors</th></tr>"
    return f"<table>{head}{''.join(rows)}</table><p>total: {doc['total_params']:,} parameters</p>"


def _capped(shape: tuple[int, ...], cap: int) -> str:
    cut = [f"the first {cap} of {n} {axis}" for n, axis in zip(shape, ("rows", "columns"), strict=False) if n > cap]
    return f'<br><span class="note">showing {" and ".join(cut)}</span>' if cut else ""


def _weights(node: ir.Node, cap: int) -> str:
    """Heatmaps of every gate block (one colour scale for the whole layer) and the bias charts."""
    directions = ir.recurrent_directions(node.layer)
    blocks = [a for d in directions.values() for a in d.weights.values() if a.ndim == 2 and a.size]
    scale = max((float(np.max(np.abs(a))) for a in blocks), default=1.0) or 1.0
    parts = [f"<p>colour scale of every block of this layer: {colour_bar(scale)}</p>"]
    for d, op in directions.items():
        sources = {t["name"]: t.get("from", "") for t in op.tensor_shapes()}
        if d:
            parts.append(f"<h4>{text(d)}</h4>")
        for name, array in op.weights.items():
            if array.ndim != 2:
                continue
            caption = f"{text(name)} {tuple(array.shape)} = {text(sources.get(name, ''))}{_capped(array.shape, cap)}"
            parts.append(_figure("heatmap", caption, heatmap(name, array, scale, cap), layer=node.name, direction=d))
        vectors = [(name, a) for name, a in op.weights.items() if a.ndim == 1]
        if vectors:
            top = max(float(np.max(np.abs(a))) for _, a in vectors)
            caption = "biases" + (" and peepholes" if op.peephole else "") + f", bars up to ±{top:.3g}"
            caption += _capped((op.units,), cap)
            parts.append(_figure("bias", caption, bars(vectors, cap), layer=node.name, direction=d))
        elif not op.use_bias:
            parts.append('<p class="note">use_bias=False: no bias</p>')
    return "".join(parts)


def trace_keys(node: ir.Node, traced: dict[str, np.ndarray]) -> list[tuple[str, str, str]]:
    """(direction, key, label) of every traced array of the node, in the tutorials' order."""
    found = []
    for d in ir.recurrent_directions(node.layer):
        prefix = f"{node.name}/{d}/" if d else f"{node.name}/"
        found += [(d, prefix + k, label) for k, label in TRACE_NAMES.items() if prefix + k in traced]
    return found


def _traces(node: ir.Node, traced: dict[str, np.ndarray], units: int, steps: int) -> str:
    parts = []
    for d, key, label in trace_keys(node, traced):
        values = traced[key][0, :steps]
        caption = f"{text(key)}: sample 0, units 0-{min(units, values.shape[1]) - 1} of {values.shape[1]}"
        if traced[key].shape[1] > steps:
            caption += f'<br><span class="note">the first {steps} of {traced[key].shape[1]} steps</span>'
        title = f"{d} {label}".strip()
        parts.append(_figure("trace", caption, line_plot(title, values, units), layer=node.name, key=key))
    return "".join(parts)


def _recurrent(node: ir.Node, traced: dict[str, np.ndarray], cap: int, units: int, steps: int) -> str:
    layer = node.layer
    directions = ir.recurrent_directions(layer)
    parts = [f'<section class="layer" data-layer="{text(node.name)}">']
    parts.append(f"<h2>{text(node.name)} ({text(node.keras_class)})</h2>")
    parts.append(f"<p><code>{text(layer.explained_formula())}</code></p>")
    seen = set()
    for d, op in directions.items():
        key = (op.kind, op.activation, op.recurrent_activation, op.reset_after, op.peephole, op.use_bias)
        if key in seen:
            continue
        seen.add(key)
        which = [name for name, other in directions.items() if other.kind == op.kind] if d else []
        lines = equations(
            op.kind,
            op.activation,
            op.recurrent_activation,
            reset_after=op.reset_after,
            peephole=op.peephole,
            use_bias=op.use_bias,
        )
        caption = f"{op.kind.upper().replace('SIMPLE_RNN', 'SimpleRNN')}({op.units}) cell" + (
            f" ({', '.join(which)})" if which else ""
        )
        body = diagram(op.kind, op.activation, op.recurrent_activation) + f"<pre>{text(chr(10).join(lines))}</pre>"
        parts.append(_figure("cell", caption, body, layer=node.name, direction=d))
    if node.weights_of is not None:
        parts.append(f'<p class="note">shares the weights of {text(node.weights_of)}, drawn there.</p>')
    else:
        parts.append("<h3>weights</h3>" + _weights(node, cap))
    found = _traces(node, traced, units, steps)
    if found:
        parts.append("<h3>gate activations per step</h3>" + found)
    parts.append("</section>")
    return "".join(parts)


def page(
    model: ir.Model,
    doc: dict[str, Any],
    traced: dict[str, np.ndarray],
    sample: str,
    *,
    cap: int,
    units: int,
    steps: int,
) -> str:
    """The whole HTML document (``doc`` is ``summarize(model)``, ``traced`` is ``LoadedModel.trace``'s)."""
    recurrent = "".join(_recurrent(n, traced, cap, units, steps) for n in model.recurrent_nodes)
    title = f"{model.name}: lstm-convert report"
    head = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{text(title)}</title>'
        f"<style>{_CSS}</style></head><body>"
    )
    intro = (
        f"<h1>{text(model.name)}</h1><p>{text(model.source)} (Keras {text(model.keras_version)}), "
        f"{doc['total_params']:,} parameters. Traces: {text(sample)}. Hover a cell, bar or line for its value.</p>"
    )
    graph = _figure("graph", "layer graph: output shapes and parameter counts", layer_graph(model, doc))
    body = (
        f"{intro}<h2>layers</h2>{graph}<h2>parameters</h2>{_parameters(doc)}{recurrent or '<p>no recurrent layers</p>'}"
    )
    return f'{head}{body}<div id="readout"></div><script>{_JS}</script></body></html>\n'
