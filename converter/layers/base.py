"""What every layer op is: the one interface the reader, shapes, ``inspect``, the NumPy runtime, the ONNX
builder and the npz/JSON exporters call, so that everything about one Keras layer lives in one module.

An op is a frozen dataclass holding a layer's options and weights (no trace of the file it came from).
Its methods, in the order data flows:

- ``read(config, arrays, ctx)`` (classmethod): a Keras layer config and its weight arrays -> the op;
  every option that changes the result is converted exactly or refused with ``UnsupportedLayer``.
- ``output_shapes(shapes)``: output shapes from input shapes (batch axis excluded). A dimension that is
  not an ``int`` is unknown: ``None`` in the IR, a symbolic name (``"time"``) in the ONNX graph, which
  passes through to the outputs where the op keeps that axis.
- ``params()`` and ``options()``: the parameter count with its formula, and the options, for ``inspect``.
- ``forward(xs, masks, run)``: the NumPy forward pass with Keras' mask rule.
- ``to_onnx(g, xs, masks)``: the same in ONNX ops, through the graph ``Builder``.
- ``torch_module(g)`` / ``torch_forward(g, outs, xs, masks)``: the layer in the generated PyTorch source
  (``lstm-convert to-pytorch``): the ``nn.Module`` holding its weights, and the lines of ``forward``;
  ``torch_weights(attribute)`` that module's state_dict (the pytorch layout's by default), and
  ``check_torch_source(node)`` what the generated code refuses.
- ``python_code(g, outs, xs, masks)``: the layer in the standalone NumPy script (``lstm-convert to-python``):
  the lines of ``predict`` and, through ``g``, one plainly written function per layer (``pycode.py``).
- ``layout_tensors(name, layout)`` / ``from_layout(...)``: the named tensors of the npz/JSON exports.
- ``config()`` / ``from_config(config)``: the options as plain JSON for the export's description.

Defaults fit a weightless, shape-keeping, mask-keeping layer; each op overrides what differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from converter.errors import UnsupportedLayer
from converter.layers.reading import (  # noqa: F401 - the reading half of the interface, re-exported
    NamedArray,
    ReadContext,
    all_finite,
    expect_arrays,
    flag,
    float32_only,
    inner_layer,
    int_option,
    no_weights,
    read_activation,
)

if TYPE_CHECKING:
    from converter import ir
    from converter.export.onnx_builder import Builder
    from converter.layers.pycode import PyContext, PyResult

Array = np.ndarray
Mask = Array | None
Dim = int | str | None
Shape = tuple[Dim, ...]

#: ONNX element types (``onnx.TensorProto`` values, fixed by the ONNX spec): layer modules need them
#: without importing onnx, which ``inspect`` and the NumPy runtime never load.
FLOAT, INT64, BOOL = 1, 7, 9


class ShapeMismatch(ValueError):
    """Raised with a message that the caller prefixes with the file and layer (``node``, when known)."""

    def __init__(self, message: str, node: ir.Node | None = None) -> None:
        super().__init__(message)
        self.node = node


def known(dim: Dim) -> bool:
    """A dimension of fixed size (not None, not a symbolic ONNX name)."""
    return isinstance(dim, int)


def one_input(shapes: list[Shape]) -> Shape:
    if len(shapes) != 1:
        raise ShapeMismatch(f"takes one input, gets {len(shapes)}")
    return shapes[0]


def keras_axis(axis: int, rank: int, what: str = "axis") -> int:
    """A Keras axis (counting the batch axis as 0, or negative from the end) as an index into a shape
    that excludes the batch axis; ``rank`` is that shape's length."""
    index = axis - 1 if axis > 0 else axis + rank
    if axis == 0 or not 0 <= index < rank:
        raise ShapeMismatch(f"{what} {axis} does not fit a tensor of rank {rank + 1}")
    return index


# --- running ------------------------------------------------------------------------------------------


@dataclass
class RunContext:
    """One node's call in the NumPy runtime: what a forward pass may need besides its inputs."""

    keras_major: int
    where: str  # "layer 'lstm'", for error messages
    node: ir.Node
    #: Values of the node's ``initial_state`` tensors (Keras graph inputs of a recurrent layer).
    initial_state: list[Array] = field(default_factory=list)
    #: States given from outside (the API's ``initial_states``, or a stateful layer's carried states).
    given_states: Mapping[str, list[Array]] | None = None
    #: Per node and kept across calls: what an op precomputes once (stacked recurrent weights).
    cache: dict[str, Any] = field(default_factory=dict)
    #: Set by ops that have states: direction -> final states.
    final_states: dict[str, list[Array]] | None = None
    #: When tracing: where recurrent layers put their per-step gates and states (``lstm/f`` ...).
    trace: dict[str, Array] | None = None


# --- ONNX ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxTensor:
    """A Keras-level tensor in the ONNX graph: its name, element type and shape (batch axis first)."""

    name: str
    type: int
    shape: tuple[Dim, ...]


