"""What a layer op gets when it writes itself into the standalone NumPy script (``lstm-convert to-python``).

``converter.export.python_script`` walks the model; each op's ``python_code(g, outs, xs, masks)`` returns
the lines of ``predict`` that assign ``outs`` and the mask variable of each output. Ops that compute
something define one plainly written function per layer through ``g.function`` (its body reads its
weights from ``WEIGHTS`` by the keys ``g.weight`` registers), so ``predict`` reads as the list of layers.
Nothing here runs the code: it is text, and the weights are collected for the ``.npz``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from converter.errors import UnsupportedLayer

if TYPE_CHECKING:
    from converter import ir
    from converter.layers.base import Shape

PyResult = tuple[list[str], list[str | None]]  # lines of predict, the mask variable of each output


@dataclass
class PyContext:
    """One node's code in the generated script."""

    node: ir.Node
    keras_major: int
    shapes: list[Shape]  # the input shapes, batch axis excluded
    initial_state: list[str] = field(default_factory=list)  # variables of states wired in the Keras graph
    new_name: Callable[[str], str] = str  # a fresh module-level name made from a label
    functions: dict[str, str] = field(default_factory=dict)  # name -> source, in definition order
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # WEIGHTS key -> array

    @property
    def where(self) -> str:
        return f"layer '{self.node.name}' ({self.node.keras_class})"

    @property
    def owner(self) -> str:
        """The node whose weights this call uses (a later call of a shared layer uses the first's)."""
        return self.node.weights_of or self.node.name

    def var(self, label: str) -> str:
        """A fresh variable named after the node: ``lstm_mask``."""
        return self.new_name(f"{self.node.name}_{label}")

    def weight(self, name: str, array: np.ndarray) -> str:
        """Register a weight of the layer; the source expression reading it (``WEIGHTS["lstm/W_i"]``)."""
        key = f"{self.owner}/{name}"
        self.weights[key] = array
        quoted = f'"{key}"' if key.isprintable() and not set(key) & {'"', "\\"} else repr(key)
        return f"WEIGHTS[{quoted}]"

    def helper(self, source: str) -> str:
        """Add module-level helper functions (their source, ``def name(...)``); the last one's name."""
        name = source.rsplit("\ndef ", 1)[-1].removeprefix("def ").split("(", 1)[0]
        self.functions.setdefault(name, source.rstrip("\n") + "\n")
        return name

    def activation(self, name: str) -> str:
        """The helper computing Keras activation ``name`` (defined in the script once), "" for linear (the
        expression is used as it is, ``f"{name}(...)"`` still reads right); refused when there is none."""
        from converter.activations import canonical_name
        from converter.export.python_activations import activation_source

        if canonical_name(name) == "linear":
            return ""  # no call at all: ``x @ W + b`` as it is
        source = activation_source(name, self.keras_major)
        if source is None:
            raise self.unsupported(f"activation {name!r} has no standalone-Python form yet.")
        return self.helper(source)

    def apply(self, name: str, expr: str) -> str:
        """``sigmoid(expr)``: Keras activation ``name`` applied to the expression (``expr`` itself for linear)."""
        helper = self.activation(name)
        return f"{helper}({expr})" if helper else expr

    def function(self, label: str, args: str, doc: str, body: list[str]) -> str:
        """Define the layer's function ``def <label>(<args>):`` with ``doc`` and ``body`` (unindented
        lines); returns its unique name."""
        name = self.new_name(label)
        lines = [f"def {name}({args}):", f'    """{doc}"""', *(f"    {line}" if line else "" for line in body)]
        self.functions[name] = "\n".join(lines) + "\n"
        return name

    def unsupported(self, what: str) -> UnsupportedLayer:
        return UnsupportedLayer(f"{self.where}: {what}")


def number(value: float) -> str:
    """A float as source that rebuilds it exactly (``float("nan")`` where repr is not source)."""
    value = float(value)
    return repr(value) if np.isfinite(value) else f'float("{value}")'


def plain(text: object) -> str:
    r"""Text from a model file (a layer or output name) made safe inside a comment or docstring of the
    script: control characters and backslashes escaped, double quotes made single, so that a name can
    never end a comment or a docstring and become code.

    >>> print(plain("lstm\n" + '"' * 3 + "import os"))
    lstm\n'''import os
    """
    return str(text).encode("unicode_escape").decode("ascii").replace('"', "'")
