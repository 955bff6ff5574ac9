"""Memory and time bombs on the reading side: refused from declared sizes, before anything is allocated.

Each hostile file is a few KB to a few MB on disk. Each is run through the CLI in a child process with
its address space capped, which must exit 2 with a one-line error in under 10 s and under 1 GB of
peak RSS. Valid but unusual models (a 1,500-layer chain) still convert.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import converter
from converter.cli import app
from converter.errors import BadInputs, BadModelFile, BadOptions
from converter.verification import sample_inputs
from tests.fixture_index import FIXTURES, ROOT
from tests.measured_child import run_measured

K2, K3 = FIXTURES / "keras2", FIXTURES / "keras3"


def _cap_memory() -> None:  # a regression fails the test instead of taking the machine down
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def bounded(*args: str) -> str:
    """Run the CLI in a child: exit 2, one error line, < 10 s, < 1 GB peak RSS. Returns the error line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = run_measured([sys.executable, "-m", "converter", *args], env=env, preexec=_cap_memory)
    lines = run.error_lines
    assert run.code == 2, run.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-3000:]
    assert run.seconds < 10, f"{run.seconds:.1f} s"
    assert run.rss_mb < 1000, f"{run.rss_mb / 1e3:.2f} GB"
    return lines[0]


def copy_h5(tmp_path: Path, source: Path, edit: Callable[[h5py.File], None]) -> Path:
    path = tmp_path / source.name
    shutil.copy(source, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _set_config(f: h5py.File, edit: Callable[[dict], None]) -> None:
    config = json.loads(f.attrs["model_config"])
    edit(config)
    f.attrs["model_config"] = json.dumps(config)


def _zeros_dataset(f: h5py.File, where: str, shape: tuple[int, ...]) -> None:
    """A gzip-compressed dataset declaring ``shape``, one chunk of zeros written: a few KB on disk."""
    del f[where]
    chunks = tuple(min(d, 1024) for d in shape)
    ds = f.create_dataset(where, shape, "<f4", chunks=chunks, compression="gzip")
    ds[tuple(slice(0, c) for c in chunks)] = 0.0


def keras_with_config(
    tmp_path: Path, source: Path, edit: Callable[[dict], None], compress: int = zipfile.ZIP_DEFLATED
) -> Path:
    with zipfile.ZipFile(source) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w", compress) as z:
        for member, data in members.items():
            z.writestr(member, data)
    return path


LSTM = "model_weights/lstm/lstm/lstm_cell"


# --- weights that declare far more than they hold ------------------------------------------------------


def test_huge_declared_weights_matching_the_config(tmp_path: Path) -> None:
    """LSTM(60000): 53.6 GiB of weights declared in a file of a few KB."""

    def edit(f: h5py.File) -> None:
        _set_config(f, lambda c: c["config"]["layers"][1]["config"].update(units=60000))
        _zeros_dataset(f, f"{LSTM}/kernel:0", (3, 240000))
        _zeros_dataset(f, f"{LSTM}/recurrent_kernel:0", (60000, 240000))
        _zeros_dataset(f, f"{LSTM}/bias:0", (240000,))
        _zeros_dataset(f, "model_weights/dense/dense/kernel:0", (60000, 1))

    path = copy_h5(tmp_path, K2 / "tutorial.h5", edit)
    assert path.stat().st_size < 1_000_000
    line = bounded("to-onnx", str(path), "-o", str(tmp_path / "o.onnx"))
    assert "needs 53.6 GiB of weights" in line and "--max-weights-gb 54" in line and str(path) in line
    assert not (tmp_path / "o.onnx").exists()


def test_huge_declared_weights_not_matching_the_config(tmp_path: Path) -> None:
    path = copy_h5(tmp_path, K2 / "tutorial.h5", lambda f: _zeros_dataset(f, f"{LSTM}/kernel:0", (100_000, 100_000)))
    assert "needs 37.3 GiB" in bounded("inspect", str(path))


def test_huge_weights_in_a_keras_archive(tmp_path: Path) -> None:
    """The same inside a .keras: the weights member is small, the datasets it declares are not."""
    with zipfile.ZipFile(K3 / "tutorial.keras") as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    inner = tmp_path / "inner.h5"
    inner.write_bytes(members["model.weights.h5"])
    with h5py.File(inner, "r+") as f:
        _zeros_dataset(f, "layers/lstm/cell/vars/1", (200_000, 100_000))
    members["model.weights.h5"] = inner.read_bytes()
    path = tmp_path / "t.keras"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    assert "needs 74.5 GiB" in bounded("to-npz", str(path), "-o", str(tmp_path / "o.npz"))


def test_embedding_with_input_dim_10_to_the_12(tmp_path: Path) -> None:
    def edit(f: h5py.File) -> None:
        _set_config(f, lambda c: c["config"]["layers"][1]["config"].update(input_dim=10**12))
        _zeros_dataset(f, "model_weights/embedding/embedding/embeddings:0", (10**12, 6))

    path = copy_h5(tmp_path, K2 / "embedding.h5", edit)
    assert "GiB of weights" in bounded("to-onnx", str(path), "-o", str(tmp_path / "o.onnx"))
    # the config alone says 10**12, the table does not: refused as not matching, nothing allocated
    path = copy_h5(
        tmp_path,
        K2 / "embedding.h5",
        lambda f: _set_config(f, lambda c: c["config"]["layers"][1]["config"].update(input_dim=10**12)),
    )
    assert "(1000000000000, 6)" in bounded("inspect", str(path))


def test_max_weights_gb_option(tmp_path: Path) -> None:
    """The limit is the user's: lower it and a real model is refused, raise it and a big one is allowed."""
    tutorial = 4 * (3 * 20 + 5 * 20 + 20 + 5 * 1 + 1)  # LSTM(5) on 3 features, Dense(1): float32 bytes
    for path in (K3 / "tutorial.keras", K2 / "tutorial.h5", K3 / "tutorial.weights.h5"):
        config = K3 / "tutorial.json" if path.name.endswith(".weights.h5") else None
        with pytest.raises(BadModelFile) as caught:
            converter.load(path, config, max_weights_gb=1e-7)
        assert f"needs {tutorial / 2**30:.3g} GiB" in str(caught.value)
        assert "pass --max-weights-gb 1 to allow it" in str(caught.value)
    result = CliRunner().invoke(app, ["inspect", str(K2 / "tutorial.h5"), "--max-weights-gb", "0.0000001"])
    assert result.exit_code == 2 and "more than the 1e-07 GiB allowed" in result.output
    out = tmp_path / "t.onnx"
    args = ["to-onnx", str(K3 / "tutorial.keras"), "-o", str(out), "--oracle", "numpy", "--max-weights-gb", "1e-7"]
    assert CliRunner().invoke(app, args).exit_code == 2 and not out.exists()
    assert CliRunner().invoke(app, args[:-2]).exit_code == 0 and out.exists()
    for bad in (0, -1):
        with pytest.raises(BadOptions, match="--max-weights-gb"):
            converter.load(K3 / "tutorial.keras", max_weights_gb=bad)
    path = copy_h5(tmp_path, K2 / "tutorial.h5", lambda f: _zeros_dataset(f, f"{LSTM}/kernel:0", (3, 2**20)))
    declared = (3 * 2**20 + 5 * 20 + 20 + 5 * 1 + 1) * 4  # the big kernel and the other four arrays, float32
    with pytest.raises(BadModelFile, match=f"needs {declared / 2**30:.3g} GiB"):
        converter.load(path, max_weights_gb=0.01)
    with pytest.raises(BadModelFile, match=r"shape \(3, 1048576\)"):  # allowed, read, refused as misshaped
        converter.load(path, max_weights_gb=0.02)


# --- the .keras weights member lies about its size --------------------------------------------------------


def _lying_archive(tmp_path: Path, compress: int, claimed: int) -> Path:
    """tutorial.keras with the central directory's size of model.weights.h5 set to ``claimed``."""
    path = tmp_path / "lying.keras"
    with zipfile.ZipFile(K3 / "tutorial.keras") as zin, zipfile.ZipFile(path, "w", compress) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    data = bytearray(path.read_bytes())
    name = b"model.weights.h5"
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46 : entry + 46 + len(name)] != name:
        entry = data.index(b"PK\x01\x02", entry + 4)
    data[entry + 24 : entry + 28] = claimed.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_weights_member_claims_4_gb(tmp_path: Path, compress: int) -> None:
    assert "zip bomb" in bounded("inspect", str(_lying_archive(tmp_path, compress, 0xFFFFFFF0)))


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_weights_member_claims_too_little(tmp_path: Path, compress: int) -> None:
    assert "damaged or truncated" in bounded("inspect", str(_lying_archive(tmp_path, compress, 100)))


