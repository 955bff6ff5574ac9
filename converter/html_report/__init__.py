"""``lstm-convert report``: one self-contained HTML page that shows what a recurrent model computes.

The page holds the layer graph, per recurrent layer its cell diagram and equations, a heatmap of every
gate block on one colour scale per layer, bar charts of the biases, the parameter formulas, and the
per-step gate activations of a sample input, all as inline SVG (no network access needed to view it).
The SVG is written here in plain Python (``svg.py``, ``graph.py``, ``cells.py``; ``page.py`` assembles).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from converter.errors import BadOptions

if TYPE_CHECKING:
    from converter.api import LoadedModel

#: Heatmaps and bar charts draw at most this many rows, columns and units per block by default.
MAX_CELLS = 32
#: Trace plots draw at most this many units (one line each) and steps by default.
TRACE_UNITS, TRACE_STEPS = 8, 200


def report(
    model: str | Path | LoadedModel,
    out: str | Path,
    *,
    inputs: Mapping[str, np.ndarray] | np.ndarray | None = None,
    config: str | Path | None = None,
    force: bool = False,
    max_cells: int = MAX_CELLS,
    trace_units: int = TRACE_UNITS,
    trace_steps: int = TRACE_STEPS,
    max_weights_gb: float | None = None,
) -> Path:
    """Write the visual report of ``model`` (a Keras file, an npz/JSON export, or a loaded model) to ``out``.

    The traces are of ``inputs`` (arrays by input name, or one array; sample 0 of the batch is drawn), by
    default of the seeded sample inputs verification uses. Blocks larger than ``max_cells`` rows or columns
    show the first ones, and trace plots the first ``trace_units`` units and ``trace_steps`` steps, each with
    a note. Written atomically; an existing ``out`` is refused unless ``force``. A loaded stateful model's
    states advance as in one ``predict`` call. Returns the path written.

    >>> import converter, tempfile
    >>> out = Path(tempfile.mkdtemp()) / "tutorial.html"
    >>> converter.report("fixtures/keras3/tutorial.keras", out).name
    'tutorial.html'
    >>> "<svg" in out.read_text() and "http://" not in out.read_text()
    True
    """
    from converter.api import LoadedModel, load
    from converter.files import atomic_outputs, check_target
    from converter.html_report.page import page
    from converter.summary import summarize

    out = Path(out)
    for name, value in (("max_cells", max_cells), ("trace_units", trace_units), ("trace_steps", trace_steps)):
        if not isinstance(value, int) or value < 1:
            raise BadOptions(f"{out}: {name} is {value!r}; give a positive whole number.")
    check_target(out, force)
    loaded = model if isinstance(model, LoadedModel) else load(model, config, max_weights_gb=max_weights_gb)
    if inputs is None:
        from converter.verification import sample_inputs

        feeds, sample = sample_inputs(loaded.ir, batch=1), "the seeded sample input (seed 0)"
    else:
        feeds, sample = inputs, "the given input"
    traced = loaded.trace(feeds)
    html = page(
        loaded.ir,
        summarize(loaded.ir),
        traced,
        f"{sample}, sample 0",
        cap=max_cells,
        units=trace_units,
        steps=trace_steps,
    )
    with atomic_outputs([out], force) as (tmp,):
        tmp.write_text(html, encoding="utf-8")
    return out
