"""``LSTM``, ``GRU``, ``SimpleRNN`` and ``Bidirectional``: reading, shapes, parameters, and the calls into
the NumPy cell (``cell.py``), the fused ONNX node (``onnx_node.py``) and the layouts (``layouts.py``).

Weights are split into named gate tensors in the canonical (Keras) order of ``converter.gates``:

- LSTM: ``W_i W_f W_c W_o`` (input_dim, units), ``U_*`` (units, units), ``b_*`` (units,)
- GRU: ``W_z W_r W_h``, ``U_*``, ``b_*`` and, with reset_after, recurrent biases ``rb_z rb_r rb_h``
- SimpleRNN: ``W``, ``U``, ``b``
- a peephole LSTM (``PeepholeLSTMCell``) adds the peephole weights ``P_i P_f P_o`` (units,)

Bias tensors are absent when ``use_bias`` is false.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from converter.gates import CANONICAL, PEEPHOLE_ORDER, gate_tensor_name, split_gates
from converter.layers.base import (
    Array,
    LayoutTensor,
    Mask,
    NamedArray,
    OnnxContext,
    OnnxResult,
    OnnxTensor,
    Op,
    ReadContext,
    RunContext,
    Shape,
    ShapeMismatch,
    TorchContext,
    TorchResult,
    expect_arrays,
    flag,
    float32_only,
    inner_layer,
    known,
    one_input,
    read_activation,
)

if TYPE_CHECKING:
    from converter.layers.pycode import PyContext, PyResult

RecurrentKind = Literal["lstm", "gru", "simple_rnn"]
RECURRENT_CLASSES: dict[str, RecurrentKind] = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "simple_rnn"}
_PEEPHOLE_WORDS = {"i": "input", "f": "forget", "o": "output"}
GATE_COUNT = {"lstm": 4, "gru": 3, "simple_rnn": 1}
#: The gates a peephole LSTM's cell state feeds, in Keras' weight order (input, forget, output).
PEEPHOLES = PEEPHOLE_ORDER["keras"]


@dataclass(frozen=True, eq=False)
class Recurrent(Op):
    """An LSTM, GRU or SimpleRNN layer (also each direction of a Bidirectional one)."""

    op_type: ClassVar[str] = "recurrent"
    has_states: ClassVar[bool] = True
    kind: RecurrentKind  # which recurrent layer: "lstm", "gru" or "simple_rnn"
    units: int
    input_dim: int
    activation: str
    recurrent_activation: str | None
    use_bias: bool
    return_sequences: bool
    return_state: bool
    go_backwards: bool
    stateful: bool
    reset_after: bool
    #: Masked steps output zeros instead of repeating the last output (Keras forces this inside
    #: Bidirectional when return_sequences is true).
    zero_output_for_mask: bool
    weights: dict[str, np.ndarray] = field(repr=False)
    #: An LSTM with peephole connections (tf.keras ``PeepholeLSTMCell``): the input and forget gates see
    #: the previous cell state, the output gate the new one, through the diagonal weights ``P_i P_f P_o``.
    peephole: bool = False

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Recurrent:
        """Split kernel, recurrent kernel and bias into named gate tensors."""
        return cls.of_kind(RECURRENT_CLASSES[ctx.class_name], config, arrays, ctx)

    @classmethod
    def of_kind(
        cls,
        kind: RecurrentKind,
        config: Mapping[str, Any],
        arrays: list[NamedArray],
        ctx: ReadContext,
        peephole: bool = False,
    ) -> Recurrent:
        """A recurrent layer of ``kind`` from a layer config (or an RNN config merged with its cell's)."""
        float32_only(config, ctx)
        if flag(config, "time_major"):
            raise ctx.unsupported("time_major=True is not supported; save the model with batch-major inputs.")
        units = config.get("units")
        if not isinstance(units, int) or units <= 0:
            raise ctx.bad(f"units is {units!r}, not a positive integer.")
        activation = read_activation(config, "activation", "tanh", ctx)
        recurrent_activation = (
            None if kind == "simple_rnn" else read_activation(config, "recurrent_activation", "sigmoid", ctx)
        )
        use_bias = flag(config, "use_bias", True)
        reset_after = kind == "gru" and flag(config, "reset_after", True)
        gates = CANONICAL[kind]
        width = len(gates) * units
        if not arrays:
            raise ctx.bad("the file holds no weights for it.")
        input_dim = int(arrays[0][1].shape[0]) if arrays[0][1].ndim == 2 else -1
        shapes: list[tuple[int, ...]] = [(input_dim, width), (units, width)]
        if use_bias:
            shapes.append((2, width) if reset_after else (width,))
        if peephole:  # added by PeepholeLSTMCell.build after the LSTM's own weights
            shapes += [(units,)] * len(PEEPHOLES)
        kernel, recurrent, *rest = expect_arrays(arrays, shapes, ctx)
        bias, peepholes = rest[: int(use_bias)], rest[int(use_bias) :]
        weights: dict[str, np.ndarray] = {}
        for prefix, matrix in (("W", kernel), ("U", recurrent)):
            for gate, block in split_gates(matrix, gates, axis=1).items():
                weights[gate_tensor_name(prefix, gate)] = block
        if use_bias:
            rows = bias[0] if reset_after else bias[0][None, :]
            for prefix, row in zip(("b", "rb"), rows, strict=False):
                for gate, block in split_gates(row, gates, axis=0).items():
                    weights[gate_tensor_name(prefix, gate)] = block
        for gate, vector in zip(PEEPHOLES, peepholes, strict=False):
            weights[gate_tensor_name("P", gate)] = vector
        return cls(
            kind=kind,
            units=units,
            input_dim=input_dim,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            return_sequences=flag(config, "return_sequences"),
            return_state=flag(config, "return_state"),
            go_backwards=flag(config, "go_backwards"),
            stateful=flag(config, "stateful"),
            reset_after=reset_after,
            zero_output_for_mask=flag(config, "zero_output_for_mask"),
            weights=weights,
            peephole=peephole,
        )

    # what a recurrent layer is --------------------------------------------------------------------------
    @property
    def gates(self) -> tuple[str, ...]:
        return CANONICAL[self.kind]

    @property
    def state_names(self) -> tuple[str, ...]:
        """The recurrent states in Keras' order: LSTM has h and c, GRU and SimpleRNN only h."""
        return ("h", "c") if self.kind == "lstm" else ("h",)

    @property
    def directions(self) -> dict[str, Recurrent]:
        """``{"": self}``; a Bidirectional layer has ``{"forward": .., "backward": ..}``."""
        return {"": self}

    def keeps_states(self) -> bool:
        return self.stateful

    def mask_carrying_outputs(self) -> int:
        return 1 if self.return_sequences else 0

    def tensor(self, prefix: str, gate: str) -> np.ndarray:
        return self.weights[gate_tensor_name(prefix, gate)]

    # shapes -------------------------------------------------------------------------------------------
    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        shape = one_input(shapes)
        if len(shape) != 2:
            raise ShapeMismatch(f"expects (time, features) inputs but gets shape {shape}")
        if known(shape[1]) and shape[1] != self.input_dim:
            raise ShapeMismatch(f"its kernel expects {self.input_dim} features but it is fed {shape[1]}")
        out: Shape = (shape[0], self.units) if self.return_sequences else (self.units,)
        states: list[Shape] = [(self.units,)] * len(self.state_names) if self.return_state else []
        return [out, *states]

    def state_shapes(self) -> list[Shape]:
        return [(d.units,) for d in self.directions.values() for _ in d.state_names]

    # inspect ------------------------------------------------------------------------------------------
    def formula(self) -> tuple[str, int]:
        """The parameter formula of one direction, e.g. ``4*(3*5 + 5*5 + 5)``, and its value."""
        n, h = self.input_dim, self.units
        terms, value = [f"{n}*{h}", f"{h}*{h}"], n * h + h * h
        if self.use_bias:
            terms.append(f"2*{h}" if self.reset_after else f"{h}")
            value += 2 * h if self.reset_after else h
        gates = GATE_COUNT[self.kind]
        expr = " + ".join(terms)
        expr, value = (f"{gates}*({expr})" if gates > 1 else expr), gates * value
        if self.peephole:  # one diagonal weight vector per peephole gate
            expr, value = f"{expr} + {len(PEEPHOLES)}*{h}", value + len(PEEPHOLES) * h
        return expr, value

    def params(self) -> tuple[int, str]:
        expr, total = self.formula()
        return total, f"{expr} = {total}"

    def explained_terms(self) -> str:
        """One direction's count with named terms: ``4 gates x (input_dim 3 x units 5 + ...)``."""
        n, h = self.input_dim, self.units
        terms = [f"input_dim {n} x units {h}", f"units {h} x units {h}"]
        if self.use_bias:
            terms += [f"input bias {h}", f"recurrent bias {h}"] if self.reset_after else [f"bias {h}"]
        gates = GATE_COUNT[self.kind]
        inner = " + ".join(terms)
        peepholes = f" + 3 peepholes x units {h}" if self.peephole else ""
        return (f"{gates} gates x ({inner})" if gates > 1 else inner) + peepholes

    def explained_formula(self) -> str:
        return f"{self.explained_terms()} = {self.params()[0]}"

    def tensor_shapes(self) -> list[dict[str, Any]]:
        """Each gate tensor with the slice of the Keras weight it is: ``W_f = kernel[:, 5:10]``."""
        found = []
        for name, array in self.weights.items():
            prefix, _, gate = name.partition("_")
            k, h = (self.gates.index(gate) if gate in self.gates else 0), self.units
            cols = f"{k * h}:{(k + 1) * h}"
            source = {
                "W": f"kernel[:, {cols}]",
                "U": f"recurrent_kernel[:, {cols}]",
                "b": f"bias[0, {cols}]" if self.reset_after else f"bias[{cols}]",
                "rb": f"bias[1, {cols}]",
                "P": f"{_PEEPHOLE_WORDS.get(gate, gate)}_gate_peephole_weights",
            }[prefix]
            found.append({"name": name, "shape": list(array.shape), "from": source})
        return found

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"units": self.units, "activation": self.activation}
        if self.recurrent_activation is not None:
            options["recurrent_activation"] = self.recurrent_activation
        options |= {
            "use_bias": self.use_bias,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
        }
        if self.kind == "gru":
            options["reset_after"] = self.reset_after
        if self.peephole:
            options["peephole"] = True
        return options

    # NumPy --------------------------------------------------------------------------------------------
    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        from converter.layers.recurrent.cell import run_layer

        return run_layer(self, xs[0], masks[0], run, None)

    # ONNX ---------------------------------------------------------------------------------------------
    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        from converter.layers.recurrent.onnx_node import emit_layer

        return emit_layer(self, g, xs[0], masks[0])

    def torch_module(self, g: TorchContext) -> str | None:
        from converter.layers.recurrent.torch_code import torch_module

        return torch_module(self, g)

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        from converter.layers.recurrent.torch_code import torch_forward

        return torch_forward(self, g, outs, xs[0], masks[0])

    def torch_weights(self, attribute: str) -> list[LayoutTensor]:
        from converter.layers.recurrent.torch_code import torch_weights

        return torch_weights(self, attribute)

    def check_torch_source(self, node: Any) -> None:
        from converter.layers.recurrent.torch_code import check_source

        check_source(node, self)

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers.recurrent.python_code import recurrent_code

        return recurrent_code(self, g, outs, xs[0], masks[0])

    # npz / JSON ---------------------------------------------------------------------------------------
    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        from converter.layers.recurrent.layouts import layout_tensors

        return layout_tensors(name, self, layout)

    def check_layout(self, node: Any, layout: str) -> None:
        from converter.layers.recurrent.layouts import check_layout

        check_layout(node, self, layout)

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> Recurrent:
        from converter.layers.recurrent.layouts import direction_weights

        return replace(self, weights=direction_weights(name, "", 0, self, layout, got))

    def config(self) -> dict[str, Any]:
        config = super().config()
        if not self.peephole:  # only peephole LSTMs say so: descriptions of plain layers stay as they were
            del config["peephole"]
        return config