@dataclass
class OnnxContext:
    """One node's emission into the ONNX graph."""

    b: Builder
    node: ir.Node
    keras_major: int
    state_io: bool  # the graph carries every recurrent layer's states in and out
    batch: Dim  # the graph's batch dimension
    initial_state: list[OnnxTensor] = field(default_factory=list)
    final_states: dict[str, list[str]] | None = None  # set by ops with states, for the graph's state outputs

    @property
    def p(self) -> str:
        """The node's name: the prefix of every ONNX name it emits."""
        return self.node.name

    @property
    def where(self) -> str:
        return f"layer '{self.node.name}' ({self.node.keras_class})"

    def as_float(self, t: OnnxTensor) -> str:
        return t.name if t.type == FLOAT else self.b.op("Cast", [t.name], f"{self.p}/as_float", to=FLOAT)


OnnxResult = tuple[list[str], list[str | None], list[int]]  # output names, their masks, their element types


# --- PyTorch source ---------------------------------------------------------------------------------


@dataclass
class TorchContext:
    """One node's code in the generated PyTorch module (``converter.export.torch_module`` walks the model).

    Code is plain source text: ``xs``/``masks`` passed to ``torch_forward`` are variable names (a mask None
    where the tensor carries none, known while generating, as in the ONNX graph), and ``outs`` the names
    the node's outputs must be assigned to.
    """

    node: ir.Node
    keras_major: int
    module: str  # "self.lstm": where the constructor ``torch_module`` gave is kept ("" when it gave none)
    shapes: list[Shape]  # the input shapes, batch axis excluded
    initial_state: list[str] = field(default_factory=list)  # variables of states wired in the Keras graph
    new_name: Callable[[str], str] = str  # a fresh variable name made from a label
    helpers: dict[str, str] = field(default_factory=dict)  # helper function name -> its source

    @property
    def where(self) -> str:
        return f"layer '{self.node.name}' ({self.node.keras_class})"

    def var(self, label: str) -> str:
        """A fresh variable named after the node: ``lstm_mask``."""
        return self.new_name(f"{self.node.name}_{label}")

    def helper(self, source: str) -> str:
        """Add module-level helper functions (their source) to the file; the name of the last one defined."""
        name = source.rsplit("\ndef ", 1)[-1].removeprefix("def ").split("(", 1)[0]
        self.helpers[name] = source
        return name

    def unsupported(self, what: str) -> UnsupportedLayer:
        return UnsupportedLayer(f"{self.where}: {what}")


TorchResult = tuple[list[str], list[str | None]]  # lines of forward code, the mask variable of each output


def torch_activated(g: TorchContext, name: str, x: str) -> str:
    """The PyTorch expression of Keras activation ``name`` applied to ``x``; refused when torch has none."""
    from converter.activations import torch_activation

    expr = torch_activation(name, g.keras_major, x)
    if expr is None:
        raise g.unsupported(f"activation {name!r} has no PyTorch form yet.")
    return expr


#: The generated file's holder of weights no torch layer module has (statistics, a scale): named tensors.
TORCH_TENSORS = '''def _tensors(frozen=(), **shapes):
    """An nn.Module holding zero tensors of the given shapes under their names (load_state_dict fills them):
    the names in frozen are buffers (statistics), the others parameters."""
    module = nn.Module()
    for name, shape in shapes.items():
        if name in frozen:
            module.register_buffer(name, torch.zeros(shape))
        else:
            module.register_parameter(name, nn.Parameter(torch.zeros(shape)))
    return module
'''


def torch_tensors(g: TorchContext, frozen: tuple[str, ...] = (), **shapes: tuple[int, ...]) -> str:
    """The constructor of a module holding tensors ``shapes`` (name -> shape) as its state_dict; the names
    in ``frozen`` are buffers."""
    args = [f"frozen={frozen!r}"] if frozen else []
    args += [f"{k}={tuple(int(d) for d in v)}" for k, v in shapes.items()]
    return f"{g.helper(TORCH_TENSORS)}({', '.join(args)})"


def torch_number(value: float) -> str:
    """A float as Python source (``float("nan")`` and ``float("-inf")`` where repr is not source)."""
    value = float(value)
    return repr(value) if np.isfinite(value) else f'float("{value}")'


# --- npz/JSON layouts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutTensor:
    """One named array of a layout: its key, shape, a one-line meaning, and how to build it."""

    key: str
    shape: tuple[int, ...]
    meaning: str
    build: Callable[[], Array] = field(repr=False, compare=False)

    def array(self) -> Array:
        return np.ascontiguousarray(self.build(), dtype=np.float32)


LAYOUT_SEP = {"keras": "/", "onnx": "/", "pytorch": "."}


# --- the op ---------------------------------------------------------------------------------------------


