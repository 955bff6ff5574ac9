"""Nothing in a model file runs as code: not in the reader, and not in the Keras oracle of verification.

The payloads write a marker file when run. The first test shows that real tf_keras runs a Lambda's
marshalled bytecode from a Keras 2 .h5 even when the Lambda is not connected to the outputs (the hole
the oracle had: the reader accepted such a file, then verification handed it to tf_keras), that the
oracle's safe-mode scope makes tf_keras refuse it too (a second line of defence), then that
lstm-convert refuses the file and the marker never appears.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import converter
from converter.cli import app
from converter.errors import UnsupportedLayer
from converter.verification import keras_outputs, sample_inputs
from tests.fixture_index import FIXTURES, ROOT

K2, K3 = FIXTURES / "keras2", FIXTURES / "keras3"

#: Run by real tf_keras in a child process: save a Lambda whose code writes MARKER, splice that Lambda
#: (with its marshalled bytecode) unconnected into a copy of a fixture, and load the copy in tf_keras.
_MAKE_PAYLOAD = """
import json, os, shutil, sys
from pathlib import Path
import h5py
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tf_keras as k

marker, source, hostile, scratch = (Path(a) for a in sys.argv[1:])
payload = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).write_text('ran'), x)[1]")
inp = k.Input((4, 3))
k.Model(inp, k.layers.Lambda(payload, name="payload")(inp)).save(scratch)
marker.unlink()  # building the model called the Lambda once
with h5py.File(scratch, "r") as f:
    lam = next(l for l in json.loads(f.attrs["model_config"])["config"]["layers"] if l["class_name"] == "Lambda")
shutil.copy(source, hostile)
with h5py.File(hostile, "r+") as f:
    config = json.loads(f.attrs["model_config"])
    first_input = config["config"]["input_layers"][0][0]
    lam["inbound_nodes"] = [[[first_input, 0, 0, {}]]]  # fed by the input, feeding nothing
    config["config"]["layers"].append(lam)
    f.attrs["model_config"] = json.dumps(config)
k.models.load_model(hostile, compile=False)
print("RAN" if marker.exists() else "NOT RUN")
marker.unlink(missing_ok=True)
# the oracle's second line of defence: the same load inside its safe-mode scope refuses the Lambda
from converter.keras_oracle import _safe_mode
try:
    with _safe_mode(k):
        k.models.load_model(hostile, compile=False)
    print("SAFE MODE LOADED")
except ValueError as exc:
    print("SAFE MODE REFUSED" if "Lambda" in str(exc) else f"SAFE MODE FAILED {exc}")
