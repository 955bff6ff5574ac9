"""Generate the standalone NumPy script of an IR model (``lstm-convert to-python``).

The script needs only NumPy: one plainly written function per layer (each op writes its own through
``Op.python_code``, see ``converter.layers.pycode``), a plain loop over the time steps of every recurrent
layer with its gates named as the tutorials name them, and ``predict(inputs..., states=None)`` calling
the layers in graph order. This module walks the model as ``torch_module`` does, keeping each Keras
tensor's variable and its mask's (None where it has none, known while generating). The weights go to an
``.npz`` beside the script, or are embedded in it (base64 of the same npz: exact float32 bits).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from converter import __version__, ir
from converter.export.python_activations import _SOURCES
from converter.export.torch_module import Names
from converter.layers.base import Shape
from converter.layers.pycode import PyContext, plain

#: Module-level names of the script that no layer function or variable may take.
_RESERVED = {"np", "math", "base64", "io", "Path", "WEIGHTS", "predict", "states", "carried", "full_mask"}
_RESERVED |= {*_SOURCES, "hard_sigmoid", "x", "mask", "h", "c", "elu", "softplus", "sigmoid"}
#: The helpers layer code may add (``PyContext.helper``): a layer function must not take their names.
_RESERVED |= {"same_rank", "windows", "conv", "masked_softmax", "causal_mask", "rsqrt", "l2_normalize"}
_RESERVED |= {"l2_normalize_dot", "_npz", "_NPZ"}


@dataclass
class PythonScript:
    """The generated script's text and the weights it reads (``WEIGHTS`` key -> float32 array)."""

    text: str
    weights: dict[str, np.ndarray]


