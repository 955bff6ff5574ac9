"""One pure reader per Keras layer class: (config, weight arrays) -> an IR layer, registered in READERS.

A reader checks every option that changes what the layer computes: it converts it exactly or raises
``UnsupportedLayer`` naming the layer and the option. Options that only matter in training
(initializers, regularizers, constraints, dropout rates) are ignored on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter import ir
from converter.activations import canonical_name, supported_activations
from converter.errors import BadModelFile, UnsupportedLayer
from converter.gates import CANONICAL, gate_tensor_name, split_gates
from converter.keras.weights import NamedArray

IDENTITY_CLASSES = (
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)
RECURRENT_CLASSES = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "simple_rnn"}


@dataclass
class LayerContext:
    """What a reader needs besides the layer's own config and weights."""

    path: Path
    name: str
    class_name: str
    keras_major: int
    constants: list[Any] = field(default_factory=list)
    allow_nonfinite: bool = False

    def where(self) -> str:
        return f"{self.path}: layer '{self.name}' ({self.class_name})"

    def unsupported(self, what: str) -> UnsupportedLayer:
        return UnsupportedLayer(f"{self.where()}: {what}")

    def bad(self, what: str) -> BadModelFile:
        return BadModelFile(f"{self.where()}: {what}")


def _float32_only(config: dict[str, Any], ctx: LayerContext) -> None:
    dtype = config.get("dtype")
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if name not in (None, "float32"):
        raise ctx.unsupported(f"dtype policy {name!r} is not supported; only float32 models convert exactly.")


def _activation(config: dict[str, Any], key: str, default: str, ctx: LayerContext) -> str:
    value = config.get(key, default)
    if isinstance(value, dict):  # Keras 3 may serialise a built-in activation as an object
        inner = value.get("config")
        if value.get("module") == "keras.activations" and isinstance(inner, str):
            value = inner
        else:
            raise ctx.unsupported(f"{key} is a custom object ({value.get('class_name')}); use a built-in activation.")
    name = canonical_name(value)
    known = supported_activations(ctx.keras_major)
    if name not in known:
        raise ctx.unsupported(f"{key} {name!r} is not supported; supported: {', '.join(known)}.")
    return name


def all_finite(array: np.ndarray, chunk: int = 1 << 22) -> bool:
    """No NaN or Inf in ``array``, checked a chunk at a time: ``np.isfinite`` of a whole 1 GB kernel would
    allocate a 256 MB temporary.

    >>> all_finite(np.array([1.0, np.inf])), all_finite(np.ones(10), chunk=3)
    (False, True)
    """
    flat = array.reshape(-1)
    return all(bool(np.isfinite(flat[i : i + chunk]).all()) for i in range(0, flat.size, chunk))


def _expect_arrays(arrays: list[NamedArray], shapes: list[tuple[int, ...]], ctx: LayerContext) -> list[np.ndarray]:
    if len(arrays) != len(shapes):
        raise ctx.bad(
            f"the file holds {len(arrays)} weight arrays for it, but its config needs {len(shapes)} "
            f"(shapes {', '.join(str(s) for s in shapes)}); the file does not match its config."
        )
    result = []
    for (name, array), shape in zip(arrays, shapes, strict=True):
        if tuple(array.shape) != tuple(shape):
            raise ctx.bad(f"weight {name} has shape {tuple(array.shape)}, but the config needs {tuple(shape)}.")
        if not ctx.allow_nonfinite and not all_finite(array):
            raise ctx.bad(f"weight {name} holds NaN or Inf values; pass --allow-nonfinite to convert it anyway.")
        result.append(np.ascontiguousarray(array, dtype=np.float32))
    return result


def _flag(config: dict[str, Any], key: str, default: bool = False) -> bool:
    return bool(config.get(key, default))


