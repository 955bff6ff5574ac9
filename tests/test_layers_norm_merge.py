"""Normalization and merge layers: options, Keras' float32 order and epsilons, mask rules, refusals.

The parametrised suites run every fixture of these layers through every path; this file shows that the
fixtures really exercise each rule (breaking the rule breaks the match with Keras), compares the formulas
with real Keras on inputs where the order of operations and the epsilons matter, runs the ONNX graphs at
the opsets where ReduceMean changes form, and checks the refusals.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

import converter
from converter.cli import app
from converter.errors import BadModelFile, UnsupportedLayer
from converter.export.npz import write_npz
from converter.export.onnx_graph import MAX_OPSET, MIN_OPSET, build_onnx
from converter.layers import dot, merge, normalization, scaling
from converter.layers.base import RunContext, ShapeMismatch
from converter.summary import summarize
from tests.fixture_index import ATOL, all_fixtures, max_abs_error, one_form_each

NAMES = {
    "bn_stacked", "bn_options", "bn_renorm", "bn_masked", "bn_axis_list", "ln_stacked", "ln_options", "ln_rms",
    "ln_masked", "norm_adapted", "norm_options", "unit_norm", "unit_norm_masked", "merges", "merges_broadcast",
    "merges_masked", "dots", "dot_masked", "rms_norm", "rms_norm_plain", "bn_sync",
}  # fmt: skip
OURS = [fx for fx in one_form_each() if fx.name in NAMES]


def fx_of(name: str, keras: str):
    return next(fx for fx in OURS if fx.name == name and fx.keras == keras)


def worst_error(name: str, keras: str) -> float:
    fx = fx_of(name, keras)
    got = converter.load(fx.path, config=fx.config).predict(fx.inputs())
    got = got if isinstance(got, list) else [got]
    return max(max_abs_error(g, w) for g, w in zip(got, fx.outputs(), strict=True))


def test_every_fixture_is_there_in_each_version_it_exists_in() -> None:
    have = {(fx.name, fx.keras) for fx in OURS}
    only = {"bn_axis_list": "2", "ln_rms": "3", "rms_norm": "3", "rms_norm_plain": "3", "bn_sync": "2"}
    assert have == {(n, k) for n in NAMES for k in "23" if only.get(n, k) == k}


# --- the fixtures exercise each rule: breaking it breaks the match with Keras -------------------------


def _plain_merge(self, xs, masks, keras_major):  # the elementwise merge without Keras 3's value rules
    return merge.Elementwise.merge(self, xs, masks, keras_major)


@pytest.mark.parametrize("cls", [merge.Multiply, merge.Maximum, merge.Minimum])
def test_keras3_replaces_masked_values_in_multiply_maximum_minimum(cls, monkeypatch) -> None:
    assert worst_error("merges_masked", "3") <= ATOL and worst_error("merges_masked", "2") <= ATOL
    monkeypatch.setattr(cls, "merge", _plain_merge)
    assert worst_error("merges_masked", "3") > 1e-3  # the rule is Keras 3's ...
    assert worst_error("merges_masked", "2") <= ATOL  # ... and not Keras 2's


def test_the_output_masks_differ_between_versions(monkeypatch) -> None:
    """Keras 2 keeps a step every masked input keeps (and), Keras 3 one that any input keeps (or)."""
    real = merge.combine_masks
    monkeypatch.setattr(merge, "combine_masks", lambda masks, major: real(masks, 5 - major))
    assert worst_error("merges_masked", "3") > 1e-3 and worst_error("merges_masked", "2") > 1e-3


def test_dot_drops_the_mask(monkeypatch) -> None:
    real = dot.Dot.call
    monkeypatch.setattr(dot.Dot, "call", lambda self, xs, ms, run: (real(self, xs, ms, run)[0], [ms[0]]))
    for keras in "23":
        assert worst_error("dot_masked", keras) > 1e-3


@pytest.mark.parametrize("cls", [normalization.BatchNormalization, normalization.LayerNormalization])
def test_normalization_passes_the_mask_on(cls, monkeypatch) -> None:
    real = cls.call
    monkeypatch.setattr(cls, "call", lambda self, xs, ms, run: (real(self, xs, ms, run)[0], [None]))
    name = "bn_masked" if cls is normalization.BatchNormalization else "ln_masked"
    for keras in "23":
        assert worst_error(name, keras) > 1e-3


def test_rms_normalization_drops_the_mask(monkeypatch) -> None:
    """Keras 3's RMSNormalization does not support masking: the LSTM after it runs every step."""
    real = scaling.RMSNormalization.call
    monkeypatch.setattr(scaling.RMSNormalization, "call", lambda self, xs, ms, run: (real(self, xs, ms, run)[0], ms))
    assert worst_error("rms_norm", "3") > 1e-3


