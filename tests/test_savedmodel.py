"""SavedModel folders and TF checkpoints written by tf_keras 2.21, tf.keras 2.15 and 2.12, read without
TensorFlow: the NumPy runtime, ONNX (onnxruntime) and npz exports against each version's recorded
outputs (float32, max abs error 1e-5), the saved states of a stateful model, and hostile variants.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import converter
from converter.cli import app
from converter.errors import BadModelFile, BadOptions
from converter.export.onnx_run import run_onnx
from converter.files import file_kind
from converter.keras import saved_states
from tests.bundle_writer import rewrite_entry, rewrite_header, table

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "fixtures" / "tf"
ENTRIES = [json.loads(p.read_text()) for p in sorted(TF.glob("*/*.entry.json"))]
ATOL = 1e-5
runner = CliRunner()


def io(entry: dict) -> dict[str, np.ndarray]:
    with np.load(TF / entry["io"]) as data:
        return {k: data[k] for k in data.files}


def forms(entry: dict) -> dict[str, tuple[Path, Path | None]]:
    """Every way a user can name the model: (MODEL, --config)."""
    saved, prefix, config = (TF / entry["files"][k] for k in ("savedmodel", "checkpoint", "config"))
    return {
        "savedmodel": (saved, None),
        "saved_model.pb": (saved / "saved_model.pb", None),
        "checkpoint": (prefix, config),
        "checkpoint.index": (Path(f"{prefix}.index"), config),
        "checkpoint-folder": (prefix.parent, config),
        # Keras' own files from the same versions (tf.keras 2.12 keeps their weights under a root group
        # _layer_checkpoint_dependencies, with other counters)
        "keras": (TF / entry["files"]["keras"], None),
        "weights.h5": (TF / entry["files"]["weights"], config),
    }


CASES = [
    pytest.param(entry, form, id=f"{entry['target']}-{entry['name']}-{form}")
    for entry in ENTRIES
    for form in forms(entry)
]
ONE_FORM_EACH = [
    pytest.param(entry, form, id=f"{entry['target']}-{entry['name']}-{form}")
    for entry in ENTRIES
    for form in ("savedmodel", "checkpoint")
]


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert float(np.abs(got.astype(np.float64) - want).max()) <= ATOL


def test_fixtures_cover_every_version_and_model() -> None:
    assert {e["target"] for e in ENTRIES} == {"tf_keras-2.21", "tf-2.15", "tf-2.12"}
    assert {e["keras_version"] for e in ENTRIES} == {"2.21.0", "2.15.0", "2.12.0"}
    assert len(ENTRIES) == 19


@pytest.mark.parametrize(("entry", "form"), CASES)
def test_numpy_runtime_matches_keras(entry: dict, form: str) -> None:
    model_path, config = forms(entry)[form]
    recorded = io(entry)
    model = converter.load(model_path, config)
    assert model.ir.keras_version == entry["keras_version"]
    model.reset_states()  # a SavedModel's stateful layers start from its saved states: see the test below
    if form in ("keras", "weights.h5"):  # Keras keeps no states there
        assert saved_states(model_path, config) == {}
    assert_close(model.predict(recorded["input/0"]), recorded["output/0"])
    if entry["stateful"]:  # the second call continues from the first one's states
        assert_close(model.predict(recorded["input2/0"]), recorded["output2/0"])


def state_feeds(states: dict[str, dict[str, list[np.ndarray]]]) -> dict[str, np.ndarray]:
    """Saved states as the ONNX export's state inputs: ``<layer>/h0``, ``<layer>/forward/c0``, ..."""
    feeds = {}
    for layer, directions in states.items():
        for direction, arrays in directions.items():
            prefix = f"{layer}/{direction}/" if direction else f"{layer}/"
            feeds |= {prefix + name: array for name, array in zip(("h0", "c0"), arrays, strict=False)}
    return feeds