print("RAN IN SAFE MODE" if marker.exists() else "NOT RUN IN SAFE MODE")
"""


@pytest.fixture(scope="module")
def lambda_payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("tf_keras")
    folder = tmp_path_factory.mktemp("payload")
    marker, hostile = folder / "marker", folder / "gru_states.h5"
    args = [str(marker), str(K2 / "gru_states.h5"), str(hostile), str(folder / "scratch.h5")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _MAKE_PAYLOAD, *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()[-3:]
    assert lines[0] == "RAN", out.stdout  # the hole: plain tf_keras runs the unconnected Lambda
    assert lines[1:] == ["SAFE MODE REFUSED", "NOT RUN IN SAFE MODE"], out.stdout
    assert not marker.exists()
    return hostile, marker


def test_unconnected_lambda_in_keras2_h5_never_runs(lambda_payload: tuple[Path, Path], tmp_path: Path) -> None:
    hostile, marker = lambda_payload
    with pytest.raises(UnsupportedLayer, match="'payload' is a Lambda") as caught:
        converter.load(hostile)
    assert str(hostile) in str(caught.value) and "\n" not in str(caught.value)
    out = tmp_path / "out.onnx"
    for oracle in ("auto", "keras"):
        result = CliRunner().invoke(app, ["to-onnx", str(hostile), "-o", str(out), "--oracle", oracle])
        assert result.exit_code == 2 and "Lambda" in result.output, result.output
    assert not out.exists()
    assert not marker.exists()


def test_oracle_refuses_a_file_the_reader_did_not_accept(lambda_payload: tuple[Path, Path], tmp_path: Path) -> None:
    """Even called directly (or with the file swapped after reading), the oracle re-reads what it loads."""
    hostile, marker = lambda_payload
    clean = converter.load(K2 / "gru_states.h5").ir  # a model the reader accepted, for the same input shapes
    with pytest.raises(UnsupportedLayer, match="Lambda") as caught:
        keras_outputs(hostile, None, clean, sample_inputs(clean))
    assert str(caught.value).startswith(f"{hostile}: ")
    assert not marker.exists()


# --- hand-edited configs: code anywhere, connected or not, nested or not ---------------------------------


def _keras_with(tmp_path: Path, edit) -> Path:
    with zipfile.ZipFile(K3 / "tutorial.keras") as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    path = tmp_path / "crafted.keras"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _layer(class_name: str, config: dict, module: str = "keras.layers", registered: str | None = None) -> dict:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": registered}


def _marker_code(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')"


EVAL = {"module": "builtins", "class_name": "function", "config": "eval", "registered_name": "function"}


def _cases(marker: Path) -> dict[str, dict]:
    lam = _layer("Lambda", {"name": "lam", "function": {"class_name": "__lambda__", "config": {"code": "YQ=="}}})
    nested = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "inner", "layers": [_layer("Dense", {"name": "d", "units": 2, "activation": EVAL})]},
        "registered_name": None,
    }
    return {
        "lambda": lam,
        "eval_activation": _layer("Dense", {"name": "d", "units": 2, "activation": EVAL}),
        "custom_class": _layer("LSTM", {"name": "c", "units": 2}, module="my_pkg", registered="Custom>LSTM"),
        "os_system": _layer("system", {"name": "s", "command": f"touch {marker}"}, module="os", registered="system"),
        "nested_model": nested,
        "lambda_in_wrapper": _layer("Bidirectional", {"name": "b", "layer": lam}),
        "keras2_bytecode": {"class_name": "Lambda", "config": {"name": "k2", "function": ["YQ==", None, None]}},
    }


@pytest.mark.parametrize(
    "case",
    ["lambda", "eval_activation", "custom_class", "os_system", "nested_model", "lambda_in_wrapper", "keras2_bytecode"],
)
def test_code_anywhere_in_the_config_is_refused(tmp_path: Path, case: str) -> None:
    """Appended to the layer list, fed by nothing the outputs need: still refused."""
    marker = tmp_path / "marker"
    layer = _cases(marker)[case]
    if case == "keras2_bytecode":
        layer["config"]["function_type"] = "lambda"
    path = _keras_with(tmp_path, lambda c: c["config"]["layers"].append(layer))
    with pytest.raises(UnsupportedLayer) as caught:
        converter.load(path)
    assert "never" in str(caught.value) and str(path) in str(caught.value)
    result = CliRunner().invoke(app, ["to-onnx", str(path), "-o", str(tmp_path / "o.onnx"), "--oracle", "keras"])
    assert result.exit_code == 2
    assert not marker.exists() and not (tmp_path / "o.onnx").exists()


def test_eval_in_a_connected_layer_option_is_refused(tmp_path: Path) -> None:
    def edit(config: dict) -> None:
        lstm = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "LSTM")
        lstm["config"]["recurrent_activation"] = EVAL

    with pytest.raises(UnsupportedLayer, match="builtins"):
        converter.load(_keras_with(tmp_path, edit))


def test_custom_training_config_is_not_read(tmp_path: Path) -> None:
    """A custom loss in compile_config is never deserialised (the oracle loads with compile=False)."""

    def edit(config: dict) -> None:
        config["compile_config"] = {"loss": {**EVAL, "config": "my_loss", "module": "my_pkg.losses"}}

    model = converter.load(_keras_with(tmp_path, edit))
    assert model.output_names == ["dense"]


def test_builtin_activation_reference_is_accepted(tmp_path: Path) -> None:
    """Keras 3 may save a built-in activation as a function of keras.activations: that is no custom code."""
    ref = {"module": "keras.activations", "class_name": "function", "config": "tanh"}

    def edit(config: dict) -> None:
        dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
        dense["config"]["activation"] = {**ref, "registered_name": "function"}

    converter.load(_keras_with(tmp_path, edit))


def test_keras_sees_only_a_copy_loaded_in_safe_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """keras_outputs gives the Keras worker a private copy named by its form, which the worker loads with
    safe_mode=True and compile=False."""
    pytest.importorskip("keras")
    from converter import keras_oracle

    sent: dict = {}
    real_predict = keras_oracle.OracleWorker.predict

    def spy_predict(self, path, *args, **kwargs):
        sent.update(path=Path(path), bytes=Path(path).read_bytes())
        return real_predict(self, path, *args, **kwargs)

    monkeypatch.setattr(keras_oracle.OracleWorker, "predict", spy_predict)
    source = tmp_path / "oddly named.bin"
    shutil.copy(K3 / "tutorial.keras", source)
    model = converter.load(source).ir
    feeds = sample_inputs(model)
    outputs, oracle, _ = keras_outputs(source, None, model, feeds)
    assert oracle.startswith("keras ")
    assert sent["path"].name == "model.keras" and sent["path"].parent != tmp_path
    assert sent["bytes"] == source.read_bytes()
    assert not sent["path"].exists()  # the private copy is gone
    assert np.isfinite(outputs["dense"]).all()

    named = tmp_path / "model.keras"  # the worker is handed copies named by their form
    shutil.copy(source, named)
    np.savez(tmp_path / "feeds.npz", **feeds)
    script = f"""
import json, numpy as np, keras
from converter import keras_oracle
seen = {{}}
real = keras.models.load_model
def spy(path, **kwargs):
    seen.update(kwargs)
    return real(path, **kwargs)
keras.models.load_model = spy
request = {{"path": {str(named)!r}, "config": None, "keras_major": 3, "inputs": ["input_layer"], "outputs": ["dense"]}}
feeds = dict(np.load({str(tmp_path / "feeds.npz")!r}))
out, _, _ = keras_oracle._run(request, feeds, {{}})
np.save({str(tmp_path / "again.npy")!r}, out["0/dense"])
print(json.dumps(seen))
"""
    # the worker's own loading, in a child process as the worker is (Keras stays out of the test process)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"compile": False, "safe_mode": True}
    assert np.array_equal(np.load(tmp_path / "again.npy"), outputs["dense"])
