"""The to-onnx / to-npz / to-json / verify commands end to end: files, reports, exit codes, atomicity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

import converter
from converter.cli import app
from converter.errors import OutputExists
from converter.export.onnx_run import run_onnx
from tests.fixture_index import ATOL, FIXTURES, max_abs_error

ROOT = Path(__file__).resolve().parent.parent
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
TUTORIAL = FIXTURES / "keras3" / "tutorial.keras"
runner = CliRunner()


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("command,suffix", [("to-onnx", ".onnx"), ("to-npz", ".npz"), ("to-json", ".json")])
def test_convert_writes_verified_export_and_report(tmp_path: Path, command: str, suffix: str) -> None:
    out, report = tmp_path / f"m{suffix}", tmp_path / "report.json"
    result = cli(command, TUTORIAL, "-o", out, "--report", report, "--oracle", "numpy")
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["passed"] and doc["exit_code"] == 0 and doc["oracle"] == "numpy runtime"
    assert doc["worst_abs_error"] <= ATOL and doc["layers"] == 2
    assert no_leftovers(tmp_path)
    check = cli("verify", TUTORIAL, out, "--oracle", "numpy")
    assert check.exit_code == 0, check.output


def test_keras_is_the_oracle_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    report = converter.to_onnx(FIXTURES / "keras2" / "masked_bidi.h5", tmp_path / "m.onnx")
    assert report.oracle.startswith("tf_keras 2.") and report.passed


def test_onnx_metadata_and_default_output_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli(
        "to-onnx", FIXTURES / "keras3" / "tutorial.weights.h5", "--config", FIXTURES / "keras3" / "tutorial.json"
    )
    assert result.exit_code == 0, result.output
    model = onnx.load(tmp_path / "tutorial.onnx")
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["source_file"] == "tutorial.weights.h5" and meta["converter"].startswith("lstm-convert")
    assert json.loads(meta["gate_layout"])["lstm"] == "iofc"


def test_unverified_onnx_computes_no_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-verify without --test-data has no use for the original's outputs, so nothing runs the model."""

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the original was run although nothing needs its outputs")

    monkeypatch.setattr("converter.convert.original_calls", must_not_run)
    out, report = tmp_path / "m.onnx", tmp_path / "r.json"
    result = cli("to-onnx", TUTORIAL, "-o", out, "--no-verify", "--report", report)
    assert result.exit_code == 0, result.output
    assert "not verified (--no-verify)" in result.output
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["oracle"] is None and doc["outputs"] == [] and doc["passed"]
    onnx.checker.check_model(onnx.load(out))
    with np.load(TUTORIAL.with_name("tutorial.io.npz")) as io:  # unverified, still what Keras computed
        got = run_onnx(out, {"input_layer": io["input/0"]})
        assert max_abs_error(got["dense"], io["output/0"]) <= ATOL


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_verify_export_alone_uses_its_test_vector(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"m{suffix}"
    assert cli(f"to-{suffix[1:]}", FIXTURES / "keras2" / "stacked.h5", "-o", out, "--oracle", "numpy").exit_code == 0
    result = cli("verify", out, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["oracle"] == "embedded test vector" and doc["passed"]


def test_failed_verification_leaves_nothing_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("keras")
    import converter.verification as verify_module

    real = verify_module.numpy_outputs
    monkeypatch.setattr(verify_module, "numpy_outputs", lambda m, f: {k: v + 0.01 for k, v in real(m, f).items()})
    out, report = tmp_path / "m.npz", tmp_path / "r.json"
    result = cli("to-npz", TUTORIAL, "-o", out, "--report", report, "--oracle", "keras")
    assert result.exit_code == 1
    assert not out.exists() and no_leftovers(tmp_path)
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert not doc["passed"] and 0.009 < doc["worst_abs_error"] < 0.011


def test_existing_output_needs_force_and_failures_keep_it(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"precious")
    result = cli("to-onnx", TUTORIAL, "-o", out)
    assert result.exit_code == 2 and "--force" in result.output and out.read_bytes() == b"precious"
    result = cli("to-onnx", FIXTURES / "keras3" / "conv_lstm2d.keras", "-o", out, "--force")
    assert result.exit_code == 2 and out.read_bytes() == b"precious"
    assert cli("to-onnx", TUTORIAL, "-o", out, "--force", "--oracle", "numpy").exit_code == 0
    assert onnx.load(out).graph.node


def test_interrupt_leaves_target_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import converter.export.npz as npz

    out = tmp_path / "m.npz"
    out.write_bytes(b"old")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(npz, "write_npz", interrupted)
    result = cli("to-npz", TUTORIAL, "-o", out, "--force", "--oracle", "numpy")
    assert result.exit_code == 130
    assert out.read_bytes() == b"old" and no_leftovers(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        converter.to_npz(TUTORIAL, out, force=True, oracle="numpy")
    assert out.read_bytes() == b"old" and no_leftovers(tmp_path)


def test_library_refuses_to_clobber(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    out.write_text("{}")
    with pytest.raises(OutputExists):
        converter.to_json(TUTORIAL, out, oracle="numpy")


def test_parallel_processes_into_one_folder(tmp_path: Path) -> None:
    """Several processes converting at once (two of them to the same file) corrupt nothing."""
    models = [FIXTURES / "keras3" / f"{n}.keras" for n in ("tutorial", "stacked", "gru_states", "bidi_sum")]
    commands = [
        [sys.executable, "-m", "converter", "to-npz", str(m), "-o", str(tmp_path / f"{m.stem}.npz")] for m in models
    ]
    same = tmp_path / "same.npz"
    commands += [[sys.executable, "-m", "converter", "to-npz", str(models[0]), "-o", str(same), "--force"]] * 2
    procs = [subprocess.Popen([*c, "--oracle", "numpy"], stderr=subprocess.PIPE) for c in commands]
    assert [p.wait(timeout=120) for p in procs] == [0] * len(procs)
    for path in [*(tmp_path / f"{m.stem}.npz" for m in models), same]:
        assert cli("verify", path).exit_code == 0
    assert no_leftovers(tmp_path)


def test_folder_batch_json_exit_code_and_jobs(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("tutorial", "gru_states", "conv_lstm2d"):
        (models / f"{name}.keras").write_bytes((FIXTURES / "keras3" / f"{name}.keras").read_bytes())
    (models / "tutorial.weights.h5").write_bytes((FIXTURES / "keras3" / "tutorial.weights.h5").read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    serial = cli("to-npz", models, "-o", out, "--json", "--oracle", "numpy")
    assert serial.exit_code == 2  # the worst: conv_lstm2d is unsupported, the others still converted
    docs = [json.loads(line) for line in serial.stdout.splitlines()]
    for doc in docs:
        jsonschema.validate(doc, REPORT_SCHEMA)
    assert [Path(d["model"]).name for d in docs] == ["conv_lstm2d.keras", "gru_states.keras", "tutorial.keras"]
    assert [d["exit_code"] for d in docs] == [2, 0, 0] and docs[0]["error"]["kind"] == "UnsupportedLayer"
    assert sorted(p.name for p in out.iterdir()) == ["gru_states.npz", "tutorial.npz"]
    parallel = cli("to-npz", models, "-o", out, "--json", "--oracle", "numpy", "--force", "--jobs", "2")
    strip = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in parallel.stdout.splitlines()]
    assert strip == [{k: v for k, v in d.items() if k != "seconds"} for d in docs]
    fail_fast = cli("to-npz", models, "-o", out, "--json", "--oracle", "numpy", "--force", "--fail-fast")
    assert len(fail_fast.stdout.splitlines()) == 1


def test_onnx_test_data_layout(tmp_path: Path) -> None:
    import onnxruntime as ort

    folder = tmp_path / "case"
    fx = FIXTURES / "keras3" / "masked_states.keras"
    result = cli("to-onnx", fx, "-o", tmp_path / "m.onnx", "--test-data", folder, "--state-io", "--oracle", "numpy")
    assert result.exit_code == 0, result.output
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    data = folder / "test_data_set_0"
    inputs = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data.glob("input_*.pb"))]
    names = [onnx.load_tensor(str(p)).name for p in sorted(data.glob("input_*.pb"))]
    want = [
        numpy_helper.to_array(onnx.load_tensor(str(data / f"output_{k}.pb"))) for k in range(len(sess.get_outputs()))
    ]
    got = sess.run(None, dict(zip(names, inputs, strict=True)))
    # seq, h and c: the return_state outputs are the state outputs; the state inputs are required inputs.
    assert len(got) == len(want) == 3
    assert sorted(names) == sorted(i.name for i in sess.get_inputs()) and len(names) == 3
    for g, w in zip(got, want, strict=True):
        assert max_abs_error(g, w) <= ATOL


def test_predict_on_exports_matches_keras(tmp_path: Path) -> None:
    """lstm-convert predict runs any npz or JSON export, like the original."""
    fx = FIXTURES / "keras2" / "initial_state.h5"
    with np.load(FIXTURES / "keras2" / "initial_state.io.npz") as io:
        feeds = {"x": io["input/0"], "h0": io["input/1"], "c0": io["input/2"]}
        want = [io["output/0"], io["output/1"]]
    np.savez(tmp_path / "in.npz", **feeds)
    for suffix in (".npz", ".json"):
        export = tmp_path / f"m{suffix}"
        assert cli(f"to-{suffix[1:]}", fx, "-o", export, "--layout", "onnx", "--oracle", "numpy").exit_code == 0
        out = tmp_path / f"out{suffix}.npz"
        result = cli("predict", export, "--inputs", tmp_path / "in.npz", "-o", out)
        assert result.exit_code == 0, result.output
        with np.load(out) as got:  # the Keras outputs, then the final states of each recurrent layer
            assert got.files[len(want) :] == ["lstm/h", "lstm/c", "gru/h"]
            for g, w in zip([got[k] for k in got.files[: len(want)]], want, strict=True):
                assert max_abs_error(g, w) <= ATOL


@pytest.mark.parametrize(
    "args,words",
    [
        (["to-onnx", FIXTURES / "keras3" / "tutorial.keras", "--opset", "7"], ["opset", "13"]),
        (["to-npz", FIXTURES / "keras3" / "gru_reset_before.keras", "--layout", "pytorch"], ["reset_after", "PyTorch"]),
        (["to-onnx", FIXTURES / "keras3" / "activations_more.keras"], ["activation", "ONNX"]),
        (["to-json", FIXTURES / "keras3" / "tutorial.keras", "--layout", "tflite"], ["--layout", "keras"]),
    ],
)
def test_options_the_target_cannot_honour(tmp_path: Path, args: list, words: list[str]) -> None:
    out = tmp_path / "out.file"
    result = cli(*args, "-o", out, "--oracle", "numpy")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert message.startswith("error: ") and all(w in message for w in words), message
    assert not out.exists() and no_leftovers(tmp_path)


def test_single_model_paths(tmp_path: Path) -> None:
    result = cli("to-onnx", tmp_path / "missing.keras", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "missing.keras: no such file" in result.output
    result = cli("to-onnx", TUTORIAL, "-o", tmp_path, "--oracle", "numpy")  # -o an existing folder
    assert result.exit_code == 0 and (tmp_path / "tutorial.onnx").exists()
    result = cli("inspect", TUTORIAL, "--config", FIXTURES / "keras3" / "stacked.json")
    assert result.exit_code == 2 and "carries its own config" in result.output


def test_weights_file_named_explicitly_pairs_with_its_json(tmp_path: Path) -> None:
    for name in ("stacked.weights.h5", "stacked.json", "tutorial.keras"):
        (tmp_path / name).write_bytes((FIXTURES / "keras3" / name).read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    args = [tmp_path / "stacked.weights.h5", tmp_path / "tutorial.keras", "-o", out, "--json", "--oracle", "numpy"]
    result = cli("to-npz", *args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["stacked.npz", "tutorial.npz"]
    (out / "report.json").write_text(json.dumps({"passed": True}))
    assert cli("to-onnx", TUTORIAL, "-o", out / "t.onnx", "--oracle", "numpy").exit_code == 0
    result = cli("verify", out, "--json")  # the report and the ONNX file are not checkable alone: skipped
    assert result.exit_code == 0, result.output
    assert sorted(Path(json.loads(line)["export"]).name for line in result.stdout.splitlines()) == [
        "stacked.npz",
        "tutorial.npz",
    ]
