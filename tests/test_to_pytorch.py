"""``to-pytorch``: the generated nn.Module source and its safetensors weights reproduce Keras (issue 16).

Every fixture goes through ``converter.to_pytorch`` (written atomically, verified by importing the file and
running it in torch), then the written file is imported again in a fresh namespace, loaded with
``load_state_dict(strict=True)`` from the written weights, and run on the inputs Keras was recorded on:
max abs error 1e-5 against Keras itself, masked fixtures (pre-padding, post-padding, holes) included.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import converter
from converter.activations import supported_activations
from converter.api import LoadedModel
from converter.errors import BadOptions, UnsupportedLayer
from converter.export.safetensors_file import read_safetensors, write_safetensors
from tests.fixture_index import ATOL, ROOT, max_abs_error, one_form_each
from tests.hostile_names import CODE, renamed

torch = pytest.importorskip("torch")

from converter.export.torch_module import build_torch_source  # noqa: E402
from converter.export.torch_run import load_module, run_module  # noqa: E402
from tests.test_npz_json import PYTORCH_REFUSED  # noqa: E402

FIXTURES = one_form_each()
MASKED = {fx.name for fx in FIXTURES if fx.entry["masked"]}


def fixture(name: str, keras: str = "3"):
    return next(fx for fx in FIXTURES if fx.name == name and fx.keras == keras)


def convert(fx, tmp_path: Path, **kwargs) -> tuple[Path, Path]:
    out = tmp_path / "model.py"
    report = converter.to_pytorch(fx.path, out, config=fx.config, oracle="numpy", **kwargs)
    assert report.passed and report.export_format == "pytorch" and report.outputs
    return out, out.with_suffix(".safetensors")


def run_recorded(module, fx, call: int = 1) -> list[np.ndarray]:
    names = [s.name for s in converter.load(fx.path, config=fx.config).ir.inputs]
    return run_module(module, names, dict(zip(names, fx.inputs(call), strict=True)))


def assert_keras(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32
        assert max_abs_error(g, w) <= ATOL


def without_torch_form(fx) -> list[str]:
    """The op classes of a fixture that have no PyTorch code yet (to-pytorch refuses them by name)."""
    from converter.layers.base import Op

    layers = [node.layer for node in converter.load(fx.path, config=fx.config).ir.nodes]
    inner = [d for layer in layers for d in getattr(layer, "directions", {}).values()]
    return sorted({type(op).__name__ for op in [*layers, *inner] if type(op).torch_forward is Op.torch_forward})


def refusing_layers(fx) -> list[str]:
    """The layers of a fixture whose op refuses the generated PyTorch code (``check_torch_source``: what
    torch cannot compute exactly, or, for ops whose torch modules hold the weights, the pytorch layout)."""
    refusing = []
    for node in converter.load(fx.path, config=fx.config).ir.nodes:
        try:
            node.layer.check_torch_source(node)
        except UnsupportedLayer:
            refusing.append(node.name)
    return refusing


REFUSED = {fx.name for fx in FIXTURES if refusing_layers(fx) or without_torch_form(fx)}


@pytest.mark.parametrize("fx", FIXTURES, ids=[fx.id for fx in FIXTURES])
def test_generated_module_reproduces_keras(fx, tmp_path) -> None:
    torch.set_num_threads(1)
    refusing, missing = refusing_layers(fx), without_torch_form(fx)
    if refusing or missing:  # refused before anything is written, naming the file, the layer and why
        with pytest.raises(UnsupportedLayer) as caught:
            converter.to_pytorch(fx.path, tmp_path / "model.py", config=fx.config, oracle="numpy")
        message = str(caught.value)
        assert message.startswith(f"{fx.path}: layer '")
        if refusing:
            assert any(f"layer '{name}'" in message for name in refusing) and "PyTorch" in message
        else:
            assert re.search(f"no PyTorch form for ({'|'.join(missing)}) yet", message)
        assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left
        return
    py, weights = convert(fx, tmp_path)
    module = load_module(py, weights, "Model")
    calls = (1, 2) if fx.entry["stateful"] else (1,)
    for call in calls:  # a stateful model's second call starts from the first one's final states
        assert_keras(run_recorded(module, fx, call), fx.outputs(call))
    if fx.entry["stateful"]:  # the states really mattered, and reset_states() forgets them
        module.reset_states()
        fresh = run_recorded(module, fx, 2)[0]
        assert max_abs_error(fresh, fx.outputs(2)[0]) > 1e-3


def test_every_fixture_runs_but_the_refused_ones() -> None:
    names = {fx.name for fx in FIXTURES}
    assert names >= PYTORCH_REFUSED
    # Code written out in forward computes more than torch's modules hold: fewer refusals than the layout's
    assert REFUSED < PYTORCH_REFUSED
    written_out = {"ln_rms", "bn_axis_list", "mha_options", "rnn_stacked_mixed", "rnn_peephole", "gru_reset_before"}
    assert written_out <= names - REFUSED
    # every masked fixture of the first recurrent suites is run (later layer families refuse some in the layout)
    assert len(MASKED - PYTORCH_REFUSED) >= 20
    required = {"bidi_none", "bidi_states", "go_backwards", "masked_backwards", "state_mask_full", "stateful"}
    assert required | {"torch_no_bias", "torch_stateful_bidi", "shared_lstm", "nested_masked"} <= names


# --- the source a user reads ------------------------------------------------------------------------------


def test_the_source_is_one_class_with_one_attribute_per_layer(tmp_path) -> None:
    py, weights = convert(fixture("stacked"), tmp_path)
    text = py.read_text()
    tree = ast.parse(text)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert [c.name for c in classes] == ["Model"]
    init = next(f for f in classes[0].body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    attributes = [t.attr for s in init.body if isinstance(s, ast.Assign) for t in s.targets]
    layers = [n.name for n in converter.load(fixture("stacked").path).ir.nodes if n.layer.weight_items()]
    assert attributes == layers == ["lstm", "lstm_1", "time_distributed"]
    assert "self.lstm = nn.LSTM(4, 8, batch_first=True)  # LSTM" in text
    assert "self.time_distributed = nn.Linear(6, 3)  # TimeDistributed" in text
    assert "# dropout (Dropout)" in text  # a weightless layer: lines of forward under its name
    assert max(len(line) for line in text.splitlines()) <= 120
    arrays, meta = read_safetensors(weights.open("rb"), str(weights))
    assert set(arrays) == set(load_module(py, weights, "Model").state_dict())  # strict both ways
    assert meta["source"] == "stacked.keras" and meta["format"] == "pt"


def test_the_readme_excerpt_is_what_the_generator_writes(tmp_path) -> None:
    excerpt = re.search(r"```py\n(class MaskedBidi.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert excerpt is not None
    converter.to_pytorch(fixture("masked_bidi").path, tmp_path / "masked_bidi.py", oracle="numpy")
    lines = iter((tmp_path / "masked_bidi.py").read_text().splitlines())
    for line in excerpt.group(1).splitlines():  # every line of the excerpt, in order
        assert any(line == written for written in lines), line


def test_nested_and_shared_layers_keep_their_names(tmp_path) -> None:
    py, _ = convert(fixture("nested_models"), tmp_path)
    init = py.read_text().split("def __init__")[1].split("def forward")[0]
    model = converter.load(fixture("nested_models").path).ir
    for node in model.nodes:
        if node.layer.weight_items() and not node.weights_of:
            assert f"self.{node.name.replace('/', '_')} = " in init
    (tmp_path / "shared").mkdir()
    py, _ = convert(fixture("shared_lstm"), tmp_path / "shared")
    text = py.read_text()
    shared = [n for n in converter.load(fixture("shared_lstm").path).ir.nodes if n.weights_of]
    assert shared
    for node in shared:  # a later call reuses the first call's module: one set of weights
        assert f"self.{node.weights_of.replace('/', '_')} = " in text
        assert f"self.{node.name.replace('/', '_')} = " not in text


@pytest.mark.parametrize("name", ["masked_bidi", "go_backwards", "bidi_states", "stateful"])
def test_keras_rules_are_written_out(name, tmp_path) -> None:
    text = convert(fixture(name), tmp_path)[0].read_text()
    expected = {
        "masked_bidi": ["_keras_masked_rnn(self.bidirectional, ", "zero_masked=True", "_seq[:, 0, 3:]"],
        "go_backwards": [".flip(1)  # go_backwards"],
        "bidi_states": ["_states[0][1]", "[:, 0, 4:]"],  # the backward h, the backward last output
        "stateful": ["def reset_states(self)", "self.states.get('lstm')"],
    }[name]
    for snippet in expected:
        assert snippet in text


# --- streaming states -------------------------------------------------------------------------------------


def test_stateful_module_streams_a_sequence_in_chunks(tmp_path) -> None:
    """Two chunks through the stateful module = the whole sequence through the NumPy runtime at once."""
    fx = fixture("stateful")
    module = load_module(*convert(fx, tmp_path), "Model")
    x = np.random.default_rng(3).normal(size=(3, 8, 3)).astype(np.float32)
    chunks = [run_module(module, ["input_layer"], {"input_layer": x[:, t : t + 4]})[0] for t in (0, 4)]
    loaded = converter.load(fx.path)
    want = [loaded.predict(x[:, t : t + 4]) for t in (0, 4)]  # the runtime carries states like Keras
    for got, expected in zip(chunks, want, strict=True):
        assert max_abs_error(got, expected) <= ATOL
    module.reset_states()
    loaded.reset_states()
    again = run_module(module, ["input_layer"], {"input_layer": x[:, 4:]})[0]
    assert max_abs_error(again, loaded.predict(x[:, 4:])) <= ATOL
    assert max_abs_error(again, chunks[1]) > 1e-3


def test_initial_states_from_inputs_and_fully_masked_samples(tmp_path) -> None:
    """A sample with every step masked keeps its initial states (Keras), not pack_padded's zeros."""
    fx = fixture("state_mask_full", "2")
    module = load_module(*convert(fx, tmp_path), "Model")
    assert_keras(run_recorded(module, fx), fx.outputs())