def npz_bytes(weights: dict[str, np.ndarray]) -> bytes:
    """The weights as an uncompressed npz (what ``np.load(..., allow_pickle=False)`` reads back exactly)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.ascontiguousarray(a, dtype=np.float32) for k, a in weights.items()})
    return buffer.getvalue()


class _Walk:
    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.names = Names(set(_RESERVED))
        self.functions: dict[str, str] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.body: list[str] = []
        self.values: dict[ir.TensorRef, str] = {}
        self.masks: dict[ir.TensorRef, str | None] = {}
        self.shapes: dict[ir.TensorRef, Shape] = {}
        self.inputs: list[str] = []
        self.stateful = False

    def run(self) -> None:
        for spec in self.model.inputs:
            ref = ir.TensorRef(spec.name, 0)
            self.values[ref], self.masks[ref], self.shapes[ref] = self.names.new(spec.name), None, spec.shape
            self.inputs.append(self.values[ref])
        for node in self.model.nodes:
            self._node(node)

    def _node(self, node: ir.Node) -> None:
        layer = node.layer
        xs = [self.values[r] for r in node.inputs]
        ms = [self.masks[r] for r in node.inputs]
        shapes = [self.shapes[r] for r in node.inputs]
        g = PyContext(node, self.model.keras_major, shapes, [self.values[r] for r in node.initial_state])
        g.new_name, g.functions, g.weights = self.names.new, self.functions, self.weights
        lines = [f"# {plain(node.name)} ({plain(node.keras_class)})" + (" again" if node.weights_of else "")]
        flowing = ms[0]
        if node.mask is not None:  # an explicit mask= replaces the propagated one (like the runtime)
            given = g.var("given_mask")
            lines.append(f"{given} = {self.values[node.mask]}.astype(bool)")
            ms[0] = given
        elif not node.receives_mask:  # computes unmasked; its outputs still carry the flowing mask
            ms[0] = None
        out_shapes = layer.output_shapes(shapes)
        outs = [self.names.new(f"{node.name}_out" if k == 0 else f"{node.name}_out{k}") for k in range(len(out_shapes))]
        code, out_masks = layer.python_code(g, outs, xs, ms)
        if not node.receives_mask:
            carrying = layer.mask_carrying_outputs()
            out_masks = [flowing if k < carrying else None for k in range(len(outs))]
        self.stateful = self.stateful or layer.keeps_states()
        self.body += [*lines, *code]
        for k, (out, mask, shape) in enumerate(zip(outs, out_masks, out_shapes, strict=True)):
            ref = ir.TensorRef(node.name, k)
            self.values[ref], self.masks[ref], self.shapes[ref] = out, mask, shape


def _shape_text(shape: Shape, batch: int | None) -> str:
    dims = ["batch" if batch is None else str(batch), *("time" if d is None else str(d) for d in shape)]
    return f"({', '.join(dims)})"


def _base64_lines(data: bytes, width: int = 100) -> list[str]:
    text = base64.b64encode(data).decode("ascii")
    return [f'    "{text[k : k + width]}"' for k in range(0, len(text), width)]


def build_python_script(model: ir.Model, weights_name: str, source: str, embed: bool = False) -> PythonScript:
    """The script computing what ``model`` computes, reading its weights from ``weights_name`` beside it
    (or, with ``embed``, from the script itself). Raises ``UnsupportedLayer`` for a layer with no
    standalone-Python form (before anything is written).

    >>> import converter
    >>> script = build_python_script(converter.load("fixtures/keras3/tutorial.keras").ir, "t.npz", "t")
    >>> [line for line in script.text.splitlines() if line.startswith("def ")]
    ['def sigmoid(x):', 'def tanh(x):', 'def lstm(x, h, c):', 'def dense(x):', 'def predict(input_layer, states=None):']
    """
    walk = _Walk(model)
    walk.run()
    stem, source = plain(weights_name.removesuffix(".npz")), plain(source)
    functions = "\n\n".join(walk.functions.values())
    outputs = [walk.values[ref] for ref in model.outputs]
    arg_doc = [
        f"        {name}: {'ids' if spec.dtype != 'float32' else 'float32'} {_shape_text(spec.shape, spec.batch_size)}"
        f" (Keras input '{plain(spec.name)}')"
        for name, spec in zip(walk.inputs, model.inputs, strict=True)
    ]
    where = "embedded in this file (base64 of an .npz)" if embed else f"in {weights_name} beside this file"
    text = [
        f'"""{stem}: the Keras model {source} as plain NumPy, generated by lstm-convert {__version__}.',
        "",
        f"It computes what the Keras model (Keras {plain(model.keras_version)}) computes, masks included: one function",
        "per layer, each recurrent layer a plain loop over the time steps with its gates named as in the",
        f"tutorials. It needs only NumPy; the weights are {where}. Usage:",
        "",
        f"    from {stem} import predict",
        f"    outputs = predict({', '.join(walk.inputs)})",
    ]
    if walk.stateful:
        text += [
            "",
            "Stateful layers: pass a dict as states= and pass the same dict again; each call starts from the",
            "states the last one ended with (an empty dict: zeros, as after Keras' reset_states()).",
        ]
    text += ['"""', ""]
    if "math." in functions:
        text.append("import math")
    if embed:
        text += ["import base64", "import io"]
    else:
        text.append("from pathlib import Path")
    text += ["", "import numpy as np", ""]
    if embed:
        text += ["_NPZ = (", *_base64_lines(npz_bytes(walk.weights)), ")"]
        opened = "io.BytesIO(base64.b64decode(_NPZ))"
    else:
        opened = f'Path(__file__).with_name("{weights_name}")'
    text += [
        f"with np.load({opened}, allow_pickle=False) as _npz:",
        "    WEIGHTS = {key: _npz[key] for key in _npz.files}",
        "",
        "",
    ]
    if functions:
        text += [functions, ""]
    args = ", ".join([*walk.inputs, "states=None"])
    floats = [n for n, spec in zip(walk.inputs, model.inputs, strict=True) if spec.dtype == "float32"]
    out_doc = ", ".join(f"'{plain(n)}'" for n in model.output_names)
    state_doc = "states: a dict carrying the stateful layers' states from call to call (see above)."
    text += [
        f"def predict({args}):",
        f'    """The Keras model {plain(model.name) or source}, layer by layer; returns {out_doc}.',
        "",
        "    Args:",
        *arg_doc,
        f"        {state_doc if walk.stateful else 'states: unused (the model has no stateful layer).'}",
        '    """',
        *(f"    {n} = np.asarray({n}, np.float32)" for n in floats),
        *(f"    {line}" for line in walk.body),
        f"    return {', '.join(outputs)}",
        "",
    ]
    return PythonScript("\n".join(text), walk.weights)