def test_keras2_layer_norm_takes_its_fused_kernel_only_where_tf_keras_does() -> None:
    ln = normalization.LayerNormalization((-1,), 1e-3, True, True, False, (4,), {})
    assert ln.fused(3, 2) and not ln.fused(3, 3)
    assert not normalization.LayerNormalization((1,), 1e-3, True, True, False, (6,), {}).fused(3, 2)
    assert not normalization.LayerNormalization((-1,), 1e-6, True, True, False, (4,), {}).fused(3, 2)
    assert normalization.LayerNormalization((1, 2), 1e-3, True, True, False, (6, 4), {}).fused(3, 2)


# --- the formulas against real Keras where the order and the epsilons matter --------------------------


def _keras(major: int):
    return pytest.importorskip("keras" if major == 3 else "tf_keras")


def _run(op, x: np.ndarray, major: int) -> np.ndarray:
    return op.call([x], [None], RunContext(major, "test", None))[0][0]  # type: ignore[arg-type]


@pytest.mark.parametrize("major", [2, 3])
@pytest.mark.parametrize(("axis", "epsilon"), [(-1, 1e-3), (-1, 1e-6), ([1, 2], 1e-3), (1, 1e-3)])
def test_layer_norm_matches_keras_with_an_offset(major: int, axis, epsilon: float) -> None:
    """Inputs around 5 with spread 0.3, gamma and beta random. (Far larger mean/std ratios cannot match TF
    to 1e-5 by any order: TF's rsqrt is a hardware estimate refined once, not correctly rounded, and
    ``x * inv`` and ``mean * inv`` then differ by an ulp of numbers far larger than the result.)"""
    k = _keras(major)
    rng = np.random.default_rng(3)
    x = (5 + rng.normal(size=(2, 6, 4)) * 0.3).astype(np.float32)
    layer = k.layers.LayerNormalization(axis=axis, epsilon=epsilon)
    layer.build(x.shape)
    gamma, beta = (rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights())
    layer.set_weights([gamma, beta])
    want = np.asarray(layer(x))
    axes = tuple(axis) if isinstance(axis, list) else (axis,)
    op = normalization.LayerNormalization(axes, epsilon, True, True, False, gamma.shape, {"gamma": gamma, "beta": beta})
    assert max_abs_error(_run(op, x, major), want) <= ATOL


@pytest.mark.parametrize("major", [2, 3])
def test_unit_normalization_epsilon_as_keras_places_it(major: int) -> None:
    k = _keras(major)
    x = np.array([[[0.0, 0.0], [1e-8, -2e-8], [3e-4, 4e-4], [3.0, 4.0]]], np.float32)
    want = np.asarray(k.layers.UnitNormalization(axis=-1)(x))
    got = _run(scaling.UnitNormalization((-1,)), x, major)
    assert max_abs_error(got, want) <= 1e-7 and np.array_equal(got == 0, want == 0)


