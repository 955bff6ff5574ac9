"""``verify``: check any export (onnx, npz, json) against the original, or against its own test vector.

>>> import converter
>>> _ = converter.to_npz("fixtures/keras3/tutorial.keras", "/tmp/v.npz", force=True, oracle="numpy")
>>> converter.verify("/tmp/v.npz").passed
True
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from converter import ir
from converter.errors import BadInputs, BadModelFile, BadOptions, ConversionError
from converter.export.guards import check_test_outputs
from converter.files import atomic_outputs, file_kind
from converter.verification import DEFAULT_ATOL, DEFAULT_RTOL, Report, compare, numpy_outputs, original_outputs

Outputs = dict[str, np.ndarray]


def export_format(path: Path) -> str:
    """``onnx``, ``npz`` or ``json``, from the file's content."""
    kind = file_kind(path)
    if kind not in ("onnx", "npz", "json"):
        raise BadModelFile(f"{path}: not an lstm-convert export (.onnx, .npz or .json).")
    return kind


def run_export(path: Path, feeds: dict[str, np.ndarray]) -> Outputs:
    """Run an export from its file: ONNX in onnxruntime, npz and JSON in the NumPy runtime."""
    kind = export_format(path)
    if kind == "onnx":
        from converter.export.onnx_run import run_onnx

        return run_onnx(path, feeds)
    model, _ = read_tensor_export(path, kind)
    return numpy_outputs(model, feeds)


def read_tensor_export(path: Path, kind: str):
    if kind == "npz":
        from converter.export.npz import read_npz

        return read_npz(path)
    from converter.export.json_doc import read_json

    return read_json(path)


def verify(
    model: str | Path,
    export: str | Path | None = None,
    *,
    config: str | Path | None = None,
    inputs: str | Path | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    oracle: str = "auto",
    report: str | Path | None = None,
    max_weights_gb: float | None = None,
    runtime: str | list[str] | None = None,
) -> Report:
    """Compare ``export`` with the original ``model``; with one path, an export with its test vector.

    Args:
        model: the Keras model file (or, alone, an npz/JSON export to check against its test vector).
        export: the ``.onnx``, ``.npz`` or ``.json`` written from ``model``.
        config: the ``model.to_json()`` file of a ``.weights.h5`` (``NAME.json`` beside it is found alone).
        inputs: an ``.npz`` of inputs keyed by input name (default: seeded random ones).
        atol, rtol: passes where ``|export - original| <= atol + rtol * |original|``.
        oracle: what computes the original's outputs: ``auto`` (Keras if installed), ``keras`` or ``numpy``.
        report: also write the result as JSON (``schemas/report.schema.json``).
        max_weights_gb: refuse a model whose weights declare more than this many GiB (default 8).
        runtime: an ONNX export is run in onnxruntime and also in ``"openvino"`` and/or ``"reference"``
            (three calls per session: fresh, again, fed the first call's states).

    Raises ``BadInputs`` when the export was not made from the model (other inputs or outputs).

    >>> import converter
    >>> _ = converter.to_json("fixtures/keras3/gru_states.keras", "/tmp/g.json", force=True, oracle="numpy")
    >>> converter.verify("fixtures/keras3/gru_states.keras", "/tmp/g.json", oracle="numpy").worst_abs_error < 1e-5
    True
    """
    runtimes = [runtime] if isinstance(runtime, str) else list(runtime or [])
    result = _verify(model, export, config, inputs, atol, rtol, oracle, max_weights_gb, runtimes)
    if report is not None:
        write_report(result, Path(report))
    return result


def write_report(result: Report, path: Path) -> None:
    with atomic_outputs([path], force=True) as (tmp,):
        tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")


def is_export(path: Path) -> bool:
    """An lstm-convert export (onnx, npz, json) rather than a Keras model (False for a missing file)."""
    return path.exists() and file_kind(path) in ("onnx", "npz", "json")


