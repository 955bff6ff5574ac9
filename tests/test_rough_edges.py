"""The rough edges a new user hits, each ending in a one-line message and the right exit code."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import converter
from converter.cli import app
from tests.fixture_index import FIXTURES

runner = CliRunner()
TUTORIAL = FIXTURES / "keras3" / "tutorial.keras"
GRU = FIXTURES / "keras3" / "gru_states.keras"


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("suffix", [".onnx", ".npz", ".json"])
def test_verify_of_a_model_and_an_export_that_do_not_belong_together(tmp_path: Path, suffix: str) -> None:
    export = tmp_path / f"gru{suffix}"
    assert cli(f"to-{suffix[1:]}", GRU, "-o", export, "--oracle", "numpy").exit_code == 0
    line = one_error_line(cli("verify", TUTORIAL, export, "--oracle", "numpy"))
    assert str(export) in line and "do not belong together" in line
    with pytest.raises(converter.BadInputs, match="do not belong together"):
        converter.verify(TUTORIAL, export, oracle="numpy")


def test_several_models_into_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    out = tmp_path / "new" / "exports"
    result = cli("to-onnx", TUTORIAL, GRU, "-o", out, "--oracle", "numpy")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["gru_states.onnx", "tutorial.onnx"]
    assert f"created {out}" in result.output


def test_non_finite_verification_inputs_are_refused_up_front(tmp_path: Path) -> None:
    inputs = tmp_path / "in.npz"
    x = np.zeros((2, 4, 3), np.float32)
    x[1, 2, 0] = np.nan
    np.savez(inputs, input_layer=x)
    line = one_error_line(cli("to-onnx", TUTORIAL, "-o", tmp_path / "t.onnx", "--inputs", inputs, "--oracle", "numpy"))
    assert "input 'input_layer' holds NaN or Inf" in line and str(inputs) in line
    assert not (tmp_path / "t.onnx").exists()


def test_a_csv_as_inputs_is_told_which_files_are_accepted(tmp_path: Path) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("1,2,3\n4,5,6\n")
    line = one_error_line(cli("predict", TUTORIAL, "--inputs", csv, "-o", tmp_path / "out.npz"))
    assert "not an .npz or .npy file" in line and "np.savez" in line and "unsafe" not in line


def test_refusals_for_a_target_name_the_file(tmp_path: Path) -> None:
    swish = FIXTURES / "keras3" / "activations_more.keras"
    line = one_error_line(cli("to-onnx", swish, "-o", tmp_path / "a.onnx", "--oracle", "numpy"))
    assert line.startswith(f"error: {swish}: ") and "silu" in line
    reset_before = FIXTURES / "keras3" / "gru_reset_before.keras"
    line = one_error_line(cli("to-npz", reset_before, "-o", tmp_path / "g.npz", "--layout", "pytorch"))
    assert line.startswith(f"error: {reset_before}: ") and "reset_after=False" in line
    batch = cli("to-onnx", swish, TUTORIAL, "-o", tmp_path / "many", "--json", "--oracle", "numpy")
    docs = [json.loads(line) for line in batch.stdout.splitlines()]
    assert docs[0]["error"]["message"].startswith(f"{swish}: ") and docs[1]["passed"]


def test_every_command_pairs_a_weights_file_with_the_config_beside_it(tmp_path: Path) -> None:
    for name in ("tutorial.weights.h5", "tutorial.json"):
        shutil.copy(FIXTURES / "keras3" / name, tmp_path / name)
    weights = tmp_path / "tutorial.weights.h5"
    assert cli("inspect", weights).exit_code == 0
    np.save(tmp_path / "x.npy", np.ones((2, 4, 3), np.float32))
    assert cli("predict", weights, "--inputs", tmp_path / "x.npy", "-o", tmp_path / "y.npz").exit_code == 0
    assert cli("to-onnx", weights, "-o", tmp_path / "t.onnx", "--oracle", "numpy").exit_code == 0
    assert cli("verify", weights, tmp_path / "t.onnx", "--oracle", "numpy").exit_code == 0
    want = converter.load(TUTORIAL).predict(np.ones((2, 4, 3), np.float32))
    assert np.array_equal(np.load(tmp_path / "y.npz")["dense"], want)


@pytest.mark.parametrize("command,wrong", [("to-onnx", "t.npz"), ("to-npz", "t.onnx"), ("to-json", "t.keras")])
def test_an_output_named_for_another_format_is_refused(tmp_path: Path, command: str, wrong: str) -> None:
    line = one_error_line(cli(command, TUTORIAL, "-o", tmp_path / wrong, "--oracle", "numpy"))
    assert "the name says" in line and not (tmp_path / wrong).exists()


def test_messages_use_the_right_article_and_plural(tmp_path: Path) -> None:
    config = json.loads((FIXTURES / "keras3" / "tutorial.json").read_text())
    config["config"]["layers"][1]["class_name"] = "Identity"
    (tmp_path / "m.json").write_text(json.dumps(config))
    shutil.copy(FIXTURES / "keras3" / "tutorial.weights.h5", tmp_path / "m.weights.h5")
    line = one_error_line(cli("inspect", tmp_path / "m.weights.h5"))
    assert "is an Identity" in line
    with pytest.raises(converter.BadInputs, match="takes 1 input \\("):
        converter.load(TUTORIAL).predict([np.ones((1, 4, 3)), np.ones((1, 4, 3))])


def test_inspect_of_a_stateful_model_shows_its_fixed_batch() -> None:
    doc = converter.inspect(FIXTURES / "keras3" / "stateful.keras")
    batch = doc["inputs"][0]["shape"][0]
    assert batch == 3
    assert all(shape[0] == batch for layer in doc["layers"] for shape in layer["output_shapes"])


def test_report_file_and_json_line_agree_on_the_time(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = cli("to-onnx", TUTORIAL, "-o", tmp_path / "t.onnx", "--report", report, "--json", "--oracle", "numpy")
    assert json.loads(result.stdout)["seconds"] == json.loads(report.read_text())["seconds"]


def test_the_api_names_its_options() -> None:
    for function in (converter.to_onnx, converter.to_npz, converter.to_json, converter.verify):
        parameters = inspect.signature(function).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values()), function.__name__
        assert {"config", "inputs", "atol", "rtol", "oracle"} <= set(parameters)
        assert "Args:" in (function.__doc__ or "") or "arguments are those of" in (function.__doc__ or "")


def test_lstm_convert_is_the_same_module() -> None:
    import lstm_convert

    assert lstm_convert is converter and lstm_convert.load is converter.load
