"""Plain SVG pieces of the report: a diverging colour scale, heatmaps, bar charts and line plots.

Every drawn value carries its exact float32 value in a ``<title>`` (the browser shows it on hover), written
with 9 significant digits so that it reads back as the same float32.

>>> import numpy as np
>>> svg = heatmap("W_i", np.array([[0.5, -1.0]], np.float32), scale=1.0, cap=8)
>>> "<title>W_i[0, 1] = -1</title>" in svg
True
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

#: the diverging colours at -1, 0 and +1 of the scale (blue, white, red)
_NEGATIVE, _ZERO, _POSITIVE = (33, 102, 172), (247, 247, 247), (178, 24, 43)
#: line colours of the traced units (and of the gates in bar charts)
PALETTE = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


def num(value: float) -> str:
    """A float32 value as text that reads back as the same float32 (``nan`` for a masked step)."""
    return "nan" if math.isnan(value) else f"{float(value):.9g}"


def text(value: object) -> str:
    return escape(str(value), quote=True)


def colour(value: float, scale: float) -> str:
    """The diverging colour of ``value`` on a scale symmetric around 0 (grey for NaN)."""
    if math.isnan(value):
        return "#bbbbbb"
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    end = _POSITIVE if t > 0 else _NEGATIVE
    rgb = (round(z + (e - z) * abs(t)) for z, e in zip(_ZERO, end, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def svg(width: float, height: float, body: str, cls: str, **data: object) -> str:
    attrs = "".join(f' data-{k.replace("_", "-")}="{text(v)}"' for k, v in data.items())
    return (
        f'<svg class="{cls}" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}"{attrs}>{body}</svg>'
    )


def heatmap(name: str, array: np.ndarray, scale: float, cap: int) -> str:
    """A matrix as coloured cells, at most ``cap`` rows and columns (the first ones), on the shared scale."""
    rows, cols = min(array.shape[0], cap), min(array.shape[1], cap)
    cell = max(4, min(26, 240 // max(rows, cols, 1)))
    parts = []
    for i in range(rows):
        for j in range(cols):
            v = float(array[i, j])
            parts.append(
                f'<rect x="{j * cell}" y="{i * cell}" width="{cell}" height="{cell}" fill="{colour(v, scale)}">'
                f"<title>{text(name)}[{i}, {j}] = {num(v)}</title></rect>"
            )
    return svg(cols * cell, rows * cell, "".join(parts), "heatmap", block=name, rows=rows, cols=cols)


def colour_bar(scale: float) -> str:
    """The legend of a layer's shared colour scale, from -scale to +scale."""
    steps = 40
    fills = [colour((k / (steps - 1) * 2 - 1) * scale, scale) for k in range(steps)]
    parts = [f'<rect x="{70 + k * 5}" y="2" width="5" height="12" fill="{fill}"/>' for k, fill in enumerate(fills)]
    parts.append(f'<text x="66" y="12" text-anchor="end">-{scale:.3g}</text>')
    parts.append(f'<text x="{74 + steps * 5}" y="12">{scale:.3g}</text>')
    return svg(steps * 5 + 140, 18, "".join(parts), "colour-bar")


def bars(vectors: list[tuple[str, np.ndarray]], cap: int) -> str:
    """Bar charts of vectors (biases, peepholes) side by side, at most ``cap`` entries each, on one scale."""
    shown = [(name, v[:cap]) for name, v in vectors]
    top = max((float(np.max(np.abs(v))) for _, v in shown if v.size), default=0.0) or 1.0
    bar, gap, height = 8, 18, 120
    mid = height / 2 + 14
    parts, x = [], 4
    for k, (name, v) in enumerate(shown):
        fill = PALETTE[k % len(PALETTE)]
        parts.append(f'<text x="{x}" y="12">{text(name)}</text>')
        for u, value in enumerate(v):
            value = float(value)
            h = abs(value) / top * (height / 2)
            y = mid - h if value >= 0 else mid
            parts.append(
                f'<rect class="bar" x="{x + u * bar}" y="{y:.2f}" width="{bar - 1}" height="{max(h, 0.5):.2f}" '
                f'fill="{fill}"><title>{text(name)}[{u}] = {num(value)}</title></rect>'
            )
        x += max(len(v) * bar, 7 * len(name) + 4) + gap
    parts.append(f'<line x1="0" y1="{mid}" x2="{x}" y2="{mid}" stroke="#333" stroke-width="0.5"/>')
    return svg(x + 4, height + 20, "".join(parts), "bars", vectors=len(shown))


def line_plot(title: str, values: np.ndarray, units: int) -> str:
    """Per step the values of the first ``units`` units, one line each; NaN (a masked step) breaks a line.

    ``values`` is (steps, units). Each unit's line is one ``<g class="series">`` whose title lists its
    values in step order."""
    steps = values.shape[0]
    shown = values[:, :units]
    finite = shown[np.isfinite(shown)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    width, height, left, top = 230, 110, 34, 16
    plot_w, plot_h = width - left - 6, height - top - 16

    def point(t: int, v: float) -> str:
        x = left + (t / max(steps - 1, 1)) * plot_w
        return f"{x:.1f},{top + (high - v) / (high - low) * plot_h:.1f}"

    parts = [
        f'<text x="{left}" y="11" class="plot-title">{text(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>',
        f'<text x="{left - 3}" y="{top + 8}" text-anchor="end">{high:.2g}</text>',
        f'<text x="{left - 3}" y="{top + plot_h}" text-anchor="end">{low:.2g}</text>',
        f'<text x="{left + plot_w}" y="{height - 3}" text-anchor="end">step {steps - 1}</text>',
        f'<text x="{left}" y="{height - 3}">0</text>',
    ]
    for u in range(shown.shape[1]):
        column = shown[:, u]
        colour_ = PALETTE[u % len(PALETTE)]
        label = f"{title} unit {u}: " + " ".join(num(float(v)) for v in column)
        segments: list[list[str]] = [[]]
        for t, v in enumerate(column):
            if math.isnan(v):
                segments.append([])
            else:
                segments[-1].append(point(t, float(v)))
        segments = [s for s in segments if s]
        drawn = "".join(
            f'<polyline points="{" ".join(s)}" fill="none" stroke="{colour_}" stroke-width="1.3"/>'
            if len(s) > 1
            else f'<circle cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}" r="1.5" fill="{colour_}"/>'
            for s in segments
        )
        parts.append(f'<g class="series" data-unit="{u}"><title>{text(label)}</title>{drawn}</g>')
    return svg(width, height, "".join(parts), "line-plot", steps=steps, units=shown.shape[1])