def carried(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An ONNX call's final states (``.../h``, ``.../c``) as the next call's state inputs."""
    return {name + "0": value for name, value in outputs.items() if name.endswith(("/h", "/c"))}


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e["stateful"]], ids=lambda e: f"{e['target']}-{e['name']}")
def test_stateful_savedmodel_continues_from_its_saved_states_like_keras(entry: dict) -> None:
    recorded = io(entry)
    saved, _ = forms(entry)["savedmodel"]
    states = saved_states(saved)
    assert states and all(a.shape[0] == 3 for d in states.values() for arrays in d.values() for a in arrays)
    if entry["name"] == "stateful_bidi":
        assert sorted(states["bidirectional"]) == ["backward", "forward"]
    # Keras reloaded the SavedModel and called it once on input3: it continued from the saved states.
    assert_close(converter.load(saved).predict(recorded["input3/0"]), recorded["output3/0"])
    fresh = converter.load(saved)
    fresh.reset_states()
    assert float(np.abs(fresh.predict(recorded["input3/0"]) - recorded["output3/0"]).max()) > 1e-3
    # A TF checkpoint keeps no states: it starts from zeros, as Keras' load_weights leaves them.
    prefix, config = forms(entry)["checkpoint"]
    assert saved_states(prefix, config) == {}
    assert_close(converter.load(prefix, config).predict(recorded["input/0"]), recorded["output/0"])


@pytest.mark.parametrize(("entry", "form"), ONE_FORM_EACH)
def test_onnx_export_matches_keras(entry: dict, form: str, tmp_path: Path) -> None:
    model_path, config = forms(entry)[form]
    recorded = io(entry)
    out = tmp_path / "m.onnx"
    report = converter.to_onnx(model_path, out, config=config, oracle="numpy")
    assert report.passed
    model = converter.load(model_path, config)
    (x_name,), (y_name,) = model.input_names, model.output_names
    first = run_onnx(out, {x_name: recorded["input/0"]})
    assert_close(first[y_name], recorded["output/0"])
    if entry["stateful"]:
        second = run_onnx(out, {x_name: recorded["input2/0"]}, carried(first))
        assert_close(second[y_name], recorded["output2/0"])
    if entry["stateful"] and form == "savedmodel":
        # The export starts from zeros and says so; fed the saved states it continues as Keras does.
        assert "start from zero states" in report.note
        resumed = run_onnx(out, {x_name: recorded["input3/0"]}, state_feeds(saved_states(model_path)))
        assert_close(resumed[y_name], recorded["output3/0"])
        assert "start from zero states" in converter.verify(model_path, out, oracle="numpy").note
    else:
        assert "zero states" not in report.note  # only what every ONNX check notes


@pytest.mark.parametrize(("entry", "form"), ONE_FORM_EACH)
def test_npz_export_matches_keras(entry: dict, form: str, tmp_path: Path) -> None:
    model_path, config = forms(entry)[form]
    recorded = io(entry)
    out = tmp_path / "m.npz"
    assert converter.to_npz(model_path, out, config=config, oracle="numpy").passed
    exported = converter.load(out)
    assert_close(exported.predict(recorded["input/0"]), recorded["output/0"])
    if entry["stateful"]:
        assert_close(exported.predict(recorded["input2/0"]), recorded["output2/0"])


def test_keras_oracle_reads_both_forms(tmp_path: Path) -> None:
    pytest.importorskip("tf_keras")
    stateful = next(e for e in ENTRIES if e["target"] == "tf-2.12" and e["name"] == "stateful_lstm")
    plain = next(e for e in ENTRIES if e["target"] == "tf-2.12" and e["name"] == "gru_both")
    for entry, form in ((stateful, "saved_model.pb"), (plain, "checkpoint")):  # Keras is slow to load them
        model_path, config = forms(entry)[form]
        report = converter.to_onnx(model_path, tmp_path / f"{form}.onnx", config=config, oracle="keras")
        # the stateful one passes because the oracle is reset_states() after Keras restored the saved states
        assert report.passed and report.oracle.startswith("tf_keras")


def test_cli_converts_a_savedmodel_folder_and_a_checkpoint(tmp_path: Path) -> None:
    entry = next(e for e in ENTRIES if e["name"] == "masked_bidi" and e["target"] == "tf-2.15")
    saved, _ = forms(entry)["savedmodel"]
    prefix, config = forms(entry)["checkpoint"]
    result = runner.invoke(app, ["to-onnx", str(saved), "-o", str(tmp_path / "a.onnx"), "--oracle", "numpy"])
    assert result.exit_code == 0, result.output
    args = ["to-json", str(prefix), "--config", str(config), "-o", str(tmp_path / "b.json"), "--oracle", "numpy"]
    assert runner.invoke(app, args).exit_code == 0
    verify = runner.invoke(app, ["verify", str(saved), str(tmp_path / "a.onnx"), "--oracle", "numpy"])
    assert verify.exit_code == 0, verify.output
    models = tmp_path / "models"
    for name in ("lstm_dense", "gru_both"):
        shutil.copytree(TF / "tf-2.15" / f"{name}.savedmodel", models / "nested" / f"{name}.savedmodel")
    outputs = tmp_path / "out"
    outputs.mkdir()
    folder = runner.invoke(app, ["to-onnx", str(models), "-o", str(outputs), "--oracle", "numpy"])
    assert folder.exit_code == 0, folder.output  # a folder of SavedModels: each one found and converted
    assert sorted(p.name for p in outputs.iterdir()) == ["gru_both.onnx", "lstm_dense.onnx"]


def test_tf_keras_2_12_files_use_their_own_weights_root() -> None:
    import h5py

    for entry in (e for e in ENTRIES if e["target"] == "tf-2.12"):
        with h5py.File(TF / entry["files"]["weights"]) as h5:
            assert "_layer_checkpoint_dependencies" in h5 and "layers" not in h5
        # the second LSTM of stacked_td is "lstm_2" there (a layer with weights is listed twice), not "lstm_1"
    with h5py.File(TF / "tf-2.12" / "stacked_td.weights.h5") as h5:
        assert sorted(h5["_layer_checkpoint_dependencies"]) == ["lstm", "lstm_2", "time_distributed"]


def test_fitted_models_carry_optimizer_variables_that_are_no_layer_weights() -> None:
    from converter.keras.bundle import Bundle

    for entry in (e for e in ENTRIES if e["name"] == "trained_bidi"):
        prefix = TF / entry["files"]["checkpoint"]
        keys = Bundle(prefix, prefix.parent).keys()
        assert any(k.startswith("optimizer/") for k in keys)  # read past, not mistaken for weights
        assert entry["keras_version"] in converter.load(prefix, TF / entry["files"]["config"]).ir.keras_version


def test_saved_model_pb_is_not_taken_for_onnx() -> None:
    entry = ENTRIES[0]
    assert file_kind(forms(entry)["saved_model.pb"][0]) == "keras"
    assert file_kind(forms(entry)["checkpoint"][0]) == "keras"


def test_reading_never_imports_tensorflow() -> None:
    entry = next(e for e in ENTRIES if e["stateful"])
    saved = TF / entry["files"]["savedmodel"]
    code = (
        "import sys, converter; converter.load(sys.argv[1]); "
        "bad = [m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


# --- refusals ---------------------------------------------------------------------------------------


def copy_savedmodel(tmp_path: Path, name: str = "lstm_dense", target: str = "tf_keras-2.21") -> Path:
    return Path(shutil.copytree(TF / target / f"{name}.savedmodel", tmp_path / "m.savedmodel"))


def refused(path: Path, *words: str, config: Path | None = None, kind: type = BadModelFile) -> str:
    with pytest.raises(kind) as caught:
        converter.load(path, config)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_bare_tf_function_savedmodel_is_refused_saying_what_it_is() -> None:
    refused(TF / "tf_keras-2.21" / "bare_function.savedmodel", "no keras_metadata.pb", "tf.function", "tf2onnx")


def test_checkpoint_without_config_asks_for_it() -> None:
    refused(TF / ENTRIES[0]["files"]["checkpoint"], "--config")


def test_savedmodel_with_config_is_refused() -> None:
    entry = ENTRIES[0]
    refused(TF / entry["files"]["savedmodel"], "own config", config=TF / entry["files"]["config"], kind=BadOptions)


def test_checkpoint_with_another_models_config_is_refused() -> None:
    prefix = TF / "tf-2.15" / "lstm_dense.ckpt" / "m"
    refused(prefix, config=TF / "tf-2.15" / "gru_both.json")


def test_truncated_index(tmp_path: Path) -> None:
    saved = copy_savedmodel(tmp_path)
    index = saved / "variables" / "variables.index"
    index.write_bytes(index.read_bytes()[:-10])
    refused(saved, "not a readable TensorFlow checkpoint index", "magic")


def test_index_block_with_bad_crc(tmp_path: Path) -> None:
    saved = copy_savedmodel(tmp_path)
    index = saved / "variables" / "variables.index"
    data = bytearray(index.read_bytes())
    data[20] ^= 0x40  # inside the first data block
    index.write_bytes(bytes(data))
    refused(saved, "CRC-32C")


def test_tensor_with_bad_crc(tmp_path: Path) -> None:
    saved = copy_savedmodel(tmp_path)
    shard = saved / "variables" / "variables.data-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[4] ^= 0x01  # the first weight (offset 0)
    shard.write_bytes(bytes(data))
    refused(saved, "fails its CRC-32C check", "VARIABLE_VALUE")


def test_compressed_table_is_refused(tmp_path: Path) -> None:
    index = tmp_path / "m.index"
    index.write_bytes(table([(b"", b"\x08\x01")], kind=1))
    refused(tmp_path / "m", "Snappy-compressed", config=TF / ENTRIES[0]["files"]["config"])


def test_huge_declared_shape_is_refused_before_allocating(tmp_path: Path) -> None:
    saved = copy_savedmodel(tmp_path)
    index = saved / "variables" / "variables.index"
    rewrite_entry(index, "variables/0/.ATTRIBUTES/VARIABLE_VALUE", shape=[1 << 40, 1 << 20])
    refused(saved, "needs 4611686018427387904 bytes", "variables/0/")


def test_tensor_past_the_end_of_its_shard(tmp_path: Path) -> None:
    saved = copy_savedmodel(tmp_path)
    index = saved / "variables" / "variables.index"
    rewrite_entry(index, "variables/1/.ATTRIBUTES/VARIABLE_VALUE", offset=1 << 40)
    refused(saved, "truncated or damaged")


def test_absurd_shard_count_is_refused(tmp_path: Path) -> None:
    saved = copy_savedmodel(tmp_path)
    rewrite_header(saved / "variables" / "variables.index", num_shards=1 << 30)
    refused(saved, "data shards")


def test_missing_data_shard(tmp_path: Path) -> None:
    saved = copy_savedmodel(tmp_path)
    (saved / "variables" / "variables.data-00000-of-00001").unlink()
    refused(saved, "missing")


def test_shard_symlinked_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    saved = copy_savedmodel(tmp_path)
    shard = saved / "variables" / "variables.data-00000-of-00001"
    outside = tmp_path / "elsewhere.bin"
    shutil.move(shard, outside)
    os.symlink(outside, shard)
    refused(saved, "points outside")


def test_variables_folder_symlinked_out_is_refused(tmp_path: Path) -> None:
    saved = copy_savedmodel(tmp_path)
    shutil.move(saved / "variables", tmp_path / "vars")
    os.symlink(tmp_path / "vars", saved / "variables")
    refused(saved, "points outside")


def test_checkpoint_file_naming_a_prefix_outside_is_refused(tmp_path: Path) -> None:
    entry = ENTRIES[0]
    folder = Path(shutil.copytree((TF / entry["files"]["checkpoint"]).parent, tmp_path / "ckpt"))
    (folder / "checkpoint").write_text('model_checkpoint_path: "../../etc/m"\n')
    refused(folder, "points outside", config=TF / entry["files"]["config"])


def test_checkpoint_file_symlinked_out_is_not_read(tmp_path: Path) -> None:
    entry = ENTRIES[0]
    folder = Path(shutil.copytree((TF / entry["files"]["checkpoint"]).parent, tmp_path / "ckpt"))
    (tmp_path / "elsewhere").write_text('model_checkpoint_path: "m"\n')
    (folder / "checkpoint").unlink()
    os.symlink(tmp_path / "elsewhere", folder / "checkpoint")
    refused(folder, "points outside", config=TF / entry["files"]["config"])


def test_data_shard_given_as_model_names_the_prefix() -> None:
    shard = next((TF / ENTRIES[0]["files"]["checkpoint"]).parent.glob("m.data-*"))
    refused(shard, "pass its prefix (m)")


@pytest.mark.parametrize(
    "member", ["variables/variables.index", "variables/variables.data-00000-of-00001", "keras_metadata.pb"]
)
def test_mutated_files_give_a_model_or_a_conversion_error(member: str, tmp_path: Path) -> None:
    """Bit flips and truncations anywhere: every outcome is a model or a one-line ConversionError."""
    source = copy_savedmodel(tmp_path, "masked_bidi", "tf-2.12")
    original = (source / member).read_bytes()
    rng = np.random.default_rng(len(member))
    outcomes = set()
    for case in range(40):
        data = bytearray(original)
        if case % 4 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        (source / member).write_bytes(bytes(data))
        try:
            converter.load(source)
            outcomes.add("loaded")
        except converter.ConversionError as error:
            assert "\n" not in str(error)
            outcomes.add(type(error).__name__)
    assert "BadModelFile" in outcomes


def test_crc32c_vectorised_pass_equals_the_bytewise_definition() -> None:
    from converter.keras.crc32c import _loop, crc32c, mask, unmask

    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C (RFC 3720)
    rng = np.random.default_rng(7)
    for size in (0, 1, 8191, 8192, 8193, 70_001, 300_000):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert crc32c(data) == _loop(0xFFFFFFFF, data) ^ 0xFFFFFFFF
        assert unmask(mask(crc32c(data))) == crc32c(data)
