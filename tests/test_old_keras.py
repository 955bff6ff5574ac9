"""Files from standalone Keras 2.2.4 / 2.3.1 (Theano) and the partial .h5 Keras 3.0.5 leaves behind.

Keras <= 2.3 repeats each direction's previous output at masked Bidirectional steps, where tf.keras and
Keras >= 2.4 write zeros: the file's own rule must be applied, and the installed tf_keras must not be
used as the oracle for such a file (it would pass an export computed with the wrong rule).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import converter
from converter.errors import BadModelFile, BadOptions
from converter.export.onnx_run import run_onnx

OLD = Path(__file__).resolve().parent.parent / "fixtures" / "old"
ENTRIES = [json.loads(p.read_text()) for p in sorted(OLD.glob("*/*.entry.json"))]
CONVERTED = [pytest.param(e, id=f"{e['target']}-{e['name']}") for e in ENTRIES if not e["rejected"]]
MASKED = [pytest.param(e, id=f"{e['target']}-{e['name']}") for e in ENTRIES if e.get("masked")]


def recorded(entry: dict) -> tuple[np.ndarray, np.ndarray]:
    with np.load(OLD / entry["io"]) as data:
        return data["input/0"], data["output/0"]


def max_error(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float(np.abs(got.astype(np.float64) - want).max())


def test_fixtures_cover_both_old_versions() -> None:
    assert {e["keras_version"] for e in ENTRIES if not e["rejected"]} == {"2.2.4", "2.3.1"}
    assert {e["backend"] for e in ENTRIES if not e["rejected"]} == {"theano"}


@pytest.mark.parametrize("entry", CONVERTED)
def test_numpy_runtime_matches_the_old_keras(entry: dict) -> None:
    x, y = recorded(entry)
    assert max_error(converter.load(OLD / entry["files"]["h5"]).predict(x), y) <= 1e-5


@pytest.mark.parametrize("entry", MASKED)
def test_onnx_export_keeps_the_repeat_rule_and_is_not_checked_against_newer_keras(entry: dict, tmp_path: Path) -> None:
    x, y = recorded(entry)
    path = OLD / entry["files"]["h5"]
    report = converter.to_onnx(path, tmp_path / "m.onnx")  # oracle auto: tf_keras would use zeros
    assert report.passed
    assert report.oracle.startswith("numpy runtime (not Keras:") and entry["keras_version"] in report.oracle
    model = converter.load(path)
    got = run_onnx(tmp_path / "m.onnx", {model.input_names[0]: x})[model.output_names[0]]
    assert max_error(got, y) <= 1e-5


@pytest.mark.parametrize("entry", MASKED)
def test_keras_oracle_is_refused_for_a_rule_it_computes_differently(entry: dict, tmp_path: Path) -> None:
    with pytest.raises(BadOptions, match="repeats the previous output at masked steps"):
        converter.to_onnx(OLD / entry["files"]["h5"], tmp_path / "m.onnx", oracle="keras")
    assert not (tmp_path / "m.onnx").exists()


def test_the_rule_matters_on_these_files() -> None:
    """The same weights under the zeros rule are far from what Keras 2.3.1 computed."""
    from converter.keras.versions import repeats_masked_bidirectional

    assert repeats_masked_bidirectional("2.3.1") and repeats_masked_bidirectional("2.2.4")
    assert not any(repeats_masked_bidirectional(v) for v in ("2.4.0", "2.12.0", "2.2.4-tf", "3.0.5"))
    entry = next(e for e in ENTRIES if e["name"] == "masked_bidi" and e["target"] == "keras-2.3.1")
    x, y = recorded(entry)
    model = converter.load(OLD / entry["files"]["h5"])
    bidi = next(node.layer for node in model.ir.nodes if type(node.layer).__name__ == "Bidirectional")
    assert not bidi.forward.zero_output_for_mask and not bidi.backward.zero_output_for_mask
    assert (x[0, :2] == 0).all()  # sample 0 is pre-padded: steps 0 and 1 are masked
    assert max_error(model.predict(x)[0, :2], y[0, :2]) <= 1e-5
    # Under the zeros rule both directions give 0 there, so the Dense head would output just its bias.
    dense = next(node.layer for node in model.ir.nodes if type(node.layer).__name__ == "Dense")
    assert max_error(np.broadcast_to(dense.weights["b"], y[0, :2].shape), y[0, :2]) > 1e-2


def test_partial_keras_3_0_5_h5_is_refused_without_reusing_a_dataset() -> None:
    entry = next(e for e in ENTRIES if e["rejected"])
    with pytest.raises(BadModelFile) as caught:
        converter.load(OLD / entry["files"]["h5"])
    message = str(caught.value)
    assert "lists the dataset /model_weights/bidirectional/kernel for two weights" in message
    assert "re-save" in message and "\n" not in message
