"""A Keras model file -> the IR ``Model``: open the file, read the topology, read each layer."""

from __future__ import annotations

import zipfile
from contextlib import ExitStack
from pathlib import Path

from converter import ir
from converter.errors import BadModelFile, ConversionError, UnsupportedLayer
from converter.files import config_beside
from converter.keras.archive import open_model_file
from converter.keras.config import LayerCall, Topology, parse_topology
from converter.keras.config_scan import scan_config
from converter.keras.weights import WeightStore
from converter.layers import READERS, supported_classes
from converter.layers.attention.mask_erasure import check_mask_erasure
from converter.layers.base import ReadContext, ShapeMismatch
from converter.shapes import infer_shapes

_DAMAGE = (
    OSError,
    EOFError,
    KeyError,
    IndexError,
    ValueError,
    TypeError,
    AttributeError,
    RuntimeError,
    UnicodeError,
    OverflowError,
    RecursionError,
    zipfile.BadZipFile,
)
_INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")


def article(word: str) -> str:
    """``a`` or ``an`` before a class name, by its first letter (``an Attention``, ``a Conv1D``)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


#: Why some layers people ask about are refused, said in the message.
_HINTS = {
    "Lambda": " Lambda layers hold Python code, which is never run; rebuild the model without it.",
    **{
        c: f" ONNX has no fused {c} operator (its recurrent ops, LSTM/GRU/RNN, take vectors, not images), and "
        "lstm-convert writes no Loop or Scan."
        for c in ("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")
    },
}


def _unsupported_class(path: Path, call: LayerCall) -> UnsupportedLayer:
    hint = _HINTS.get(call.class_name, "")
    return UnsupportedLayer(
        f"{path}: layer '{call.name}' is {article(call.class_name)} {call.class_name}, which lstm-convert does not "
        f"convert.{hint} "
        f"Supported layers: {', '.join(supported_classes())}."
    )


def _input_specs(topology: Topology, nodes: list[ir.Node]) -> tuple[ir.InputSpec, ...]:
    feeds_embedding = {ref.node for node in nodes if node.layer.vocabulary() is not None for ref in node.inputs}
    specs = []
    for spec in topology.inputs:
        dtype = spec.dtype if spec.dtype in _INTEGER_DTYPES else "float32"
        if spec.name in feeds_embedding and dtype == "float32":
            dtype = "int64"  # Keras casts float ids to integers inside Embedding
        specs.append(ir.InputSpec(spec.name, spec.batch_shape[1:], dtype, spec.batch_shape[0]))
    return tuple(specs)


def build_model(
    topology: Topology, path: Path, keras_version: str, weights: WeightStore, allow_nonfinite: bool = False
) -> ir.Model:
    """Read every layer of ``topology`` with its weights and check the shapes fit together."""
    keras_major = 2 if keras_version.startswith("2") else 3
    nodes: list[ir.Node] = []
    layers: dict[str, ir.Layer] = {}
    calls = {call.name: call for call in topology.calls}
    for call in topology.calls:
        reader = READERS.get(call.class_name)
        if reader is None:
            raise _unsupported_class(path, call)
        if call.weights_of in layers:  # a shared layer's later call: the same layer, the same weights
            layer = layers[call.weights_of]
            first = calls[call.weights_of]
            if (call.call_options, call.call_inputs) != (first.call_options, first.call_inputs):
                raise UnsupportedLayer(
                    f"{path}: layer '{call.name}' ({call.class_name}) is a shared layer called with other "
                    f"arguments than its first call '{first.name}'; only identical calls of a shared layer convert."
                )
        else:
            ctx = ReadContext(
                path,
                call.name,
                call.class_name,
                keras_major,
                call.constants,
                allow_nonfinite,
                call.call_options,
                call.call_inputs,
            )
            layer = reader(
                call.config, weights.arrays(call.weight_name or call.name, call.class_name, call.key, call.config), ctx
            )
        layers[call.name] = layer
        shared = call.weights_of if call.weights_of in layers else None
        node = ir.Node(
            call.name,
            call.class_name,
            layer,
            tuple(call.inputs),
            tuple(call.initial_state),
            call.mask,
            weights_of=shared,
            receives_mask=call.receives_mask,
        )
        nodes.append(node)
    weights.check_all_used()
    check_mask_erasure(nodes, keras_major, path)
    inputs = _input_specs(topology, nodes)
    try:
        shapes = infer_shapes(inputs, tuple(nodes))
    except ShapeMismatch as exc:
        where = f"layer '{exc.node.name}' ({exc.node.keras_class})" if exc.node else "the model"
        raise BadModelFile(f"{path}: {where}: {exc}.") from None
    for ref in topology.outputs:
        if ref not in shapes:
            raise BadModelFile(f"{path}: the model output {ref.node}:{ref.index} does not exist.")
    return ir.Model(
        name=topology.model_name,
        inputs=inputs,
        nodes=tuple(nodes),
        outputs=tuple(topology.outputs),
        output_names=tuple(ir.unique_names([ref.node for ref in topology.outputs])),
        keras_version=keras_version,
        source=path.name,
    )


def saved_states(path: str | Path, config: str | Path | None = None) -> dict[str, dict[str, list]]:
    """The states stateful layers had when the model was saved: ``{layer: {direction: [h, c]}}``.

    Only a SavedModel keeps them (Keras restores them on reload, so its first ``predict`` continues from
    them); every other form gives ``{}`` without opening the file again.
    """
    from converter.keras.archive import tf_form

    form = tf_form(Path(path))
    if form is None or form[0] != "savedmodel":
        return {}
    with ExitStack() as stack:
        return open_model_file(Path(path), stack, Path(config) if config is not None else None).states


def read_model(
    path: str | Path,
    config: str | Path | None = None,
    allow_nonfinite: bool = False,
    max_weights_gb: float | None = None,
) -> ir.Model:
    """Read a Keras model file (``.keras``, legacy ``.h5``, or ``.weights.h5`` with ``config``) into the IR.

    ``allow_nonfinite`` accepts weights holding NaN or Inf (refused by default: such a model is broken).
    ``max_weights_gb`` raises the limit on the weights a file may declare (default 8 GiB).
    """
    return _read(Path(path), config, allow_nonfinite, max_weights_gb)[0]


def accepted_form(path: Path, config: Path | None = None, max_weights_gb: float | None = None) -> str:
    """Read ``path`` completely, as ``read_model`` does, and say which form it is (``keras``, ``h5`` or
    ``weights``): only a file accepted this way is ever handed to Keras."""
    return _read(path, config, True, max_weights_gb)[1]


def _read(
    path: Path, config: str | Path | None, allow_nonfinite: bool, max_weights_gb: float | None
) -> tuple[ir.Model, str]:
    if config is None:  # NAME.weights.h5 beside NAME.json: paired alike by every command
        config = config_beside(path)
    try:
        with ExitStack() as stack:
            opened = open_model_file(path, stack, Path(config) if config is not None else None, max_weights_gb)
            scan_config(opened.config, path)  # all of it, not only the layers that reach the outputs
            topology = parse_topology(opened.config, path)
            model = build_model(topology, path, opened.keras_version, opened.weights, allow_nonfinite)
            return model, opened.form
    except ConversionError:
        raise
    except _DAMAGE as exc:
        # A damaged file can make h5py, zipfile or a config field fail in many ways; the user needs to know
        # the file is bad, not which library noticed first (--debug shows the traceback).
        raise BadModelFile(
            f"{path}: the file is damaged or not a Keras model this tool understands "
            f"({type(exc).__name__}: {str(exc)[:200]})."
        ) from exc