@pytest.mark.parametrize("major", [2, 3])
def test_dot_normalize_epsilon_as_keras_places_it(major: int) -> None:
    k = _keras(major)
    a = np.array([[1e-8, 2e-8], [3e-5, 4e-5], [0.0, 0.0]], np.float32)
    b = np.array([[1.0, 1.0], [2.0, -1.0], [1.0, 0.0]], np.float32)
    want = np.asarray(k.layers.Dot(axes=1, normalize=True)([a, b]))
    got = dot.Dot((1,), True).call([a, b], [None, None], RunContext(major, "test", None))[0][0]  # type: ignore[arg-type]
    assert got.shape == want.shape == (3, 1) and max_abs_error(got, want) <= 1e-6


# --- ONNX at the opsets where the reductions change form --------------------------------------------


@pytest.mark.parametrize("opset", sorted({MIN_OPSET, 17, 18, MAX_OPSET}))
@pytest.mark.parametrize("fx", OURS, ids=[fx.id for fx in OURS])
def test_onnx_at_each_opset(fx, opset: int) -> None:
    proto = build_onnx(converter.load(fx.path, config=fx.config).ir, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    assert not {n.op_type for n in proto.graph.node} & {"Loop", "Scan", "If"}
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.astype(np.float32) for i, x in zip(sess.get_inputs(), fx.inputs(), strict=True)}
    for got, want in zip(sess.run(None, feeds), fx.outputs(), strict=True):
        assert max_abs_error(got, want) <= ATOL


# --- shapes, counts, layouts ----------------------------------------------------------------------------


def test_merge_shapes_broadcast_and_refuse_as_keras() -> None:
    assert merge.broadcast_shapes([(5, 4), (4,)]) == (5, 4)
    assert merge.broadcast_shapes([(5, 4), (5, 1)]) == (5, 4)
    assert merge.broadcast_shapes([(None, 4), (5, 4)]) == (None, 4)
    with pytest.raises(ShapeMismatch, match="differ"):
        merge.broadcast_shapes([(5, 4), (5, 3)])
    with pytest.raises(ShapeMismatch, match="exactly two"):
        merge.Subtract().output_shapes([(4,), (4,), (4,)])
    with pytest.raises(ShapeMismatch, match="sizes 4 != 3"):
        dot.Dot((-1,), False).output_shapes([(5, 4), (3,)])
    with pytest.raises(ShapeMismatch, match="do not fit"):
        dot.Dot((0,), False).output_shapes([(4,), (4,)])
    assert dot.Dot((2, 2), False).output_shapes([(5, 4), (6, 4)]) == [(5, 6)]
    assert dot.Dot((1,), False).output_shapes([(4,), (4,)]) == [(1,)]


def test_inspect_counts_the_moving_statistics() -> None:
    doc = summarize(converter.load(fx_of("bn_stacked", "3").path).ir)
    bn = [layer for layer in doc["layers"] if layer["class"] == "BatchNormalization"]
    assert [b["formula"] for b in bn] == ["2*6 + 2*6 (moving statistics) = 24", "2*4 + 2*4 (moving statistics) = 16"]
    renorm = summarize(converter.load(fx_of("bn_renorm", "2").path).ir)["layers"][1]
    assert renorm["formula"] == "2*4 + 5*4 (moving statistics) = 28"  # moving_stddev, renorm_mean, renorm_stddev


def test_batch_norm_layouts_name_keras_onnx_and_torch_tensors(tmp_path: Path) -> None:
    model = converter.load(fx_of("bn_options", "3").path).ir
    keys = {}
    for layout in ("keras", "onnx", "pytorch"):
        path = tmp_path / f"{layout}.npz"
        write_npz(model, path, layout=layout)
        with np.load(path) as data:
            keys[layout] = sorted(k for k in data.files if k.startswith("batch_normalization_1"))
    # center=False: Keras has no beta; ONNX's BatchNormalization and nn.BatchNorm1d get zeros for it
    assert keys["keras"] == [f"batch_normalization_1/{k}" for k in ("gamma", "moving_mean", "moving_variance")]
    assert keys["onnx"] == [f"batch_normalization_1/{k}" for k in ("B", "input_mean", "input_var", "scale")]
    assert keys["pytorch"] == [f"batch_normalization_1.{k}" for k in ("bias", "running_mean", "running_var", "weight")]