class Op:
    """The base of every layer op (see the module docstring). Subclasses are frozen dataclasses."""

    #: The op's type name in npz/JSON descriptions (stable across versions: files keep it).
    op_type: ClassVar[str] = ""
    has_states: ClassVar[bool] = False  # a recurrent layer: initial states in, final states out

    # reading -------------------------------------------------------------------------------------------
    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Op:
        no_weights(arrays, ctx)
        return cls()

    # shapes and masks ------------------------------------------------------------------------------------
    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        return [one_input(shapes)]

    def keeps_states(self) -> bool:
        """A stateful layer: its final states are the next call's initial states."""
        return False

    def state_shapes(self) -> list[Shape]:
        """Shapes of the initial states the layer accepts, in Keras' order (none for most layers)."""
        return []

    def mask_carrying_outputs(self) -> int:
        """How many of the layer's first outputs carry its input's mask (sequences; never states)."""
        return 1

    def masked_input_value(self) -> float | None:
        """The input value that this layer masks out (Masking, Embedding(mask_zero)): verification feeds it."""
        return None

    def vocabulary(self) -> int | None:
        """The number of ids its integer input takes (Embedding); None for layers on float inputs."""
        return None

    passes_through: ClassVar[bool] = False  # the identity at inference (verification looks through it)

    # inspect -------------------------------------------------------------------------------------------
    def params(self) -> tuple[int, str]:
        """The parameter count and its formula, as ``model.summary()`` readers check it."""
        return 0, ""

    def explained_formula(self) -> str:
        """``params()``'s count with every term named (``input 3 x units 5 + bias 5 = 20``); "" without weights."""
        return ""

    def options(self) -> dict[str, Any]:
        return self.config()

    def tensor_shapes(self) -> list[dict[str, Any]]:
        return [{"name": name, "shape": list(array.shape)} for name, array in self.weight_items()]

    def weight_items(self) -> list[NamedArray]:
        """Every weight tensor as ``(name, array)``, names relative to the node."""
        return list((getattr(self, "weights", None) or {}).items())

    def activations(self) -> list[tuple[str, str]]:
        """``(option, activation name)`` pairs, checked when a description is read back."""
        return [(k, getattr(self, k)) for k in ("activation", "recurrent_activation") if getattr(self, k, None)]

    # NumPy -----------------------------------------------------------------------------------------------
    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        raise NotImplementedError(type(self).__name__)

    # ONNX ------------------------------------------------------------------------------------------------
    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        raise UnsupportedLayer(f"{g.where}: no ONNX form for {type(self).__name__}.")

    # PyTorch source ----------------------------------------------------------------------------------
    def torch_module(self, g: TorchContext) -> str | None:
        """The source of the ``nn.Module`` holding the layer's weights (``nn.LSTM(3, 5, batch_first=True)``),
        whose ``state_dict`` keys are those of ``layout_tensors(attribute, "pytorch")``; None without weights."""
        return None

    def torch_weights(self, attribute: str) -> list[LayoutTensor]:
        """The tensors of the generated module's state_dict under ``self.<attribute>``: by default the
        pytorch layout's (the module ``torch_module`` gives is the one that layout describes)."""
        return self.layout_tensors(attribute, "pytorch")

    def check_torch_source(self, node: ir.Node) -> None:
        """Raise ``UnsupportedLayer`` where the generated PyTorch code cannot compute the layer exactly: by
        default what the pytorch layout refuses (torch's own modules hold the weights); ops whose forward
        writes the formula out refuse less."""
        self.check_layout(node, "pytorch")

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """Lines of ``forward`` assigning ``outs`` from ``xs`` (the module is ``g.module``), and the output
        masks, with Keras' mask rule of ``g.keras_major``. Refuses what it cannot compute exactly."""
        raise UnsupportedLayer(f"{g.where}: no PyTorch form for {type(self).__name__} yet.")

    # standalone NumPy script -------------------------------------------------------------------------
    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        """Lines of ``predict`` assigning ``outs`` from ``xs`` (variable names; a mask None where the tensor
        carries none), and the output masks, with Keras' mask rule of ``g.keras_major``."""
        raise UnsupportedLayer(
            f"{g.where}: no standalone-Python form for {type(self).__name__} yet; "
            "export this model with to-onnx or to-npz instead."
        )

    # npz / JSON ------------------------------------------------------------------------------------------
    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        """The tensors the layer owns in ``layout`` (``keras``, ``onnx`` or ``pytorch``)."""
        return []

    def check_layout(self, node: ir.Node, layout: str) -> None:
        """Raise ``UnsupportedLayer`` where ``layout`` cannot hold the layer exactly."""

    def expected_layout_tensors(self, name: str, layout: str, arrays: Mapping[str, Array]) -> list[LayoutTensor]:
        """The keys and shapes a weightless copy of the layer needs (a size the op does not keep, such as a
        Dense's fan-in, may be read from ``arrays``)."""
        return self.layout_tensors(name, layout)

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> Op:
        """The op with its weights taken from ``got`` (keys as ``expected_layout_tensors`` lists them)."""
        return self

    def config(self) -> dict[str, Any]:
        """The options as plain JSON (no weights)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "weights"}  # type: ignore[arg-type]
        return {k: _plain(v) for k, v in values.items()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Op:
        """The op from its ``config()`` (weights left empty, filled by ``from_layout``)."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        values = {k: _unplain(v) for k, v in config.items()}
        return cls(**values, weights={}) if "weights" in names else cls(**values)  # type: ignore[call-arg]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _unplain(value: Any) -> Any:
    return tuple(_unplain(v) for v in value) if isinstance(value, list) else value