@dataclass(frozen=True, eq=False)
class Bidirectional(Op):
    """Two recurrent layers; the backward one runs on the reversed sequence."""

    op_type: ClassVar[str] = "bidirectional"
    has_states: ClassVar[bool] = True
    forward: Recurrent
    backward: Recurrent
    merge_mode: Literal["concat", "sum", "ave", "mul"] | None

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> Bidirectional:
        merge_mode = config.get("merge_mode", "concat")
        if merge_mode not in ("concat", "sum", "ave", "mul", None):
            raise ctx.unsupported(f"merge_mode {merge_mode!r} is not supported; use concat, sum, ave, mul or None.")
        from converter.layers.recurrent.rnn import array_count, cell_configs, read_single

        wrappable = (*RECURRENT_CLASSES, "RNN")
        fw_class, fw_config = inner_layer(config.get("layer"), ctx, wrappable)
        if config.get("backward") is not None:
            bw_class, bw_config = inner_layer(config["backward"], ctx, wrappable)
        else:  # Keras builds the backward layer from the forward config with go_backwards flipped
            bw_class, bw_config = fw_class, {**fw_config, "go_backwards": not fw_config.get("go_backwards", False)}
        fw_ctx, bw_ctx = ctx.inner("forward", fw_class), ctx.inner("backward", bw_class)
        if fw_class == "RNN":  # an RNN of one cell: the cell's config says how many weights it has
            cells, _ = cell_configs(fw_config, fw_ctx)
            n_forward = sum(array_count(c, cfg) for c, cfg in cells)
        else:
            n_forward = 3 if fw_config.get("use_bias", True) else 2
        # Keras forces zero outputs at masked steps in both directions when returning sequences.
        # Standalone Keras <= 2.3 repeated the previous output instead (converter.keras.versions marks
        # such files' configs with zero_output_for_mask=False).
        zero = bool(fw_config.get("return_sequences", False)) and config.get("zero_output_for_mask") is not False
        read = {c: read_single if c == "RNN" else Recurrent.read for c in (fw_class, bw_class)}
        forward = read[fw_class]({**fw_config, "zero_output_for_mask": zero}, arrays[:n_forward], fw_ctx)
        backward = read[bw_class]({**bw_config, "zero_output_for_mask": zero}, arrays[n_forward:], bw_ctx)
        if (forward.return_sequences, forward.return_state) != (backward.return_sequences, backward.return_state):
            raise ctx.bad("its forward and backward layers disagree on return_sequences or return_state.")
        return cls(forward, backward, merge_mode)

    @property
    def directions(self) -> dict[str, Recurrent]:
        return {"forward": self.forward, "backward": self.backward}

    @property
    def return_sequences(self) -> bool:
        return self.forward.return_sequences

    @property
    def return_state(self) -> bool:
        return self.forward.return_state

    def keeps_states(self) -> bool:
        return self.forward.stateful or self.backward.stateful

    def mask_carrying_outputs(self) -> int:
        if not self.return_sequences:
            return 0
        return 2 if self.merge_mode is None else 1

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        fw, *fw_states = self.forward.output_shapes(shapes)
        bw, *bw_states = self.backward.output_shapes(shapes)
        if fw != bw:
            raise ShapeMismatch(f"its forward and backward outputs differ ({fw} and {bw})")
        if self.merge_mode is None:
            return [fw, bw, *fw_states, *bw_states]
        merged = (*fw[:-1], 2 * fw[-1]) if self.merge_mode == "concat" else fw  # type: ignore[operator]
        return [merged, *fw_states, *bw_states]

    def state_shapes(self) -> list[Shape]:
        return [(d.units,) for d in self.directions.values() for _ in d.state_names]

    def params(self) -> tuple[int, str]:
        (fw, n_fw), (bw, n_bw) = self.forward.formula(), self.backward.formula()
        expr = f"2*[{fw}]" if fw == bw else f"[{fw}] + [{bw}]"
        return n_fw + n_bw, f"{expr} = {n_fw + n_bw}"

    def explained_formula(self) -> str:
        fw, bw = self.forward.explained_terms(), self.backward.explained_terms()
        expr = f"2 directions x [{fw}]" if fw == bw else f"forward [{fw}] + backward [{bw}]"
        return f"{expr} = {self.params()[0]}"

    def tensor_shapes(self) -> list[dict[str, Any]]:
        return [
            {**t, "name": f"{d}/{t['name']}", "from": f"{d}_layer {t['from']}"}
            for d, r in self.directions.items()
            for t in r.tensor_shapes()
        ]

    def options(self) -> dict[str, Any]:
        directions = {"forward": self.forward.options(), "backward": self.backward.options()}
        return {"merge_mode": self.merge_mode, **directions}

    def weight_items(self) -> list[NamedArray]:
        return [(f"{d}/{k}", a) for d, r in self.directions.items() for k, a in r.weights.items()]

    def activations(self) -> list[tuple[str, str]]:
        return [a for r in self.directions.values() for a in r.activations()]

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        from converter.layers.recurrent.cell import run_layer

        return run_layer(self, xs[0], masks[0], run, self.merge_mode)

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        from converter.layers.recurrent.onnx_node import emit_layer

        return emit_layer(self, g, xs[0], masks[0])

    def torch_module(self, g: TorchContext) -> str | None:
        from converter.layers.recurrent.torch_code import torch_module

        return torch_module(self, g)

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        from converter.layers.recurrent.torch_code import torch_forward

        return torch_forward(self, g, outs, xs[0], masks[0])

    def torch_weights(self, attribute: str) -> list[LayoutTensor]:
        from converter.layers.recurrent.torch_code import torch_weights

        return torch_weights(self, attribute)

    def check_torch_source(self, node: Any) -> None:
        from converter.layers.recurrent.torch_code import check_source

        check_source(node, self)

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers.recurrent.python_code import bidirectional_code

        return bidirectional_code(self, g, outs, xs[0], masks[0])

    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        from converter.layers.recurrent.layouts import layout_tensors

        return layout_tensors(name, self, layout)

    def check_layout(self, node: Any, layout: str) -> None:
        from converter.layers.recurrent.layouts import check_layout

        check_layout(node, self, layout)

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> Bidirectional:
        from converter.layers.recurrent.layouts import direction_weights

        fw = direction_weights(name, "forward", 0, self.forward, layout, got)
        bw = direction_weights(name, "backward", 1, self.backward, layout, got)
        return replace(
            self,
            forward=replace(self.forward, weights=fw),
            backward=replace(self.backward, weights=bw),
        )

    def config(self) -> dict[str, Any]:
        return {
            "merge_mode": self.merge_mode,
            "forward": self.forward.config(),
            "backward": self.backward.config(),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Bidirectional:
        fw, bw = Recurrent.from_config(config["forward"]), Recurrent.from_config(config["backward"])
        return cls(fw, bw, config["merge_mode"])


RecurrentLayer = Recurrent | Bidirectional