@pytest.mark.parametrize(("name", "keras", "words"), [
    ("bn_axis_list", "2", ("several axes", "nn.BatchNorm1d")),
    ("ln_rms", "3", ("rms_scaling", "nn.LayerNorm")),
])  # fmt: skip
def test_pytorch_layout_refuses_what_torch_cannot_hold(tmp_path: Path, name: str, keras: str, words) -> None:
    fx = fx_of(name, keras)
    with pytest.raises(UnsupportedLayer) as caught:
        write_npz(converter.load(fx.path).ir, tmp_path / "out.npz", layout="pytorch")
    assert all(w in str(caught.value) for w in words) and not (tmp_path / "out.npz").exists()


# --- refusals ---------------------------------------------------------------------------------------------


def edited(tmp_path: Path, name: str, class_name: str, **changes) -> tuple[Path, Path]:
    """The Keras 3 fixture ``name`` as .weights.h5 + a config whose first ``class_name`` layer is changed."""
    fx = next(f for f in all_fixtures() if f.name == name and f.keras == "3" and f.form == "weights")
    doc = json.loads(fx.config.read_text())
    layer = next(entry for entry in doc["config"]["layers"] if entry["class_name"] == class_name)
    layer["config"].update(changes)
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps(doc))
    weights = tmp_path / fx.path.name
    shutil.copy(fx.path, weights)
    return weights, config


@pytest.mark.parametrize(("change", "words"), [
    ({"virtual_batch_size": 2}, ("virtual_batch_size", "not supported")),
    ({"adjustment": "lambda"}, ("adjustment",)),
    ({"axis": 0}, ("batch axis",)),
    ({"dtype": "mixed_float16"}, ("mixed_float16", "float32")),
])  # fmt: skip
def test_batch_norm_refusals_name_the_layer_and_option(tmp_path: Path, change: dict, words) -> None:
    weights, config = edited(tmp_path, "bn_stacked", "BatchNormalization", **change)
    with pytest.raises(UnsupportedLayer) as caught:
        converter.load(weights, config=config)
    message = str(caught.value)
    assert "layer 'batch_normalization' (BatchNormalization)" in message and all(w in message for w in words)


