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
    (proven against Keras), so runners that check every graph output can check them too.
    """
    from onnx import numpy_helper

    from converter.export.onnx_run import session
    from converter.runtime import Runtime

    sess = session(files[0])
    graph_inputs = [i.name for i in sess.get_inputs() if i.name in feeds]
    _, finals = Runtime(model).run(feeds)
    states = {
        f"{node}/{direction + '/' if direction else ''}{name}": value
        for node, directions in finals.items()
        for direction, values in directions.items()
        for name, value in zip(("h", "c"), values, strict=False)
    }
    outputs = {**expected, **states}
    with scratch_folder(folder.parent) as parent:
        tmp = parent / folder.name
        data = tmp / "test_data_set_0"
        data.mkdir(parents=True)
        for file in files:
            shutil.copy(file, tmp / ("model.onnx" if file.suffix == ".onnx" else file.name))
        for k, name in enumerate(graph_inputs):
            tensor = numpy_helper.from_array(feeds[name].astype(_input_dtype(sess, name)), name)
            (data / f"input_{k}.pb").write_bytes(tensor.SerializeToString())
        for k, out in enumerate(sess.get_outputs()):
            tensor = numpy_helper.from_array(np.asarray(outputs[out.name], np.float32), out.name)
            (data / f"output_{k}.pb").write_bytes(tensor.SerializeToString())
        os.replace(tmp, folder)  # renames over a missing or empty folder in one step


def _input_dtype(sess, name: str) -> type:
    kind = next(i.type for i in sess.get_inputs() if i.name == name)
    return np.int64 if "int64" in kind else np.float32
