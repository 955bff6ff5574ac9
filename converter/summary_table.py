"""Render an ``inspect`` document as a terminal table, like Keras' ``model.summary()`` at gate level."""

from __future__ import annotations

import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table


def _shape(shape: list[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _tensor_lines(tensors: list[dict[str, Any]]) -> list[str]:
    """Group gate tensors of one shape: ``W_i W_f W_c W_o  (3, 5)``; Bidirectional ones once for both."""
    groups: dict[tuple[str, str, tuple[int, ...]], dict[str, None]] = {}
    directions: dict[tuple[str, str, tuple[int, ...]], set[str]] = {}
    sources: dict[tuple[str, str, tuple[int, ...]], dict[str, None]] = {}
    for t in tensors:
        direction, _, name = t["name"].rpartition("/")
        owner = direction if direction.startswith("cell_") else ""  # a stacked RNN's cells are shown apart
        key = (owner, re.sub(r"_[a-z]$", "", name), tuple(t["shape"]))
        groups.setdefault(key, {})[name] = None
        directions.setdefault(key, set()).add(direction)
        if t.get("from"):  # the slice of the Keras weight, without the direction (same in both)
            sources.setdefault(key, {})[t["from"].split("_layer ", 1)[-1]] = None
    lines = []
    for key, names in groups.items():
        where = "  each direction" if len(directions[key]) > 1 else ""
        found = list(sources.get(key, {}))
        origin = f"  = {found[0]}" + "".join(f", {f[f.find('[') :]}" for f in found[1:]) if found else ""
        owner = f"{key[0]}/" if key[0] else ""
        lines.append(f"{owner}{' '.join(names)}  {_shape(list(key[2]))}{origin}{where}")
    return lines


def _options(options: dict[str, Any]) -> str:
    flat = []
    for key, value in options.items():
        if key in ("forward", "backward"):
            continue
        if key == "cells" and isinstance(value, list):  # a stacked RNN: each cell's own options
            flat += [f"cell_{k}: {_options(cell)}" for k, cell in enumerate(value)]
            continue
        if isinstance(value, bool):
            if value:
                flat.append(key)
        else:
            flat.append(f"{key}={value}")
    if "forward" in options:
        flat.append(_options(options["forward"]))
    return ", ".join(flat)


def print_summary(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"Model: {doc['model']}  (Keras {doc['keras_version']}, {doc['source']})", title_justify="left")
    table.add_column("Layer (type)", no_wrap=True)
    table.add_column("Output shape")
    table.add_column("Params", justify="right")
    table.add_column("Formula / tensors")
    for spec in doc["inputs"]:
        table.add_row(f"{spec['name']} (Input)", _shape(spec["shape"]), "0", spec["dtype"])
    for layer in doc["layers"]:
        outputs = "\n".join(_shape(s) for s in layer["output_shapes"])
        explained = [layer["explained"]] if layer.get("explained") not in (None, layer["formula"]) else []
        lines = [layer["formula"], *explained, _options(layer["options"]), *_tensor_lines(layer["tensors"])]
        detail = "\n".join(lines).strip()
        table.add_row(f"{layer['name']} ({layer['class']})", outputs, f"{layer['params']:,}", detail)
        table.add_section()
    console.print(table)
    outputs = ", ".join(f"{o['name']} {_shape(o['shape'])}" for o in doc["outputs"])
    console.print(f"Total params: {doc['total_params']:,}    Outputs: {outputs}")
