"""Bad input gets a clear one-line error naming the file (and layer), exit code 2, and no traceback."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import converter
from converter.cli import app
from converter.errors import BadInputs, BadModelFile, ConversionError, UnsupportedLayer
from tests.fixture_index import FIXTURES

runner = CliRunner()
K3 = FIXTURES / "keras3"
K2 = FIXTURES / "keras2"


def copy(tmp_path: Path, source: Path, name: str | None = None) -> Path:
    target = tmp_path / (name or source.name)
    shutil.copy(source, target)
    return target


def rezip(source: Path, target: Path, drop: set[str] = frozenset(), replace: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = (replace or {}).get(info.filename, zin.read(info))
            zout.writestr(info.filename, data)
    return target


def assert_error(path: Path, kind: type[ConversionError], *words: str, config: Path | None = None) -> str:
    with pytest.raises(kind) as caught:
        converter.load(path, config=config)
    message = str(caught.value)
    assert str(path) in message or path.name in message
    for word in words:
        assert word in message, message
    return message


# --- files that are not Keras models -------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert_error(tmp_path / "nope.keras", BadModelFile, "no such file")


def test_folder(tmp_path: Path) -> None:
    assert_error(tmp_path, BadModelFile, "folder")
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert_error(tmp_path, BadModelFile, "SavedModel")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = copy(tmp_path, K3 / "tutorial.keras")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)  # root reads any file, so simulate the permission error
    assert_error(path, BadModelFile, "Permission denied")


def test_neither_hdf5_nor_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(b"this is not a model at all")
    assert_error(path, BadModelFile, "neither")


def test_json_passed_as_model(tmp_path: Path) -> None:
    assert_error(copy(tmp_path, K3 / "tutorial.json"), BadModelFile, "--config")


@pytest.mark.parametrize("source", [K3 / "tutorial.h5", K2 / "stacked.h5", K3 / "tutorial.weights.h5"])
def test_truncated_hdf5(tmp_path: Path, source: Path) -> None:
    data = source.read_bytes()
    path = tmp_path / source.name
    path.write_bytes(data[: len(data) // 2])
    config = K3 / "tutorial.json" if source.name.endswith(".weights.h5") else None
    with pytest.raises(BadModelFile) as caught:
        converter.load(path, config=config)
    assert path.name in str(caught.value)


def test_truncated_zip(tmp_path: Path) -> None:
    data = (K3 / "stacked.keras").read_bytes()
    path = tmp_path / "stacked.keras"
    path.write_bytes(data[: len(data) - 200])
    assert_error(path, BadModelFile, "damaged or truncated")


@pytest.mark.parametrize("member", ["config.json", "model.weights.h5"])
def test_keras_archive_missing_member(tmp_path: Path, member: str) -> None:
    path = rezip(K3 / "tutorial.keras", tmp_path / "tutorial.keras", drop={member})
    assert_error(path, BadModelFile, member)


def test_config_not_json(tmp_path: Path) -> None:
    path = rezip(K3 / "tutorial.keras", tmp_path / "t.keras", replace={"config.json": b"{not json"})
    assert_error(path, BadModelFile, "config.json", "not valid JSON")


@pytest.mark.parametrize("config", [[], {"class_name": "Sequential"}, {"class_name": "MyModel", "config": {}}])
def test_config_of_unknown_shape(tmp_path: Path, config: object) -> None:
    path = rezip(K3 / "tutorial.keras", tmp_path / "t.keras", replace={"config.json": json.dumps(config).encode()})
    with pytest.raises(ConversionError) as caught:
        converter.load(path)
    assert "t.keras" in str(caught.value)


def test_weights_only_file_needs_config(tmp_path: Path) -> None:
    assert_error(copy(tmp_path, K3 / "tutorial.weights.h5"), BadModelFile, "--config")


# --- weights that do not fit the config ----------------------------------------------------------


def edit_h5(path: Path, edit) -> Path:
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def test_missing_weights(tmp_path: Path) -> None:
    path = edit_h5(copy(tmp_path, K2 / "tutorial.h5"), lambda f: f["model_weights"].pop("lstm"))
    assert_error(path, BadModelFile, "'lstm'", "holds no weights")


def test_extra_weights(tmp_path: Path) -> None:
    def extra(f: h5py.File) -> None:
        group = f["model_weights"].create_group("ghost")
        group.create_dataset("kernel:0", data=np.zeros((2, 2), np.float32))
        group.attrs["weight_names"] = [b"kernel:0"]

    assert_error(edit_h5(copy(tmp_path, K2 / "tutorial.h5"), extra), BadModelFile, "'ghost'")


def test_extra_weights_in_keras_archive(tmp_path: Path) -> None:
    with zipfile.ZipFile(K3 / "tutorial.keras") as z:
        weights = io.BytesIO(z.read("model.weights.h5"))
    with h5py.File(weights, "r+") as f:
        f.create_group("layers/ghost/vars").create_dataset("0", data=np.zeros(3, np.float32))
    path = rezip(K3 / "tutorial.keras", tmp_path / "t.keras", replace={"model.weights.h5": weights.getvalue()})
    assert_error(path, BadModelFile, "layers/ghost")


def _replace_dataset(f: h5py.File, where: str, data: np.ndarray) -> None:
    del f[where]
    f.create_dataset(where, data=data)


def test_wrong_shape_kernel(tmp_path: Path) -> None:
    """A (3, 16) kernel for LSTM(5) is refused, naming the layer and both shapes."""
    where = "model_weights/lstm/lstm/lstm_cell/kernel:0"
    path = edit_h5(copy(tmp_path, K2 / "tutorial.h5"), lambda f: _replace_dataset(f, where, np.zeros((3, 16), "f4")))
    assert_error(path, BadModelFile, "layer 'lstm'", "(3, 16)", "(3, 20)")


def test_non_float_weights(tmp_path: Path) -> None:
    where = "model_weights/dense/dense/kernel:0"
    path = edit_h5(copy(tmp_path, K2 / "tutorial.h5"), lambda f: _replace_dataset(f, where, np.zeros((5, 1), "i4")))
    assert_error(path, BadModelFile, "int32", "not floating point")


def test_nonfinite_weights_refused_unless_allowed(tmp_path: Path) -> None:
    where = "model_weights/lstm/lstm/lstm_cell/bias:0"

    def poison(f: h5py.File) -> None:
        bias = f[where][()]
        bias[3] = np.nan
        _replace_dataset(f, where, bias)

    path = edit_h5(copy(tmp_path, K2 / "tutorial.h5"), poison)
    assert_error(path, BadModelFile, "NaN or Inf", "--allow-nonfinite")
    model = converter.load(path, allow_nonfinite=True)
    assert np.isnan(model.ir.nodes[0].layer.weights["b_i"][3])


# --- layers that must be refused, without running anything ---------------------------------------


def test_conv_lstm2d_refused_with_the_reason_and_supported_list() -> None:
    message = assert_error(
        K3 / "conv_lstm2d.keras",
        UnsupportedLayer,
        "'conv_lstm2d'",
        "ConvLSTM2D",
        "no fused",
        "Supported layers",
        "Conv1D",
    )
    assert "NotEqual" not in message  # op layers used for masks are not advertised as layers


@pytest.mark.parametrize("path", [K3 / "lambda.keras", K3 / "lambda.h5", K2 / "lambda.h5"])
def test_lambda_refused(path: Path) -> None:
    assert_error(path, UnsupportedLayer, "Lambda", "never run")


def _crafted_keras(tmp_path: Path, layer: dict) -> Path:
    with zipfile.ZipFile(K3 / "tutorial.keras") as z:
        config = json.loads(z.read("config.json"))
    config["config"]["layers"].insert(1, layer)
    return rezip(
        K3 / "tutorial.keras", tmp_path / "crafted.keras", replace={"config.json": json.dumps(config).encode()}
    )


def test_custom_class_refused(tmp_path: Path) -> None:
    layer = {"module": "my_pkg", "class_name": "LSTM", "registered_name": "Custom>LSTM", "config": {"name": "x"}}
    assert_error(_crafted_keras(tmp_path, layer), UnsupportedLayer, "Custom>LSTM", "never loaded")


def test_config_crafted_to_run_code_runs_nothing(tmp_path: Path) -> None:
    """A naive loader would import the module and call it; we only read JSON and refuse."""
    marker = tmp_path / "pwned"
    layer = {
        "module": "os",
        "class_name": "system",
        "registered_name": "system",
        "config": {"name": "evil", "command": f"touch {marker}"},
    }
    with pytest.raises(UnsupportedLayer):
        converter.load(_crafted_keras(tmp_path, layer))
    lam = {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {"name": "lam", "function": {"class_name": "__lambda__", "config": {"code": "b3M="}}},
    }
    with pytest.raises(UnsupportedLayer):
        converter.load(_crafted_keras(tmp_path, lam))
    assert not marker.exists()


# --- hostile archives ----------------------------------------------------------------------------


def test_zip_bomb_refused_without_inflating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(K3 / "tutorial.keras") as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename != "config.json":
                zout.writestr(info.filename, zin.read(info))
        with zout.open("config.json", "w", force_zip64=True) as member:
            chunk = b" " * (1 << 20)
            for _ in range(300):  # 300 MB of spaces deflate to ~300 KB
                member.write(chunk)
    assert path.stat().st_size < 2_000_000
    assert_error(path, BadModelFile, "config.json")


@pytest.mark.parametrize("name", ["/etc/evil.json", "../../evil.json"])
def test_zip_member_with_unsafe_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / "evil.keras"
    shutil.copy(K3 / "tutorial.keras", path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(name, b"{}")
    assert_error(path, BadModelFile, "unsafe name")
    assert not Path("/etc/evil.json").exists()


# --- inputs, outputs and the CLI -----------------------------------------------------------------


def test_inputs_with_wrong_names_shapes_dtypes(tmp_path: Path) -> None:
    model = converter.load(K3 / "multi_io.keras")
    with pytest.raises(BadInputs, match="missing"):
        model.predict({"a": np.zeros((2, 5, 3), np.float32)})
    with pytest.raises(BadInputs, match=r"has shape \(2, 5, 4\)"):
        model.predict({"a": np.zeros((2, 5, 4), np.float32), "b": np.zeros((2, 5, 2), np.float32)})
    with pytest.raises(BadInputs, match="dtype"):
        model.predict({"a": np.zeros((2, 5, 3), "U1"), "b": np.zeros((2, 5, 2), np.float32)})
    result = cli("predict", str(K3 / "multi_io.keras"), "--inputs", str(_npz(tmp_path, c=np.zeros(3))), "-o", "o.npz")
    assert result.exit_code == 2 and "missing: a, b" in result.output


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "in.npz"
    np.savez(path, **arrays)
    return path


def cli(*args: str):
    return runner.invoke(app, list(args))


def test_output_folder_missing(tmp_path: Path) -> None:
    inputs = _npz(tmp_path, x=np.zeros((1, 4, 3), np.float32))
    result = cli("predict", str(K3 / "tutorial.keras"), "--inputs", str(inputs), "-o", str(tmp_path / "no" / "o.npz"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    for args in (["inspect", str(bad)], ["inspect", str(K3 / "conv_lstm2d.keras")]):
        out = subprocess.run([sys.executable, "-m", "converter", *args], capture_output=True, text=True)
        assert out.returncode == 2
        assert out.stdout == ""
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: ")
    out = subprocess.run(
        [sys.executable, "-m", "converter", "--debug", "inspect", str(bad)], capture_output=True, text=True
    )
    assert "Traceback" in out.stderr
