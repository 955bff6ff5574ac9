"""Write an IR model as an ``.onnx`` file: graph, metadata, external data for big weights, checks.

The graph itself is built by ``converter.export.onnx_graph``; this module only decides how it lands on
disk and records where it came from.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx

from converter import __version__, ir
from converter.export.onnx_graph import graph_output_names
from converter.gates import GATE_ORDER
from converter.scratch import scratch_folder


def external_data_path(output: Path) -> Path:
    """Where the weights of a model too big for one protobuf go: ``OUT.onnx.data`` beside ``OUT.onnx``."""
    return output.with_name(output.name + ".data")


def metadata(model: ir.Model) -> dict[str, str]:
    """What a reader of the ``.onnx`` needs to know about its origin and gate layout."""
    return {
        "source_file": model.source,
        "keras_version": model.keras_version,
        "converter": f"lstm-convert {__version__}",
        "gate_layout": json.dumps(
            {kind: "".join(order) for kind, order in GATE_ORDER["onnx"].items() if kind != "simple_rnn"}
        ),
        "output_names": json.dumps(list(model.output_names)),
        # Keras output name -> graph output name (return_state outputs are ``<layer>/h`` in the graph).
        "keras_outputs": json.dumps(dict(zip(model.output_names, graph_output_names(model), strict=True))),
    }


#: Inline tensors at least this big are spliced into the file from a scratch file (see ``onnx_splice``).
SPLICE_BYTES = 1 << 20


def write_onnx(model: ir.Model, path: Path, *, opset: int | None, state_io: bool, external: bool) -> None:
    """Build, check and save. ``external`` puts all weights in one file named by ``external_data_path``.

    Either way big weights stream to a data file while the graph is built, so the model in memory stays
    small; without ``external`` they are then spliced into the one ``.onnx`` file.
    """
    from converter.export.onnx_builder import ExternalData
    from converter.export.onnx_graph import DEFAULT_OPSET, build_onnx
    from converter.export.onnx_splice import save_inline

    opset = DEFAULT_OPSET if opset is None else opset
    data = external_data_path(path) if external else path.with_name(f".{path.name}.weights")
    try:
        with data.open("wb") as fh:
            sink = ExternalData(fh, data.name) if external else ExternalData(fh, data.name, threshold=SPLICE_BYTES)
            proto = build_onnx(model, opset=opset, state_io=state_io, external=sink)
            spliced = fh.tell() > 0
        onnx.helper.set_model_props(proto, metadata(model))
        if external or spliced:
            # Checked in the path form, weights beside it: a model past 2 GiB cannot be checked otherwise.
            onnx.save_model(proto, str(path))
            onnx.checker.check_model(str(path))
            if not external:
                save_inline(proto, path, data)
        else:
            onnx.checker.check_model(proto)
            onnx.save_model(proto, str(path))
    finally:
        if not external:
            data.unlink(missing_ok=True)


def write_test_data(
    folder: Path,
    files: list[Path],
    model: ir.Model,
    feeds: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
) -> None:
    """The ONNX backend test layout: ``folder/model.onnx`` and ``test_data_set_0/{input,output}_N.pb``.

    Outputs are the original's; a ``--state-io`` graph's extra state outputs come from the NumPy runtime
    (proven against Keras), so runners that check every graph output can check them too. State inputs
    are zeros (a fresh stream).
    """
    from onnx import numpy_helper

    from converter.export.onnx_run import Runner
    from converter.runtime import Runtime
    from converter.states import flat_states

    runner = Runner.open(files[0])
    inputs = runner.feeds(feeds)  # state inputs as zeros: they are required inputs
    _, finals = Runtime(model).run(feeds)
    by_graph_name = dict(zip(graph_output_names(model), model.output_names, strict=True))
    outputs = {**flat_states(model, finals), **{g: expected[k] for g, k in by_graph_name.items()}}
    with scratch_folder(folder.parent) as parent:
        tmp = parent / folder.name
        data = tmp / "test_data_set_0"
        data.mkdir(parents=True)
        for file in files:
            shutil.copy(file, tmp / ("model.onnx" if file.suffix == ".onnx" else file.name))
        for k, (name, array) in enumerate(inputs.items()):
            tensor = numpy_helper.from_array(array, name)
            (data / f"input_{k}.pb").write_bytes(tensor.SerializeToString())
        for k, name in enumerate(runner.outputs):
            tensor = numpy_helper.from_array(np.asarray(outputs[name], np.float32), name)
            (data / f"output_{k}.pb").write_bytes(tensor.SerializeToString())
        os.replace(tmp, folder)  # renames over a missing or empty folder in one step