def _verify(
    model: str | Path,
    export: str | Path | None,
    config: str | Path | None,
    inputs: str | Path | None,
    atol: float,
    rtol: float,
    oracle: str,
    max_weights_gb: float | None = None,
    runtimes: list[str] | None = None,
) -> Report:
    from converter.convert import Options, verification_inputs
    from converter.keras import read_model

    if export is None:
        return _verify_test_vector(Path(model), atol, rtol)
    model_path, export_path = Path(model), Path(export)
    options = Options(config=Path(config) if config else None, inputs=Path(inputs) if inputs else None, oracle=oracle)
    original = read_model(model_path, options.config, max_weights_gb=max_weights_gb)
    kind = export_format(export_path)
    if kind == "onnx":
        original = _as_exported(original, export_path)
    elif runtimes:
        raise BadOptions(f"{export_path}: --runtime applies to ONNX exports; npz and JSON run in the NumPy runtime.")
    feeds = verification_inputs(original, options)
    check_belongs(original, export_path)
    if kind == "onnx":
        return _verify_onnx(
            model_path, export_path, original, feeds, options, atol, rtol, runtimes or [], max_weights_gb
        )
    expected, oracle_name, oracle_seconds = original_outputs(
        model_path, options.config, original, feeds, oracle, max_weights_gb
    )
    try:
        got = run_export(export_path, feeds)
    except ConversionError:
        raise
    except Exception as exc:  # a runtime failing on inputs the export was not made for
        raise _not_matching(exc, model_path, export_path) from None
    report = Report(str(model_path), str(export_path), export_format(export_path), oracle_name, atol, rtol, {})
    from converter.convert import saved_states_note

    report.note = saved_states_note(model_path, options.config)
    report.inputs = {name: list(a.shape) for name, a in feeds.items()}
    report.outputs = compare(expected, got, atol, rtol)
    report.layers = len(original.nodes)
    report.oracle_seconds = oracle_seconds
    return report


def _not_matching(exc: Exception, model_path: Path, export_path: Path) -> BadInputs:
    """One line for an export that fails on its model's inputs: they do not belong together."""
    first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
    return BadInputs(
        f"{export_path}: running it on {model_path}'s inputs failed ({type(exc).__name__}: {first_line}); "
        "the model and the export do not belong together."
    )


def _as_exported(model: ir.Model, path: Path) -> ir.Model:
    """The model with the fixed batch and time length the graph was exported with (``--batch-size``,
    ``--time-steps``), so verification feeds what the graph takes."""
    from converter.export.input_shapes import reshape_inputs, time_inputs
    from converter.export.onnx_run import graph_signature

    try:
        declared = {i.name: i.dims for i in graph_signature(path)[0]}
    except Exception:  # a damaged file: check_belongs says so in one line
        return model
    first = declared.get(model.inputs[0].name) if model.inputs else None
    batch = first[0] if first and isinstance(first[0], int) else None
    timed = [declared.get(name) for name in time_inputs(model)]
    time = timed[0][1] if timed and timed[0] and len(timed[0]) > 1 and isinstance(timed[0][1], int) else None
    return reshape_inputs(model, batch, time, str(path)) if batch or time else model


