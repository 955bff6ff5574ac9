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

from converter.errors import BadModelFile, BadOptions
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
) -> Report:
    """Compare ``export`` with the original ``model``; with one path, an export with its test vector.

    ``report`` also writes the result as JSON (``schemas/report.schema.json``).

    >>> import converter
    >>> _ = converter.to_json("fixtures/keras3/gru_states.keras", "/tmp/g.json", force=True, oracle="numpy")
    >>> converter.verify("fixtures/keras3/gru_states.keras", "/tmp/g.json", oracle="numpy").worst_abs_error < 1e-5
    True
    """
    result = _verify(model, export, config, inputs, atol, rtol, oracle)
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
) -> Report:

    from converter.convert import Options, verification_inputs
    from converter.keras import read_model

    if export is None:
        return _verify_test_vector(Path(model), atol, rtol)
    model_path, export_path = Path(model), Path(export)
    options = Options(config=Path(config) if config else None, inputs=Path(inputs) if inputs else None, oracle=oracle)
    original = read_model(model_path, options.config)
    feeds = verification_inputs(original, options)
    expected, oracle_name = original_outputs(model_path, options.config, original, feeds, oracle)
    got = run_export(export_path, feeds)
    report = Report(str(model_path), str(export_path), export_format(export_path), oracle_name, atol, rtol, {})
    from converter.convert import saved_states_note

    report.note = saved_states_note(model_path, options.config)
    report.inputs = {name: list(a.shape) for name, a in feeds.items()}
    report.outputs = compare(expected, got, atol, rtol)
    report.layers = len(original.nodes)
    return report


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
    report = Report(model.source, str(path), kind, "embedded test vector", atol, rtol, {})
    report.inputs = {name: list(a.shape) for name, a in vector.inputs.items()}
    report.outputs = compare(vector.outputs, got, atol, rtol)
    report.layers = len(model.nodes)
    return report
