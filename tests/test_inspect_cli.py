"""``inspect`` and ``predict`` on the command line, and the parameter counts Keras reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

import converter
from converter.cli import app
from converter.summary import summarize
from tests.fixture_index import ATOL, FIXTURES, all_fixtures, max_abs_error, one_form_each

ROOT = Path(__file__).resolve().parent.parent
INSPECT_SCHEMA = json.loads((ROOT / "schemas" / "inspect.schema.json").read_text())
runner = CliRunner()
EACH = all_fixtures()


@pytest.mark.parametrize("fx", EACH, ids=[f.id for f in EACH])
def test_param_total_equals_keras_count_params(fx) -> None:
    doc = summarize(converter.load(fx.path, config=fx.config).ir)
    jsonschema.validate(doc, INSPECT_SCHEMA)
    assert doc["total_params"] == fx.entry["count_params"]


def test_tutorial_formula_and_gate_tensors() -> None:
    doc = summarize(converter.load(FIXTURES / "keras3" / "tutorial.keras").ir)
    lstm = doc["layers"][0]
    assert lstm["formula"] == "4*(3*5 + 5*5 + 5) = 180"
    assert lstm["output_shapes"] == [[None, 5]]
    shapes = {t["name"]: tuple(t["shape"]) for t in lstm["tensors"]}
    assert shapes["W_f"] == (3, 5) and shapes["U_o"] == (5, 5) and shapes["b_c"] == (5,)
    assert list(shapes) == [f"{p}_{g}" for p in "WUb" for g in "ifco"]


def test_gate_slices_are_the_tutorial_slices() -> None:
    """W_f is kernel[:, H:2H] of the file's kernel: the slicing the tutorials do by hand."""
    import h5py

    path = FIXTURES / "keras2" / "tutorial.h5"
    with h5py.File(path) as f:
        group = f["model_weights/lstm"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        kernel, recurrent, bias = (group[n][()] for n in names)
    lstm = converter.load(path).ir.nodes[0].layer
    units = 5
    for k, gate in enumerate("ifco"):
        block = slice(k * units, (k + 1) * units)
        np.testing.assert_array_equal(lstm.weights[f"W_{gate}"], kernel[:, block])
        np.testing.assert_array_equal(lstm.weights[f"U_{gate}"], recurrent[:, block])
        np.testing.assert_array_equal(lstm.weights[f"b_{gate}"], bias[block])


def test_gru_and_simple_rnn_formulas() -> None:
    doc = summarize(converter.load(FIXTURES / "keras3" / "no_bias.keras").ir)
    formulas = {layer["class"] + str(i): layer["formula"] for i, layer in enumerate(doc["layers"])}
    assert formulas["LSTM0"] == "4*(3*4 + 4*4) = 112"
    doc = summarize(converter.load(FIXTURES / "keras3" / "gru_reset_after.keras").ir)
    assert doc["layers"][0]["formula"] == "3*(3*5 + 5*5 + 2*5) = 150"
    doc = summarize(converter.load(FIXTURES / "keras3" / "gru_reset_before.keras").ir)
    assert doc["layers"][0]["formula"] == "3*(3*5 + 5*5 + 5) = 135"
    doc = summarize(converter.load(FIXTURES / "keras3" / "simple_rnn.keras").ir)
    assert doc["layers"][0]["formula"] == "2*4 + 4*4 + 4 = 28"


def test_inspect_cli_table_and_json() -> None:
    path = str(FIXTURES / "keras3" / "tutorial.keras")
    result = runner.invoke(app, ["inspect", path])
    assert result.exit_code == 0, result.output
    assert "4*(3*5 + 5*5 + 5) = 180" in result.output and "W_i W_f W_c W_o" in result.output
    assert "4 gates x (input_dim 3 x units 5" in result.output and "= kernel[:, 0:5], [:, 5:10]" in result.output
    result = runner.invoke(app, ["inspect", path, "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.output)
    jsonschema.validate(doc, INSPECT_SCHEMA)
    assert doc["total_params"] == 186
    lstm, dense = doc["layers"]
    sources = {t["name"]: t["from"] for t in lstm["tensors"]}
    assert sources["W_f"] == "kernel[:, 5:10]" and sources["U_o"] == "recurrent_kernel[:, 15:20]"
    assert sources["b_c"] == "bias[10:15]" and dense["explained"] == "input 5 x units 1 + bias 1 = 6"


def test_inspect_names_where_every_gate_tensor_lies_in_the_keras_weights() -> None:
    """The slices inspect reports are the slices of the Keras arrays that hold those gate tensors."""
    import h5py

    path = FIXTURES / "keras3" / "gru_reset_after.weights.h5"
    doc = converter.inspect(path)
    model = converter.load(path).ir
    with h5py.File(path) as f:
        kernel, recurrent, bias = (f[f"layers/gru/cell/vars/{k}"][()] for k in range(3))
    arrays = {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}
    gru = doc["layers"][0]
    assert gru["explained"].startswith("3 gates x (input_dim 3 x units 5 + units 5 x units 5 + input bias 5")
    for tensor in gru["tensors"]:
        name, index = tensor["from"].rstrip("]").split("[")
        picked = arrays[name][tuple(_index(part) for part in index.split(", "))]
        assert np.array_equal(picked, model.nodes[0].layer.weights[tensor["name"]])


def _index(text: str) -> int | slice:
    """``0`` or ``5:10`` or ``:`` as a NumPy index."""
    if ":" not in text:
        return int(text)
    start, stop = text.split(":")
    return slice(int(start) if start else None, int(stop) if stop else None)


@pytest.mark.parametrize("fx", one_form_each(), ids=[f.id for f in one_form_each()])
def test_predict_cli_writes_keras_outputs(fx, tmp_path: Path) -> None:
    inputs = tmp_path / "in.npz"
    np.savez(inputs, **dict(zip(fx.entry["input_names"], fx.inputs(), strict=True)))
    out = tmp_path / "out.npz"
    args = ["predict", str(fx.path), "--inputs", str(inputs), "-o", str(out)]
    if fx.config:
        args += ["--config", str(fx.config)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = converter.load(fx.path, config=fx.config)
    with np.load(out, allow_pickle=False) as data:
        names = model.output_names
        got = [data[k] for k in names]
        # After the Keras outputs, every recurrent layer's final states under their ONNX names (lstm/h ...).
        finals = {k: data[k] for k in data.files[len(names) :]}
        assert data.files[: len(names)] == names
    model.predict(fx.inputs())
    assert list(finals) == list(model.states_by_name)
    for key, value in model.states_by_name.items():
        np.testing.assert_array_equal(finals[key], value)
    for g, w in zip(got, fx.outputs(), strict=True):
        assert max_abs_error(g, w) <= ATOL


def test_predict_takes_a_single_npy_and_refuses_to_clobber(tmp_path: Path) -> None:
    fx = next(f for f in one_form_each() if f.name == "tutorial")
    np.save(tmp_path / "x.npy", fx.inputs()[0])
    out = tmp_path / "out.npz"
    args = ["predict", str(fx.path), "--inputs", str(tmp_path / "x.npy"), "-o", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    before = out.read_bytes()
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--force" in result.output
    assert out.read_bytes() == before
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_import_converter_stays_light() -> None:
    code = "import sys, converter, converter.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {})) "
    heavy = "{'tensorflow', 'keras', 'tf_keras', 'onnx', 'onnxruntime', 'torch', 'numpy', 'h5py'}"
    out = subprocess.run([sys.executable, "-c", code.format(heavy)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_converter_answers_help() -> None:
    out = subprocess.run([sys.executable, "-m", "converter", "--help"], capture_output=True, text=True, check=True)
    assert "inspect" in out.stdout and "predict" in out.stdout
