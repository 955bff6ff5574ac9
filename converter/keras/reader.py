"""A Keras model file -> the IR ``Model``: open the file, read the topology, read each layer."""

from __future__ import annotations

import zipfile
from contextlib import ExitStack
from pathlib import Path

from converter import ir
from converter.errors import BadModelFile, ConversionError, UnsupportedLayer
from converter.keras.archive import open_model_file
from converter.keras.config import LayerCall, Topology, parse_topology
from converter.keras.layers import OP_LAYERS, READERS, LayerContext
from converter.keras.weights import WeightStore
from converter.shapes import ShapeMismatch, infer_shapes

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


def _unsupported_class(path: Path, call: LayerCall) -> UnsupportedLayer:
    hint = (
        " Lambda layers hold Python code, which is never run; rebuild the model without it."
        if call.class_name == "Lambda"
        else ""
    )
    return UnsupportedLayer(
        f"{path}: layer '{call.name}' is a {call.class_name}, which lstm-convert does not convert.{hint} "
        f"Supported layers: InputLayer, {', '.join(sorted(set(READERS) - set(OP_LAYERS)))}."
    )


def _input_specs(topology: Topology, nodes: list[ir.Node]) -> tuple[ir.InputSpec, ...]:
    feeds_embedding = {ref.node for node in nodes if isinstance(node.layer, ir.Embedding) for ref in node.inputs}
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
    for call in topology.calls:
        reader = READERS.get(call.class_name)
        if reader is None:
            raise _unsupported_class(path, call)
        ctx = LayerContext(path, call.name, call.class_name, keras_major, call.constants, allow_nonfinite)
        layer = reader(call.config, weights.arrays(call.name, call.class_name, call.key), ctx)
        node = ir.Node(call.name, call.class_name, layer, tuple(call.inputs), tuple(call.initial_state), call.mask)
        nodes.append(node)
    weights.check_all_used()
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
    them); every other form gives ``{}``.
    """
    with ExitStack() as stack:
        return open_model_file(Path(path), stack, Path(config) if config is not None else None).states


def read_model(path: str | Path, config: str | Path | None = None, allow_nonfinite: bool = False) -> ir.Model:
    """Read a Keras model file (``.keras``, legacy ``.h5``, or ``.weights.h5`` with ``config``) into the IR.

    ``allow_nonfinite`` accepts weights holding NaN or Inf (refused by default: such a model is broken).
    """
    path = Path(path)
    try:
        with ExitStack() as stack:
            opened = open_model_file(path, stack, Path(config) if config is not None else None)
            topology = parse_topology(opened.config, path)
            return build_model(topology, path, opened.keras_version, opened.weights, allow_nonfinite)
    except ConversionError:
        raise
    except _DAMAGE as exc:
        # A damaged file can make h5py, zipfile or a config field fail in many ways; the user needs to know
        # the file is bad, not which library noticed first (--debug shows the traceback).
        raise BadModelFile(
            f"{path}: the file is damaged or not a Keras model this tool understands ({type(exc).__name__}: {exc})."
        ) from exc