# --- declared input shapes ---------------------------------------------------------------------------------


def _input_shape(shape: list) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        config["config"]["layers"][0]["config"]["batch_shape"] = shape

    return edit


@pytest.mark.parametrize("shape", [[None, 10**9, 3], [10**9, 4, 3]])
def test_huge_time_steps_or_batch(tmp_path: Path, shape: list) -> None:
    """The model itself is fine; verification refuses to make 10**9-step sample inputs."""
    path = keras_with_config(tmp_path, K3 / "tutorial.keras", _input_shape(shape))
    model = converter.load(path)
    with pytest.raises(BadInputs, match="--inputs"):
        sample_inputs(model.ir)
    line = bounded("to-onnx", str(path), "-o", str(tmp_path / "o.onnx"), "--oracle", "numpy")
    assert "GiB of sample inputs" in line and "--inputs" in line


@pytest.mark.parametrize("shape", [[None, -4, 3], [None, 0, 3], [None, 4, 0], [0, 4, 3], [None, True, 3]])
def test_negative_zero_and_odd_dimensions(tmp_path: Path, shape: list) -> None:
    path = keras_with_config(tmp_path, K3 / "tutorial.keras", _input_shape(shape))
    with pytest.raises(BadModelFile, match=r"dimension|input shape"):
        converter.load(path)