# --- activations: every one the NumPy runtime computes, each Keras version -------------------------------


@pytest.mark.parametrize("keras_major", [2, 3])
def test_every_dense_activation_matches_the_runtime(keras_major, tmp_path) -> None:
    """The Dense of the tutorial model with each activation: the torch expression against the NumPy
    runtime (itself proven against Keras); hard_sigmoid differs between the versions and both are right."""
    model = converter.load(fixture("tutorial").path).ir
    model = replace(model, keras_version="2.21.0" if keras_major == 2 else "3.15.1")
    dense = model.nodes[-1]
    x = (np.random.default_rng(0).normal(size=(4, 4, 3)) * 4).astype(np.float32)
    for name in supported_activations(keras_major):
        # Pre-activations up to about +-10 reach every clipped part (hard_sigmoid: 2.5 or 3); exp stays small.
        scale = np.float32(0.5 if name == "exponential" else 4)
        layer = replace(dense.layer, activation=name)
        if name in ("softmax", "log_softmax"):  # over more than one feature
            w = np.tile(layer.weights["W"], 3) * np.arange(1, 4, dtype=np.float32)
            layer = replace(layer, units=3, weights={"W": w * scale, "b": np.ones(3, np.float32)})
        else:
            layer = replace(layer, weights={"W": layer.weights["W"] * scale, "b": layer.weights["b"]})
        one = replace(model, nodes=(*model.nodes[:-1], replace(dense, layer=layer)))
        source = build_torch_source(one, "Model", "m.safetensors", "m")
        py, weights = tmp_path / f"{name}_{keras_major}.py", tmp_path / "m.safetensors"
        py.write_text(source.text)
        with weights.open("wb") as fh:
            write_safetensors(fh, [(t.key, t.array()) for t in source.tensors])
        got = run_module(load_module(py, weights, "Model"), ["input_layer"], {"input_layer": x})[0]
        want = LoadedModel(one, Path("m")).predict(x)
        assert max_abs_error(got, want) <= ATOL, name


