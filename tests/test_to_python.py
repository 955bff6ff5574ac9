"""``to-python``: the standalone NumPy script reproduces Keras (issue 14).

Every fixture goes through ``converter.to_python``; the written script is then run in a fresh Python
process that can import only NumPy and the standard library (``converter.export.python_run``), on the
inputs Keras was recorded on: max abs error 1e-5 against Keras itself, a stateful model's second call
continuing from the first one's states. A fixture with a layer that has no script form yet must be
refused by name, with nothing written; which fixtures those are is derived from the ops, not listed.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import converter
from converter import ir
from converter.errors import UnsupportedLayer, VerificationFailed
from converter.export.python_run import run_script
from converter.export.python_script import build_python_script, npz_bytes
from converter.layers.base import Op
from tests.fixture_index import ATOL, ROOT, max_abs_error, one_form_each
from tests.hostile_names import CODE, renamed

FIXTURES = one_form_each()


def fixture(name: str, keras: str = "3"):
    return next(fx for fx in FIXTURES if fx.name == name and fx.keras == keras)


def _ops(op: Op) -> list[Op]:
    """An op with the ops inside it (recurrent directions and cells, a TimeDistributed's layer)."""
    inner = [d for d in getattr(op, "directions", {}).values() if d is not op]
    if getattr(op, "inner", None) is not None:
        inner.append(op.inner)  # type: ignore[attr-defined]
    return [op, *(o for i in inner for o in _ops(i))]


@functools.cache
def _missing(path: Path, config: Path | None) -> tuple[str, ...]:
    layers = [op for node in converter.load(path, config=config).ir.nodes for op in _ops(node.layer)]
    return tuple(sorted({type(op).__name__ for op in layers if type(op).python_code is Op.python_code}))


def without_python_form(fx) -> list[str]:
    """The op classes of a fixture that have no standalone-Python code yet (to-python refuses them by name)."""
    return list(_missing(fx.path, fx.config))


def input_names(fx) -> list[str]:
    return [s.name for s in converter.load(fx.path, config=fx.config).ir.inputs]


def recorded_calls(fx) -> list[dict[str, np.ndarray]]:
    calls = (1, 2) if fx.entry["stateful"] else (1,)
    return [dict(zip(input_names(fx), fx.inputs(call), strict=True)) for call in calls]


def assert_keras(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32
        assert max_abs_error(g, w) <= ATOL


def run_fixtures() -> list:
    return [fx for fx in FIXTURES if not without_python_form(fx)]


@pytest.mark.parametrize("fx", FIXTURES, ids=[fx.id for fx in FIXTURES])
def test_the_script_reproduces_keras_with_numpy_alone(fx, tmp_path) -> None:
    out = tmp_path / "model.py"
    missing = without_python_form(fx)
    if missing:  # a layer whose script form is not written yet: refused by name, nothing written
        with pytest.raises(UnsupportedLayer, match=f"no standalone-Python form for ({'|'.join(missing)}) yet") as e:
            converter.to_python(fx.path, out, config=fx.config, verify=False)
        assert str(e.value).startswith(str(fx.path)) and "layer '" in str(e.value)
        assert list(tmp_path.iterdir()) == []
        return
    converter.to_python(fx.path, out, config=fx.config, verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "model.py"]
    results = run_script(out, input_names(fx), recorded_calls(fx))
    for call, got in enumerate(results, start=1):  # a stateful model's second call continues the first
        assert_keras(got, fx.outputs(call))


def test_the_fixtures_that_matter_all_run() -> None:
    ran = {fx.name for fx in run_fixtures()}
    required = {"tutorial", "masked_lstm", "masked_bidi", "masked_backwards", "go_backwards", "stateful"}
    required |= {"bidi_concat", "bidi_sum", "bidi_ave", "bidi_mul", "bidi_none", "bidi_states", "bidi_state_mask"}
    required |= {"gru_reset_after", "gru_reset_before", "simple_rnn", "initial_state", "rnn_stacked"}
    required |= {"rnn_peephole", "rnn_stateful", "torch_stateful_bidi", "shared_lstm", "nested_masked", "embedding"}
    required |= {"merges_masked", "td_masked", "masked_pooling", "lstm_autoencoder", "multi_io", "unroll"}
    required |= {"conv1d_lstm", "td_cnn_lstm", "mha_causal_masked", "attn_bilstm_self", "bn_masked", "ln_options"}
    assert required <= ran
    assert len(run_fixtures()) >= 245  # of 249 (all of them when written): conv, attention, normalization too


def test_a_stateful_script_carries_states_in_the_dict(tmp_path) -> None:
    fx = fixture("stateful")
    out = tmp_path / "model.py"
    converter.to_python(fx.path, out, verify=False)
    _, second = recorded_calls(fx)
    (fresh,) = run_script(out, input_names(fx), [second])  # a new dict: zeros, as after reset_states()
    assert max_abs_error(fresh[0], fx.outputs(2)[0]) > 1e-3
    assert "states: a dict carrying the stateful layers' states" in out.read_text()


# --- the source a user reads ------------------------------------------------------------------------------


def test_gates_are_written_as_the_tutorials_write_them(tmp_path) -> None:
    texts = {}
    for name in ("tutorial", "gru_reset_after", "gru_reset_before", "simple_rnn", "masked_lstm", "go_backwards"):
        converter.to_python(fixture(name).path, tmp_path / f"{name}.py", verify=False)
        texts[name] = (tmp_path / f"{name}.py").read_text()
    lstm = [
        "def lstm(x, h, c):",
        "        i = sigmoid(x_t @ W_i + h @ U_i + b_i)  # input gate",
        "        f = sigmoid(x_t @ W_f + h @ U_f + b_f)  # forget gate",
        "        c_tilde = tanh(x_t @ W_c + h @ U_c + b_c)  # candidate cell state",
        "        o = sigmoid(x_t @ W_o + h @ U_o + b_o)  # output gate",
        "        c = f * c + i * c_tilde",
        "        h = o * tanh(c)",
        "    for t in range(steps):",
    ]
    for line in lstm:
        assert line in texts["tutorial"].splitlines(), line
    after = "        h_tilde = tanh(x_t @ W_h + b_h + r * (h @ U_h + rb_h))  # candidate (reset_after=True)"
    before = "        h_tilde = tanh(x_t @ W_h + (r * h) @ U_h + b_h)  # candidate (reset_after=False)"
    assert after in texts["gru_reset_after"] and "rb_" not in texts["gru_reset_before"]
    assert before in texts["gru_reset_before"]
    assert "        h = z * h + (1 - z) * h_tilde" in texts["gru_reset_after"]
    assert "        h = tanh(x_t @ W + h @ U + b)" in texts["simple_rnn"]
    assert "keep = mask[:, t, None]" in texts["masked_lstm"] and "keep = mask" not in texts["tutorial"]
    assert "for t in reversed(range(steps)):" in texts["go_backwards"]
    for text in texts.values():
        assert max(len(line) for line in text.splitlines()) <= 120


def test_the_script_imports_nothing_but_numpy_and_the_stdlib(tmp_path) -> None:
    for fx in run_fixtures()[::7]:
        out = tmp_path / f"{fx.name}_{fx.keras}.py"
        converter.to_python(fx.path, out, config=fx.config, verify=False, force=True)
        tree = ast.parse(out.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert {n.partition(".")[0] for n in names} <= {"numpy", *sys.stdlib_module_names}, fx.id


def test_the_runner_refuses_every_import_but_numpy_and_the_stdlib(tmp_path) -> None:
    """Verification proves the script standalone: its process cannot import converter (nor Keras, torch)."""
    assert importlib.util.find_spec("converter") is not None  # importable here, not in the child
    for module in ("converter", "keras", "torch"):
        script = tmp_path / f"uses_{module}.py"
        script.write_text(f"import {module}\n\ndef predict(x, states=None):\n    return x\n")
        with pytest.raises(VerificationFailed, match=f"imported '{module}'; it may import only numpy"):
            run_script(script, ["x"], [{"x": np.zeros((1, 2), np.float32)}])


def test_the_script_runs_from_any_folder_as_a_user_runs_it(tmp_path) -> None:
    fx = fixture("masked_bidi")
    converter.to_python(fx.path, tmp_path / "masked_bidi.py", verify=False)
    code = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from masked_bidi import predict;"
        "x = np.load(sys.argv[2])['input/0']; np.save(sys.argv[3], predict(x))"
    )
    io = ROOT / "fixtures" / fx.entry["io"]
    done = subprocess.run([sys.executable, "-I", "-c", code, str(tmp_path), str(io), str(tmp_path / "y.npy")], cwd="/")
    assert done.returncode == 0
    assert max_abs_error(np.load(tmp_path / "y.npy"), fx.outputs(1)[0]) <= ATOL


# --- --embed ----------------------------------------------------------------------------------------------


def test_embed_puts_the_exact_weights_in_the_script(tmp_path) -> None:
    fx = fixture("bidi_states")
    out = tmp_path / "model.py"
    report = converter.to_python(fx.path, out, embed=True, oracle="numpy")
    assert report.passed and report.export_format == "python"
    assert [p.name for p in tmp_path.iterdir()] == ["model.py"]  # no .npz
    text = out.read_text()
    assert "np.load(io.BytesIO(base64.b64decode(_NPZ)), allow_pickle=False)" in text and '.npz")' not in text
    spec = importlib.util.spec_from_file_location("embedded_model", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    model = converter.load(fx.path).ir
    want = {f"{n.name}/{k}": a for n in model.nodes for k, a in n.layer.weight_items()}
    assert set(module.WEIGHTS) == set(want)
    for key, array in want.items():  # the float32 bits, not a rounded copy
        assert module.WEIGHTS[key].dtype == np.float32
        assert module.WEIGHTS[key].tobytes() == np.ascontiguousarray(array, np.float32).tobytes()
    (got,) = run_script(out, input_names(fx), recorded_calls(fx))
    assert_keras(got, fx.outputs(1))


def test_weights_beside_the_script_are_read_without_pickle(tmp_path) -> None:
    fx = fixture("tutorial")
    converter.to_python(fx.path, tmp_path / "m.py", verify=False)
    text = (tmp_path / "m.py").read_text()
    assert 'np.load(Path(__file__).with_name("m.npz"), allow_pickle=False)' in text
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        assert all(data[k].dtype == np.float32 for k in data.files) and "lstm/W_i" in data.files


# --- the export's contract: verified, atomic, never clobbering ---------------------------------------------


def test_verification_against_keras_runs_the_written_script(tmp_path) -> None:
    report = converter.to_python(fixture("masked_bidi").path, tmp_path / "m.py")
    assert report.passed and report.oracle.startswith("keras") and report.outputs
    assert all(c.max_abs_error <= ATOL for c in report.outputs)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "converter", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def conv_without_form(monkeypatch):
    """Conv as a layer whose script form is not written: the base default, as a new layer family gets it."""
    from converter.layers.conv import Conv

    monkeypatch.setattr(Conv, "python_code", Op.python_code)
    return fixture("conv1d_lstm")


def test_a_layer_without_a_form_is_refused_in_one_line(conv_without_form, tmp_path) -> None:
    from typer.testing import CliRunner

    from converter.cli import app

    path = conv_without_form.path
    result = CliRunner().invoke(app, ["to-python", str(path), "-o", str(tmp_path / "m.py")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1
    assert line == (
        f"error: {path}: layer 'conv1d' (Conv1D): no standalone-Python form for Conv yet; "
        "export this model with to-onnx or to-npz instead."
    )
    assert list(tmp_path.iterdir()) == []


def test_an_activation_without_a_form_is_refused_by_name(monkeypatch, tmp_path) -> None:
    from converter.export import python_activations

    monkeypatch.delitem(python_activations._SOURCES, "tanh")  # as an activation not written yet
    fx = fixture("tutorial")
    with pytest.raises(UnsupportedLayer, match=r"layer 'lstm' \(LSTM\): activation 'tanh' has no standalone-Python"):
        converter.to_python(fx.path, tmp_path / "m.py", verify=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_reports_and_never_clobbers(tmp_path) -> None:
    path = str(fixture("tutorial").path)
    done = cli("to-python", path, "-o", "m.py", "--json", "--oracle", "numpy", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"export_format": "python"' in done.stdout and '"passed": true' in done.stdout
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"m.py", "m.npz"}
    again = cli("to-python", path, "-o", "m.py", cwd=tmp_path)
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    (tmp_path / "m.py").unlink()  # the weights file alone blocks as well
    assert cli("to-python", path, "-o", "m.py", cwd=tmp_path).returncode == 2
    assert not (tmp_path / "m.py").exists()
    forced = cli("to-python", path, "-o", "m.py", "--force", "--oracle", "numpy", cwd=tmp_path)
    assert forced.returncode == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "m.py"]


def test_a_refused_model_leaves_existing_outputs_untouched(conv_without_form, tmp_path) -> None:
    (tmp_path / "m.py").write_text("mine")
    (tmp_path / "m.npz").write_bytes(b"mine too")
    with pytest.raises(UnsupportedLayer):
        converter.to_python(conv_without_form.path, tmp_path / "m.py", force=True, verify=False)
    assert (tmp_path / "m.py").read_text() == "mine" and (tmp_path / "m.npz").read_bytes() == b"mine too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "m.py"]  # no temporary left


def test_the_output_must_be_named_py(tmp_path) -> None:
    from converter.errors import BadOptions

    with pytest.raises(BadOptions, match=r"is Python source; name it m\.py"):
        converter.to_python(fixture("tutorial").path, tmp_path / "m.txt")
    assert list(tmp_path.iterdir()) == []


def test_the_readme_excerpt_is_what_the_generator_writes(tmp_path) -> None:
    excerpt = re.search(r"```py\n(def lstm\(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert excerpt is not None
    converter.to_python(fixture("tutorial").path, tmp_path / "tutorial.py", verify=False)
    lines = iter((tmp_path / "tutorial.py").read_text().splitlines())
    for line in excerpt.group(1).splitlines():  # every line of the excerpt, in order
        assert any(line == written for written in lines), line


def test_layers_named_like_the_scripts_helpers_keep_their_helpers(tmp_path) -> None:
    """Layers called ``conv``, ``sigmoid`` and ``windows`` get functions of their own, not the helpers' names."""
    fx = fixture("conv1d_lstm")
    model = converter.load(fx.path).ir
    renamed = dict(zip([n.name for n in model.nodes], ["conv", "sigmoid", "windows"], strict=True))

    def ref(r: ir.TensorRef) -> ir.TensorRef:
        return ir.TensorRef(renamed.get(r.node, r.node), r.index)

    nodes = tuple(replace(n, name=renamed[n.name], inputs=tuple(ref(r) for r in n.inputs)) for n in model.nodes)
    model = replace(model, nodes=nodes, outputs=tuple(ref(r) for r in model.outputs))
    script = build_python_script(model, "m.npz", "m")
    (tmp_path / "m.py").write_text(script.text)
    (tmp_path / "m.npz").write_bytes(npz_bytes(script.weights))
    defined = [line.split("(")[0][4:] for line in script.text.splitlines() if line.startswith("def ")]
    assert len(defined) == len(set(defined))
    assert {"conv", "windows", "sigmoid", "conv_1", "windows_1", "sigmoid_1"} <= set(defined)
    (got,) = run_script(tmp_path / "m.py", input_names(fx), recorded_calls(fx))
    assert_keras(got, fx.outputs(1))


def test_embed_refuses_big_weights_and_writes_nothing(monkeypatch, tmp_path) -> None:
    from converter import convert_python
    from converter.errors import BadOptions

    monkeypatch.setattr(convert_python, "EMBED_LIMIT", 100)  # the tutorial's 184 floats are 736 bytes
    with pytest.raises(BadOptions, match=r"--embed: the weights are 0 MiB, too big to embed.*leave out --embed"):
        converter.to_python(fixture("tutorial").path, tmp_path / "m.py", embed=True, verify=False)
    assert list(tmp_path.iterdir()) == []


def test_names_from_the_model_file_never_become_code(tmp_path) -> None:
    """Layer, input and output names go into comments and docstrings: one that tries to end them (a
    newline, triple quotes, a backslash) stays text, and the script still computes the model."""
    fx = fixture("masked_lstm")
    model = converter.load(fx.path).ir
    evil = CODE
    model = renamed(model, evil)
    script = build_python_script(model, "m.npz", f"m{evil}.keras")
    tree = ast.parse(script.text)  # one module; the names left no statement of their own
    assert not any(isinstance(n, ast.Name) and n.id == "__import__" for n in ast.walk(tree))
    assert "PWNED" in script.text and not any(line.startswith("__import__") for line in script.text.splitlines())
    (tmp_path / "m.py").write_text(script.text)
    (tmp_path / "m.npz").write_bytes(npz_bytes(script.weights))
    (got,) = run_script(tmp_path / "m.py", input_names(fx), recorded_calls(fx))
    assert_keras(got, fx.outputs(1))
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