def _verify_onnx(
    model_path: Path,
    export_path: Path,
    original: ir.Model,
    feeds: dict[str, np.ndarray],
    options,
    atol: float,
    rtol: float,
    runtimes: list[str],
    max_weights_gb: float | None = None,
) -> Report:
    """Several calls per session and every output, state outputs included (``onnx_verify``)."""
    from converter.export import onnx_verify
    from converter.export.onnx_graph import graph_output_names
    from converter.export.onnx_run import graph_signature, is_state_input
    from converter.states import is_state_key
    from converter.verification import original_calls

    inputs, outputs, _ = graph_signature(export_path)
    state_inputs = [i.name for i in inputs if is_state_input(i.name)]
    keras_outputs = set(graph_output_names(original))
    state_outputs = [o for o in outputs if o not in keras_outputs and is_state_key(original, o)]
    calls = 2 if onnx_verify.keras_streams(original, state_inputs) else 1
    results, oracle_name, oracle_seconds = original_calls(
        model_path, options.config, original, feeds, options.oracle, max_weights_gb, calls
    )
    expected = onnx_verify.expectations(original, feeds, results, state_inputs, state_outputs, oracle_name)
    try:
        checks, notes = onnx_verify.check_written(export_path, expected, runtimes, atol, rtol, str(export_path))
    except ConversionError:
        raise
    except Exception as exc:  # a runtime failing on inputs the export was not made for
        raise _not_matching(exc, model_path, export_path) from None
    report = Report(str(model_path), str(export_path), "onnx", oracle_name, atol, rtol, {})
    report.inputs = {name: list(a.shape) for name, a in feeds.items()}
    from converter.convert import saved_states_note

    report.outputs = checks
    report.note = "; ".join(filter(None, [saved_states_note(model_path, options.config), *notes]))
    report.layers = len(original.nodes)
    report.state_inputs, report.state_outputs = state_inputs, state_outputs
    report.runtimes = ["onnxruntime", *runtimes]
    report.oracle_seconds = oracle_seconds
    return report


def export_signature(path: Path) -> tuple[dict[str, tuple], list[str]]:
    """The inputs (name -> shape without batch, None for open axes) and output names of an export."""
    kind = export_format(path)
    if kind == "onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
            graph = proto.graph
        except Exception as exc:  # protobuf's DecodeError and friends: a damaged file
            raise BadModelFile(f"{path}: cannot read the ONNX file ({type(exc).__name__}).") from None
        fed = {init.name for init in graph.initializer}
        inputs = {
            i.name: tuple(d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim[1:])
            for i in graph.input
            if i.name not in fed
        }
        props = {p.key: p.value for p in proto.metadata_props}
        keras = json.loads(props.get("keras_outputs", "{}"))  # Keras name -> graph name (return_state: lstm/h)
        graph_to_keras = {g: k for k, g in keras.items()}
        return inputs, [graph_to_keras.get(o.name, o.name) for o in graph.output]
    model, _ = read_tensor_export(path, kind)
    return {s.name: tuple(s.shape) for s in model.inputs}, list(model.output_names)


def check_belongs(model: ir.Model, export: Path) -> None:
    """Refuse, in one line, an export that was not made from ``model``: other inputs or outputs."""
    inputs, outputs = export_signature(export)
    want = {s.name: tuple(s.shape) for s in model.inputs}
    missing_in = [n for n in want if n not in inputs]
    missing_out = [n for n in model.output_names if n not in outputs]
    shapes = [n for n in want if n in inputs and not _fits(want[n], inputs[n])]
    if missing_in or missing_out or shapes:
        why = (
            f"the export has no input {missing_in[0]!r}" if missing_in
            else f"the export has no output {missing_out[0]!r}" if missing_out
            else f"input {shapes[0]!r} is {want[shapes[0]]} in the model and {inputs[shapes[0]]} in the export"
        )  # fmt: skip
        raise BadInputs(
            f"{export}: was not made from {model.source}: {why}; the model and the export do not belong together."
        )


def _fits(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def _verify_test_vector(path: Path, atol: float, rtol: float) -> Report:
    kind = export_format(path)
    if kind == "onnx":
        raise BadOptions(
            f"{path}: an ONNX file carries no test vector; pass the original model too: verify MODEL {path}"
        )
    model, vector = read_tensor_export(path, kind)
    if vector is None:
        raise BadModelFile(f"{path}: holds no test vector (__test__); pass the original model too.")
    got = numpy_outputs(model, vector.inputs)
    check_test_outputs(vector.outputs, got, str(path))
    report = Report(model.source, str(path), kind, "embedded test vector", atol, rtol, {})
    report.inputs = {name: list(a.shape) for name, a in vector.inputs.items()}
    report.outputs = compare(vector.outputs, got, atol, rtol)
    report.layers = len(model.nodes)
    return report