# --- refusals and the command line ------------------------------------------------------------------------


def swapped_bidi(folder: Path) -> Path:
    """bidi_concat.keras with its Bidirectional's forward layer reading backwards (and the backward one
    forwards): a model Keras runs, which a torch bidirectional module (forward, then backward) cannot."""
    import json
    import zipfile

    source = ROOT / "fixtures/keras3/bidi_concat.keras"
    path = folder / "swapped.keras"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "Bidirectional":
                        layer["config"]["layer"]["config"]["go_backwards"] = True
                        if layer["config"].get("backward_layer"):
                            layer["config"]["backward_layer"]["config"]["go_backwards"] = False
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return path


def test_refusals_name_the_file_the_layer_and_why(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    path = swapped_bidi(tmp_path / "in")
    message = "layer 'bidirectional' (Bidirectional): its forward layer has go_backwards=True"
    with pytest.raises(UnsupportedLayer, match=re.escape(f"{path}: {message}")):
        converter.to_pytorch(path, tmp_path / "out/m.py", oracle="numpy")
    assert list((tmp_path / "out").iterdir()) == []
    # What torch's recurrent modules cannot compute is Keras' loop written out instead, not refused
    for name in ("gru_reset_before", "activations_lstm", "rnn_peephole"):
        assert name not in REFUSED
        (tmp_path / name).mkdir()
        assert "_keras_rnn(" in convert(fixture(name, "2"), tmp_path / name)[0].read_text()


def test_every_registered_layer_op_has_a_pytorch_form() -> None:
    """Every op the registry collects (every Keras layer lstm-convert reads) writes PyTorch code."""
    from converter.layers import OP_TYPES
    from converter.layers.base import Op

    assert OP_TYPES and [name for name, op in OP_TYPES.items() if op.torch_forward is Op.torch_forward] == []


def test_an_op_without_a_torch_form_is_refused_by_name() -> None:
    from converter.layers.base import Op, TorchContext

    class Novel(Op):
        pass

    node = converter.ir.Node("novel", "Novel", Novel(), ())
    with pytest.raises(UnsupportedLayer, match=r"layer 'novel' \(Novel\): no PyTorch form for Novel yet"):
        Novel().torch_forward(TorchContext(node, 3, "", [(4,)]), ["y"], ["x"], [None])


def test_cli_writes_both_files_and_refuses_cleanly(tmp_path) -> None:
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "converter", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # the checkout under test, whatever is installed
    )
    tutorial = ROOT / "fixtures/keras3/tutorial.keras"
    done = run("to-pytorch", str(tutorial), "-o", "tutorial.py", "--oracle", "numpy")
    assert done.returncode == 0, done.stderr
    assert "wrote tutorial.py: verification passed" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tutorial.py", "tutorial.safetensors"]
    before = (tmp_path / "tutorial.py").read_bytes()
    again = run("to-pytorch", str(tutorial), "-o", "tutorial.py", "--oracle", "numpy")
    assert again.returncode == 2 and "exists" in again.stderr
    swapped = swapped_bidi(tmp_path.parent)
    refused = run("to-pytorch", str(swapped), "-o", "tutorial.py", "--force", "--oracle", "numpy")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "go_backwards=True" in refused.stderr
    assert (tmp_path / "tutorial.py").read_bytes() == before  # the existing output is untouched
    wrong = run("to-pytorch", str(tutorial), "-o", "tutorial.onnx")
    assert wrong.returncode == 2 and "name it tutorial.py" in wrong.stderr
    onnx = run("to-onnx", str(tutorial), "-o", "tutorial.py")
    assert onnx.returncode == 2 and "name it tutorial.onnx" in onnx.stderr