def test_refusal_on_the_command_line_is_one_line_exit_2(tmp_path: Path) -> None:
    weights, config = edited(tmp_path, "bn_stacked", "BatchNormalization", virtual_batch_size=2)
    result = CliRunner().invoke(app, ["to-onnx", str(weights), "--config", str(config), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "virtual_batch_size" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_normalization_config_statistics_are_checked(tmp_path: Path) -> None:
    weights, config = edited(tmp_path, "norm_options", "Normalization", mean=[0.0, float("nan"), 1.0])
    with pytest.raises(BadModelFile, match="NaN"):
        converter.load(weights, config=config)
    weights, config = edited(tmp_path, "norm_options", "Normalization", mean=[0.0, 1.0], variance=[1.0, 1.0])
    with pytest.raises(BadModelFile, match="do not fit"):
        converter.load(weights, config=config)
    weights, config = edited(tmp_path, "norm_options", "Normalization", variance=None)
    with pytest.raises(BadModelFile, match="without a variance"):
        converter.load(weights, config=config)


def test_layer_norm_weights_must_fit_the_config(tmp_path: Path) -> None:
    weights, config = edited(tmp_path, "ln_stacked", "LayerNormalization", center=False)
    with pytest.raises(BadModelFile, match="weight arrays"):
        converter.load(weights, config=config)


def test_only_normalization_may_hold_integer_weights(tmp_path: Path) -> None:
    import h5py

    fx = next(f for f in all_fixtures() if f.name == "bn_stacked" and f.keras == "2")
    path = tmp_path / "bn.h5"
    shutil.copy(fx.path, path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/batch_normalization/batch_normalization"]
        del group["moving_mean:0"]
        group.create_dataset("moving_mean:0", data=np.zeros(6, np.int64))
    with pytest.raises(BadModelFile, match="not floating point"):
        converter.load(path)


# --- synthetic graphs: shapes the fixtures do not have, random masks -------------------------------------


def _model(keras_version: str, specs: list[tuple[str, tuple]], nodes: list, outputs: list[str]):
    from converter import ir

    return ir.Model(
        name="synthetic",
        inputs=tuple(ir.InputSpec(name, shape) for name, shape in specs),
        nodes=tuple(nodes),
        outputs=tuple(ir.TensorRef(o, 0) for o in outputs),
        output_names=tuple(outputs),
        keras_version=keras_version,
        source="synthetic",
    )


def _node(name: str, layer, *inputs: str):
    from converter import ir

    return ir.Node(name, type(layer).__name__, layer, tuple(ir.TensorRef(i, 0) for i in inputs))


@pytest.mark.parametrize("major", [2, 3])
def test_dot_of_rank_4_inputs_runs_as_keras_and_is_refused_for_onnx(major: int) -> None:
    from converter.runtime import Runtime

    k = _keras(major)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 5, 4)).astype(np.float32), rng.normal(size=(2, 4, 6)).astype(np.float32)
    want = np.asarray(k.layers.Dot(axes=(3, 1), normalize=True)([a, b]))
    op = dot.Dot((3, 1), True)
    model = _model(f"{major}.0", [("a", (3, 5, 4)), ("b", (4, 6))], [_node("dot", op, "a", "b")], ["dot"])
    assert op.output_shapes([(3, 5, 4), (4, 6)]) == [want.shape[1:]]
    got = Runtime(model).run({"a": a, "b": b})[0][0]
    assert max_abs_error(got, want) <= ATOL
    with pytest.raises(UnsupportedLayer, match="rank above 3"):
        build_onnx(model)


@pytest.mark.parametrize("major", [2, 3])
def test_merges_of_randomly_masked_inputs_match_the_runtime_in_onnx(major: int) -> None:
    """Every merge of two masked inputs and of a masked with an unmasked one, under random masks (holes,
    fully masked rows): the ONNX graph gives the NumPy runtime's values (which the fixtures prove against
    Keras), Keras 3's value rules included."""
    from converter.layers.masking import Masking
    from converter.runtime import Runtime

    kinds = [merge.Add(), merge.Subtract(), merge.Multiply(), merge.Average(), merge.Maximum(), merge.Minimum()]
    nodes = [_node("ma", Masking(0.0), "a"), _node("mb", Masking(0.0), "b")]
    outputs = []
    for op in kinds:
        nodes.append(_node(f"{op.op_type}_ab", op, "ma", "mb"))
        nodes.append(_node(f"{op.op_type}_ac", op, "ma", "c"))
        outputs += [f"{op.op_type}_ab", f"{op.op_type}_ac"]
    model = _model(f"{major}.0", [("a", (7, 3)), ("b", (7, 3)), ("c", (7, 3))], nodes, outputs)
    sess = ort.InferenceSession(build_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(major)
    for _ in range(10):
        feeds = {n: rng.normal(size=(4, 7, 3)).astype(np.float32) for n in "abc"}
        for n in "ab":
            feeds[n][rng.random((4, 7)) < 0.4] = 0.0
        want = Runtime(model).run(feeds)[0]
        for got, w in zip(sess.run(outputs, feeds), want, strict=True):
            assert max_abs_error(got, w) <= ATOL