def read_recurrent(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.Recurrent:
    """LSTM, GRU or SimpleRNN: split kernel, recurrent kernel and bias into named gate tensors."""
    kind: ir.RecurrentKind = RECURRENT_CLASSES[ctx.class_name]  # type: ignore[assignment]
    _float32_only(config, ctx)
    if _flag(config, "time_major"):
        raise ctx.unsupported("time_major=True is not supported; save the model with batch-major inputs.")
    units = config.get("units")
    if not isinstance(units, int) or units <= 0:
        raise ctx.bad(f"units is {units!r}, not a positive integer.")
    activation = _activation(config, "activation", "tanh", ctx)
    recurrent_activation = None if kind == "simple_rnn" else _activation(config, "recurrent_activation", "sigmoid", ctx)
    use_bias = _flag(config, "use_bias", True)
    reset_after = kind == "gru" and _flag(config, "reset_after", True)
    gates = CANONICAL[kind]
    width = len(gates) * units
    if not arrays:
        raise ctx.bad("the file holds no weights for it.")
    input_dim = int(arrays[0][1].shape[0]) if arrays[0][1].ndim == 2 else -1
    shapes: list[tuple[int, ...]] = [(input_dim, width), (units, width)]
    if use_bias:
        shapes.append((2, width) if reset_after else (width,))
    kernel, recurrent, *bias = _expect_arrays(arrays, shapes, ctx)
    weights: dict[str, np.ndarray] = {}
    for prefix, matrix in (("W", kernel), ("U", recurrent)):
        for gate, block in split_gates(matrix, gates, axis=1).items():
            weights[gate_tensor_name(prefix, gate)] = block
    if use_bias:
        rows = bias[0] if reset_after else bias[0][None, :]
        for prefix, row in zip(("b", "rb"), rows, strict=False):
            for gate, block in split_gates(row, gates, axis=0).items():
                weights[gate_tensor_name(prefix, gate)] = block
    return ir.Recurrent(
        zero_output_for_mask=_flag(config, "zero_output_for_mask"),
        kind=kind,
        units=units,
        input_dim=input_dim,
        activation=activation,
        recurrent_activation=recurrent_activation,
        use_bias=use_bias,
        return_sequences=_flag(config, "return_sequences"),
        return_state=_flag(config, "return_state"),
        go_backwards=_flag(config, "go_backwards"),
        stateful=_flag(config, "stateful"),
        reset_after=reset_after,
        weights=weights,
    )


def _inner_layer(entry: Any, ctx: LayerContext, allowed: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise ctx.bad("its wrapped layer config is missing.")
    class_name = entry.get("class_name")
    if class_name not in allowed or entry.get("registered_name") not in (None, class_name):
        raise ctx.unsupported(f"wrapping {class_name!r} is not supported; it can wrap: {', '.join(allowed)}.")
    return str(class_name), entry["config"]


def _count_recurrent_arrays(class_name: str, config: dict[str, Any]) -> int:
    return 3 if config.get("use_bias", True) else 2


def read_bidirectional(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.Bidirectional:
    """Bidirectional: two recurrent layers; the backward one runs on the reversed sequence."""
    merge_mode = config.get("merge_mode", "concat")
    if merge_mode not in ("concat", "sum", "ave", "mul", None):
        raise ctx.unsupported(f"merge_mode {merge_mode!r} is not supported; use concat, sum, ave, mul or None.")
    fw_class, fw_config = _inner_layer(config.get("layer"), ctx, tuple(RECURRENT_CLASSES))
    if config.get("backward_layer") is not None:
        bw_class, bw_config = _inner_layer(config["backward_layer"], ctx, tuple(RECURRENT_CLASSES))
    else:  # Keras builds the backward layer from the forward config with go_backwards flipped
        bw_class, bw_config = fw_class, {**fw_config, "go_backwards": not fw_config.get("go_backwards", False)}
    n_forward = _count_recurrent_arrays(fw_class, fw_config)
    fw_ctx = LayerContext(ctx.path, f"{ctx.name}/forward", fw_class, ctx.keras_major, [], ctx.allow_nonfinite)
    bw_ctx = LayerContext(ctx.path, f"{ctx.name}/backward", bw_class, ctx.keras_major, [], ctx.allow_nonfinite)
    # Keras forces zero outputs at masked steps in both directions when returning sequences; standalone
    # Keras <= 2.3 repeated the previous output (converter.keras.versions marks such files' configs).
    zero = bool(fw_config.get("return_sequences", False)) and config.get("zero_output_for_mask") is not False
    forward = read_recurrent({**fw_config, "zero_output_for_mask": zero}, arrays[:n_forward], fw_ctx)
    backward = read_recurrent({**bw_config, "zero_output_for_mask": zero}, arrays[n_forward:], bw_ctx)
    if (forward.return_sequences, forward.return_state) != (backward.return_sequences, backward.return_state):
        raise ctx.bad("its forward and backward layers disagree on return_sequences or return_state.")
    return ir.Bidirectional(forward, backward, merge_mode)


def read_dense(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.Dense:
    _float32_only(config, ctx)
    if config.get("lora_rank"):
        raise ctx.unsupported("LoRA-enabled Dense layers are not supported; merge the LoRA weights first.")
    units = config.get("units")
    if not isinstance(units, int) or units <= 0:
        raise ctx.bad(f"units is {units!r}, not a positive integer.")
    use_bias = _flag(config, "use_bias", True)
    if not arrays or arrays[0][1].ndim != 2:
        raise ctx.bad("the file holds no kernel for it.")
    shapes: list[tuple[int, ...]] = [(int(arrays[0][1].shape[0]), units)] + ([(units,)] if use_bias else [])
    kernel, *bias = _expect_arrays(arrays, shapes, ctx)
    weights = {"W": kernel, **({"b": bias[0]} if use_bias else {})}
    return ir.Dense(units, _activation(config, "activation", "linear", ctx), use_bias, weights)


def read_time_distributed(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.Dense:
    _, inner = _inner_layer(config.get("layer"), ctx, ("Dense",))
    dense = read_dense(inner, arrays, ctx)
    return ir.Dense(dense.units, dense.activation, dense.use_bias, dense.weights, time_distributed=True)


def read_embedding(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.Embedding:
    _float32_only(config, ctx)
    input_dim, output_dim = config.get("input_dim"), config.get("output_dim")
    if not (isinstance(input_dim, int) and isinstance(output_dim, int)):
        raise ctx.bad("input_dim and output_dim must be integers.")
    (table,) = _expect_arrays(arrays, [(input_dim, output_dim)], ctx)
    return ir.Embedding(input_dim, output_dim, _flag(config, "mask_zero"), {"E": table})


def _no_weights(arrays: list[NamedArray], ctx: LayerContext) -> None:
    if arrays:
        raise ctx.bad(f"the file holds {len(arrays)} weight arrays for a layer that has none.")


def read_masking(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.Masking:
    _no_weights(arrays, ctx)
    value = config.get("mask_value", 0.0)
    if not isinstance(value, int | float):
        raise ctx.bad(f"mask_value {value!r} is not a number.")
    return ir.Masking(float(value))


def read_activation(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.Activation:
    _no_weights(arrays, ctx)
    return ir.Activation(_activation(config, "activation", "linear", ctx))


def read_concatenate(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.Concatenate:
    _no_weights(arrays, ctx)
    axis = config.get("axis", -1)
    if not isinstance(axis, int):
        raise ctx.bad(f"axis {axis!r} is not an integer.")
    return ir.Concatenate(axis)


def read_add(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.Add:
    _no_weights(arrays, ctx)
    return ir.Add()


def read_not_equal(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.NotEqual:
    _no_weights(arrays, ctx)
    if len(ctx.constants) != 1 or not isinstance(ctx.constants[0], int | float):
        raise ctx.unsupported("only the comparison of a tensor with one number is supported.")
    return ir.NotEqual(float(ctx.constants[0]))


def read_reduce_any(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.ReduceAny:
    _no_weights(arrays, ctx)
    axis = config.get("axis")
    if not isinstance(axis, int):
        raise ctx.unsupported(f"axis {axis!r} is not supported; only one integer axis.")
    return ir.ReduceAny(axis, bool(config.get("keepdims", False)))


def read_identity(config: dict[str, Any], arrays: list[NamedArray], ctx: LayerContext) -> ir.Identity:
    _no_weights(arrays, ctx)
    return ir.Identity()


Reader = Callable[[dict[str, Any], list[NamedArray], LayerContext], ir.Layer]

#: Keras 3 op layers a functional model saves a Masking layer's mask with (``NotEqual`` -> ``Any``).
OP_LAYERS: dict[str, Reader] = {"NotEqual": read_not_equal, "Any": read_reduce_any}

READERS: dict[str, Reader] = {
    "LSTM": read_recurrent,
    "GRU": read_recurrent,
    "SimpleRNN": read_recurrent,
    "Bidirectional": read_bidirectional,
    "Dense": read_dense,
    "TimeDistributed": read_time_distributed,
    "Embedding": read_embedding,
    "Masking": read_masking,
    "Activation": read_activation,
    "Concatenate": read_concatenate,
    "Add": read_add,
    **OP_LAYERS,
    **{name: read_identity for name in IDENTITY_CLASSES},
}