def test_the_conversion_imports_no_torch(tmp_path) -> None:
    code = (
        "import sys, converter\n"
        f"converter.to_pytorch({str(ROOT / 'fixtures/keras3/masked_bidi.keras')!r}, {str(tmp_path / 'm.py')!r},"
        " verify=False)\n"
        "assert 'torch' not in sys.modules and 'safetensors' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.safetensors").stat().st_size > 0


def test_verification_without_torch_says_what_to_do(tmp_path, monkeypatch) -> None:
    import converter.export.torch_run as torch_run

    monkeypatch.setattr(torch_run, "torch_available", lambda: False)
    with pytest.raises(BadOptions, match=r'needs PyTorch .*pip install "lstm-convert\[pytorch\]", or pass --no-verify'):
        converter.to_pytorch(fixture("tutorial").path, tmp_path / "m.py")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_without_torch_names_the_pytorch_extra(tmp_path) -> None:
    """torch blocked in a fresh interpreter (sys.modules entry None: not importable, not found): the
    command says which extra to install, the extra exists in pyproject.toml, and nothing is written."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("torch") for req in extras["pytorch"])
    code = (
        "import runpy, sys\n"
        "sys.modules['torch'] = None\n"
        f"sys.argv = ['lstm-convert', 'to-pytorch', {str(ROOT / 'fixtures/keras3/tutorial.keras')!r}, '-o', 'm.py']\n"
        "runpy.run_module('converter', run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert 'pip install "lstm-convert[pytorch]"' in done.stderr and done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


# --- the weights file --------------------------------------------------------------------------------------


def test_the_generated_load_uses_safetensors(tmp_path, monkeypatch) -> None:
    py, _ = convert(fixture("bidi_concat"), tmp_path)
    loaded = load_module(py, py.with_suffix(".safetensors"), "Model")
    assert type(loaded).__module__ not in sys.modules  # imported in a fresh namespace, not kept
    monkeypatch.setitem(sys.modules, "safetensors", None)  # not installed: a clear message
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    code = compile(py.read_text(), str(py), "exec")
    scope: dict = {"__file__": str(py), "__name__": "generated"}
    exec(code, scope)
    with pytest.raises(ImportError, match="pip install safetensors"):
        scope["load"]()


def test_the_safetensors_package_reads_the_weights(tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    fx = fixture("masked_bidi")
    py, weights = convert(fx, tmp_path)
    ours, _ = read_safetensors(weights.open("rb"), str(weights))
    theirs = safetensors_torch.load_file(str(weights))
    assert sorted(theirs) == sorted(ours)
    for key, tensor in theirs.items():
        assert np.array_equal(tensor.numpy(), ours[key])
    scope: dict = {"__file__": str(py), "__name__": "generated"}
    exec(compile(py.read_text(), str(py), "exec"), scope)
    module = scope["load"]()  # the user's path: load() next to the file
    assert_keras(run_recorded(module, fx), fx.outputs())


@pytest.mark.parametrize(
    "damage",
    [b"", b"\xff" * 8, (10).to_bytes(8, "little") + b"{not json}", (2).to_bytes(8, "little") + b"{}extra"],
)
def test_a_damaged_weights_file_is_refused(damage, tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(damage)
    with pytest.raises(converter.BadModelFile, match="not a valid safetensors file"):
        read_safetensors(path.open("rb"), str(path))


def test_names_from_the_model_file_never_become_code(tmp_path) -> None:
    """Layer, output and model names, the Keras version and the file names go into comments, docstrings and a
    string literal of the module: one that tries to end them (a newline, triple quotes, a backslash) stays
    text, importing the module runs nothing of it, and the module still computes the model."""

    fx = fixture("masked_lstm")
    model = converter.load(fx.path).ir
    evil = CODE
    model = renamed(model, evil, keras_version=evil)
    weights = tmp_path / f'm"{evil[:2]}.safetensors'
    source = build_torch_source(model, "M", weights.name, f"m{evil}.keras")
    tree = ast.parse(source.text)  # one module; the names left no statement of their own
    assert not any(isinstance(n, ast.Name) and n.id == "__import__" for n in ast.walk(tree))
    (tmp_path / "m.py").write_text(source.text)
    with weights.open("wb") as fh:
        write_safetensors(fh, [(t.key, t.array()) for t in source.tensors])
    module = load_module(tmp_path / "m.py", weights, "M")
    assert_keras(run_recorded(module, fx), fx.outputs())
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