# --- configs built to exhaust the parser ----------------------------------------------------------------------


def test_config_nested_100000_levels(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"class_name": "Sequential", "config": {"layers": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    weights = shutil.copy(K3 / "tutorial.weights.h5", tmp_path / "t.weights.h5")
    line = bounded("inspect", str(weights), "--config", str(deep))
    assert "nests 100002 levels deep" in line
    h5 = copy_h5(tmp_path, K2 / "tutorial.h5", lambda f: f.attrs.__setitem__("model_config", "[" * 100_000))
    assert "model_config attribute nests 100000 levels" in bounded("inspect", str(h5))


def test_config_with_a_million_layers(tmp_path: Path) -> None:
    with zipfile.ZipFile(K3 / "tutorial.keras") as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    extra = ",".join(f'{{"class_name": "Dropout", "config": {{"name": "d{i}"}}}}' for i in range(10**6))
    members["config.json"] = members["config.json"].replace(b'"layers": [', f'"layers": [{extra},'.encode(), 1)
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for member, data in members.items():
            z.writestr(member, data)
    assert path.stat().st_size < 8_000_000
    assert "refusing it as damaged or crafted" in bounded("inspect", str(path))


def test_config_with_more_layers_than_the_limit(tmp_path: Path) -> None:
    from converter.keras.limits import MAX_LAYERS

    def edit(config: dict) -> None:
        config["config"]["layers"] += [{"class_name": "Dropout", "config": {}} for _ in range(MAX_LAYERS)]

    with pytest.raises(BadModelFile, match=f"more than {MAX_LAYERS} layers"):
        converter.load(keras_with_config(tmp_path, K3 / "tutorial.keras", edit, zipfile.ZIP_STORED))


def test_layer_name_of_10_mb(tmp_path: Path) -> None:
    name = np.random.default_rng(0).choice(np.frombuffer(b"ab", np.uint8), 10 * 2**20).tobytes().decode()

    def edit(config: dict) -> None:
        config["config"]["layers"][1]["config"]["name"] = name

    path = keras_with_config(tmp_path, K3 / "tutorial.keras", edit)
    assert path.stat().st_size < 3_000_000
    line = bounded("inspect", str(path))
    assert "10485760 characters long" in line and len(line) < 400


# --- valid but unusual: must convert --------------------------------------------------------------------------


def test_functional_chain_of_1500_layers_converts(tmp_path: Path) -> None:
    """A Keras 2 functional model of 1,500 Dense layers (written here with h5py), checked against a
    NumPy evaluation of the same chain; the topology is sorted without recursion."""
    rng = np.random.default_rng(0)
    layers: list[dict] = [
        {
            "class_name": "InputLayer",
            "name": "x",
            "config": {"batch_input_shape": [None, 3], "name": "x"},
            "inbound_nodes": [],
        }
    ]
    weights = []
    for i in range(1500):
        name, source = f"d{i}", layers[-1]["name"]
        config = {"name": name, "units": 3, "activation": "tanh", "use_bias": True}
        layers.append({"class_name": "Dense", "name": name, "config": config, "inbound_nodes": [[[source, 0, 0, {}]]]})
        weights.append((rng.normal(size=(3, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)))
    model_config = {
        "class_name": "Functional",
        "config": {
            "name": "chain",
            "layers": layers,
            "input_layers": [["x", 0, 0]],
            "output_layers": [["d1499", 0, 0]],
        },
    }
    path = tmp_path / "chain.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(model_config)
        f.attrs["keras_version"] = "2.21.0"
        root = f.create_group("model_weights")
        for i, (kernel, bias) in enumerate(weights):
            group = root.create_group(f"d{i}")
            group.attrs["weight_names"] = [f"d{i}/kernel:0".encode(), f"d{i}/bias:0".encode()]
            group.create_dataset(f"d{i}/kernel:0", data=kernel)
            group.create_dataset(f"d{i}/bias:0", data=bias)
    x = rng.normal(size=(2, 3)).astype(np.float32)
    want = x.astype(np.float64)
    for kernel, bias in weights:
        want = np.tanh(want @ kernel + bias)
    got = converter.load(path).predict(x)
    assert np.max(np.abs(got - want)) < 1e-5
    report = converter.to_onnx(path, tmp_path / "chain.onnx", oracle="numpy")
    assert report.passed and report.layers == 1500


def _reference_depth(value: object) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "]]]", "b": [[["x"]]]}',
        '["\\"[[[[", "\\\\", [[]]]',
        '[["\\\\\\"]]]]]]"]]',
        '{"k\\\\": {"\\\\\\\\": ["}}}}", {}]}}',
        '"just a string [["',
        "[]",
    ],
)
def test_json_pre_scan_depth_ignores_brackets_in_strings(text: str) -> None:
    from converter.keras.limits import json_size

    depth, values = json_size(text.encode())
    assert depth == _reference_depth(json.loads(text))
    assert values >= 1
