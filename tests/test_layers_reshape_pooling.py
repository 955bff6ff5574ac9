"""Shape layers (RepeatVector, Flatten, Reshape, Permute) and 1-D pooling: options, masks and refusals.

Oracles: Keras' recorded outputs (the fixtures of ``fixtures/specs/reshape_pooling.py``, also run by every
parametrised suite), TensorFlow's pooling rule written out as loops here, and the NumPy runtime (itself
proven against Keras by those fixtures) for hand-made masks Keras never saw.
"""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

import converter
from converter import ir
from converter.cli import app
from converter.errors import BadInputs, BadModelFile, UnsupportedLayer
from converter.export.onnx_graph import MAX_OPSET, MIN_OPSET, build_onnx
from converter.layers.base import RunContext
from converter.layers.masking import Masking
from converter.layers.pooling import (
    AveragePooling1D,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    MaxPooling1D,
    Pooling1D,
)
from converter.layers.reshape import Flatten, Permute, RepeatVector, Reshape
from converter.runtime import Runtime
from converter.summary import summarize
from tests.fixture_index import ATOL, FIXTURES, max_abs_error, one_form_each

NAMES = {
    "lstm_autoencoder",
    "lstm_flatten",
    "masked_flatten",
    "reshape_permute",
    "text_bilstm_max",
    "text_bilstm_avg",
    "global_pool_options",
    "masking_then_pool",
    "pooling_valid",
    "pooling_same",
    "pooling_channels_first",
    "masked_pooling",
    "open_time_avg",
    "open_time_pool",
}
OURS = [fx for fx in one_form_each() if fx.name in NAMES]
K3, K2 = FIXTURES / "keras3", FIXTURES / "keras2"
VERSION = {2: "2.21.0", 3: "3.15.1"}


# Helpers ----------------------------------------------------------------------------------------------


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def model(op, shape: tuple, major: int = 3, masked: bool = False, cls: str = "Layer") -> ir.Model:
    """Input x -> [Masking(0): masks the steps whose features are all 0] -> op."""
    nodes = []
    source = ir.TensorRef("x")
    if masked:
        nodes.append(ir.Node("masking", "Masking", Masking(0.0), (source,)))
        source = ir.TensorRef("masking")
    nodes.append(ir.Node("op", cls, op, (source,)))
    spec = ir.InputSpec("x", shape)
    return ir.Model("m", (spec,), tuple(nodes), (ir.TensorRef("op"),), ("y",), VERSION[major], "test")


def runtime(m: ir.Model, x: np.ndarray) -> np.ndarray:
    return Runtime(m).run({"x": x})[0][0]


def onnx_out(m: ir.Model, x: np.ndarray, opset: int = 13) -> np.ndarray:
    return session(build_onnx(m, opset=opset)).run(None, {"x": x})[0]


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    """Equal shape, NaN where the other has NaN, else within ATOL."""
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert max_abs_error(np.nan_to_num(got), np.nan_to_num(want)) <= ATOL


def rng_x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# The fixtures at every opset form ------------------------------------------------------------------


@functools.cache
def _load(path: Path, config: Path | None) -> ir.Model:
    return converter.load(path, config=config).ir


def load_ir(fx) -> ir.Model:
    return _load(fx.path, fx.config)


def test_every_fixture_of_the_family_is_there_in_both_versions() -> None:
    assert {(fx.name, fx.keras) for fx in OURS} == {(n, k) for n in NAMES for k in "23"}


@pytest.mark.parametrize("opset", sorted({MIN_OPSET, 17, 18, MAX_OPSET}))
@pytest.mark.parametrize("fx", OURS, ids=[fx.id for fx in OURS])
def test_fixture_matches_keras_at_each_opset(fx, opset: int) -> None:
    """ReduceMax/ReduceMean take their axes as an attribute before 18 and as an input from 18."""
    m = load_ir(fx)
    proto = build_onnx(m, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    assert not {n.op_type for n in proto.graph.node} & {"Loop", "Scan", "If"}
    feeds = {s.name: x.astype(np.int64 if s.dtype.startswith("int") else np.float32)
             for s, x in zip(m.inputs, fx.inputs(), strict=True)}  # fmt: skip
    got = session(proto).run(None, feeds)
    for g, w in zip(got, fx.outputs(), strict=True):
        assert max_abs_error(g, w) <= ATOL


@pytest.mark.parametrize("fx", OURS, ids=[fx.id for fx in OURS])
def test_inspect_counts_keras_params(fx) -> None:
    assert summarize(load_ir(fx))["total_params"] == fx.entry["count_params"]


# Pooling options ---------------------------------------------------------------------------------------


def tf_pool(x: np.ndarray, k: int, s: int, padding: str, mode: str) -> np.ndarray:
    """TensorFlow's 1-D pool on (batch, steps, features), loop by loop: SAME makes ceil(T/s) windows with
    the padding split (odd step at the end); the padding is not in a max and not counted in an average."""
    steps = x.shape[1]
    if padding == "same":
        out = -(-steps // s)
        before = max((out - 1) * s + k - steps, 0) // 2
    else:
        out, before = (steps - k) // s + 1, 0
    y = np.empty((x.shape[0], out, x.shape[2]), np.float32)
    for j in range(out):
        lo, hi = max(j * s - before, 0), min(j * s - before + k, steps)
        window = x[:, lo:hi]
        y[:, j] = window.max(axis=1) if mode == "max" else window.mean(axis=1)
    return y


@pytest.mark.parametrize("open_time", [False, True], ids=["fixed", "open"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("op_class", [MaxPooling1D, AveragePooling1D])
def test_pooling_options_match_tensorflow_rule(op_class: type[Pooling1D], data_format: str, open_time: bool) -> None:
    """Every pool_size/strides/padding on several lengths: the runtime against TF's rule, ONNX against the
    runtime (an open time axis uses auto_pad SAME_UPPER, a fixed one explicit pads)."""
    mode = "max" if op_class is MaxPooling1D else "average"
    for k, s, padding, steps in itertools.product((1, 2, 3, 4), (1, 2, 3), ("valid", "same"), (4, 5, 7)):
        op = op_class(k, s, padding, data_format)
        x = rng_x(2, steps, 3, seed=steps * 31 + k * 7 + s)
        want = tf_pool(x, k, s, padding, mode)
        feed = x if data_format == "channels_last" else np.ascontiguousarray(np.swapaxes(x, 1, 2))
        shape = (None, 3) if open_time else (steps, 3)
        if data_format == "channels_first":
            shape = shape[::-1]
        m = model(op, shape)
        got = runtime(m, feed)
        got_cl = got if data_format == "channels_last" else np.swapaxes(got, 1, 2)
        assert max_abs_error(got_cl, want) <= ATOL, (k, s, padding, steps)
        for opset in (MIN_OPSET, MAX_OPSET) if open_time else (MIN_OPSET,):  # Pad gains an axes input at 18
            assert_same(onnx_out(m, feed, opset), got)


def test_pooling_output_shapes() -> None:
    assert MaxPooling1D(3, 2, "same").output_shapes([(9, 4)]) == [(5, 4)]
    assert AveragePooling1D(2, 1, "valid", "channels_first").output_shapes([(4, 9)]) == [(4, 8)]
    assert MaxPooling1D(2, 2, "valid").output_shapes([(None, 4)]) == [(None, 4)]
    with pytest.raises(ValueError, match="longer than its 2 steps"):
        MaxPooling1D(3, 1, "valid").output_shapes([(2, 4)])


def test_pooling_refuses_a_sequence_shorter_than_the_window_at_run_time() -> None:
    with pytest.raises(BadInputs, match="pool_size 3 is longer than the 2 steps"):
        runtime(model(MaxPooling1D(3, 1, "valid"), (None, 3)), rng_x(1, 2, 3))


@pytest.mark.parametrize("op", [MaxPooling1D(2, 1, "valid"), AveragePooling1D(2, 2, "same")])
@pytest.mark.parametrize("major", [2, 3])
def test_pooling_ignores_and_drops_the_mask(op, major: int) -> None:
    x = rng_x(2, 6, 3)
    x[0, :2] = 0
    plain, masked = model(op, (6, 3), major), model(op, (6, 3), major, masked=True)
    assert_same(runtime(masked, x), runtime(plain, x))
    assert_same(onnx_out(masked, x), runtime(plain, x))
    assert op.call([x], [x[..., 0] != 0], None)[1] == [None]  # type: ignore[arg-type]


# Global pooling and masks -----------------------------------------------------------------------------


def hand_masked(steps: int = 6, features: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Pre-padding, post-padding, holes, a sample with no valid step, one with every step valid."""
    x = rng_x(5, steps, features, seed=3)
    keep = np.ones((5, steps), bool)
    keep[0, :3] = keep[1, -2:] = keep[2, [1, 3]] = keep[3, :] = False
    return x * keep[..., None], keep


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("major", [2, 3])
def test_global_average_takes_the_mean_of_the_valid_steps(major: int, keepdims: bool) -> None:
    x, keep = hand_masked()
    m = model(GlobalAveragePooling1D("channels_last", keepdims), (6, 4), major, masked=True)
    got = runtime(m, x)
    with np.errstate(invalid="ignore"):
        want = (x * keep[..., None]).sum(axis=1) / keep.sum(axis=1, keepdims=True)
    want = want[:, None, :] if keepdims else want
    assert_same(got, want)
    assert np.isnan(got[3]).all() and not np.isnan(np.delete(got, 3, axis=0)).any()  # no valid step: NaN
    for opset in (13, 18):
        assert_same(onnx_out(m, x, opset), got)


@pytest.mark.parametrize("major", [2, 3])
def test_global_average_channels_first_applies_the_mask_as_keras_does(major: int) -> None:
    """Keras expands the mask at axis 1 for channels_first: with as many features as steps it weighs the
    steps axis by the mask of the (other) axis Masking saw. Computed literally, as Keras does."""
    x, keep = hand_masked(steps=4, features=4)
    m = model(GlobalAveragePooling1D("channels_first", False), (4, 4), major, masked=True)
    got = runtime(m, x)
    with np.errstate(invalid="ignore"):
        want = (x * keep[:, None, :]).sum(axis=2) / keep.sum(axis=1, keepdims=True)
    assert_same(got, want)
    assert_same(onnx_out(m, x), got)
    with pytest.raises(BadModelFile, match="does not broadcast"):
        runtime(model(GlobalAveragePooling1D("channels_first", False), (6, 4), major, masked=True), hand_masked()[0])


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("major", [2, 3])
def test_global_max_ignores_the_mask_in_both_versions(major: int, data_format: str) -> None:
    """Neither Keras' GlobalMaxPooling1D takes a mask (checked with Keras 3.15 and tf_keras 2.21: masked
    steps take part), so the masked zeros count in the max."""
    x, _ = hand_masked()
    m = model(GlobalMaxPooling1D(data_format, True), (6, 4), major, masked=True)
    axis = 1 if data_format == "channels_last" else 2
    assert_same(runtime(m, x), x.max(axis=axis, keepdims=True))
    assert_same(onnx_out(m, x, MAX_OPSET), x.max(axis=axis, keepdims=True))


@pytest.mark.parametrize("major", [2, 3])
def test_global_pooling_outputs_no_mask(major: int) -> None:
    x, keep = hand_masked()
    for op in (GlobalMaxPooling1D(), GlobalAveragePooling1D()):
        run = RunContext(major, "layer 'op'", model(op, (6, 4)).nodes[0])
        assert op.call([x], [keep], run)[1] == [None]


# Shape layers -------------------------------------------------------------------------------------------


def test_reshape_infers_minus_one_on_an_open_time_axis() -> None:
    m = model(Reshape((-1, 3)), (None, 6))
    for steps in (1, 4):
        x = rng_x(2, steps, 6, seed=steps)
        assert_same(runtime(m, x), x.reshape(2, 2 * steps, 3))
        assert_same(onnx_out(m, x), x.reshape(2, 2 * steps, 3))
    with pytest.raises(BadInputs, match="cannot be reshaped"):
        runtime(model(Reshape((-1, 4)), (None, 6)), rng_x(1, 1, 6))


def test_reshape_shapes() -> None:
    assert Reshape((4, -1)).output_shapes([(2, 2, 3)]) == [(4, 3)]
    assert Reshape((-1, 3)).output_shapes([(None, 6)]) == [(None, 3)]
    for target in ((5, -1), (5, 3)):
        with pytest.raises(ValueError, match="cannot reshape"):
            Reshape(target).output_shapes([(12,)])


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (5,)])
def test_flatten_channels_first_moves_axis_1_last(shape: tuple) -> None:
    """Keras transposes (0, 2, ..., 1) first: a (2, 3) sample [[0 1 2] [3 4 5]] flattens to 0 3 1 4 2 5."""
    x = np.arange(2 * np.prod(shape), dtype=np.float32).reshape(2, *shape)
    for data_format in ("channels_last", "channels_first"):
        moved = np.moveaxis(x, 1, -1) if data_format == "channels_first" else x
        want = moved.reshape(2, -1)
        m = model(Flatten(data_format), shape)
        assert_same(runtime(m, x), want)
        assert_same(onnx_out(m, x), want)
    if shape == (2, 3):
        assert runtime(model(Flatten("channels_first"), shape), x)[0].tolist() == [0, 3, 1, 4, 2, 5]


def test_flatten_of_a_vector_per_sample_keeps_one_feature() -> None:
    m = model(Flatten(), ())
    x = np.arange(3, dtype=np.float32)
    assert_same(runtime(m, x), x[:, None])
    assert_same(onnx_out(m, x), x[:, None])
    assert Flatten().output_shapes([()]) == [(1,)] and Flatten().output_shapes([(None, 3)]) == [(None,)]


def test_permute_and_repeat_vector() -> None:
    x = rng_x(2, 2, 3, 4)
    m = model(Permute((3, 1, 2)), (2, 3, 4))
    assert_same(runtime(m, x), np.transpose(x, (0, 3, 1, 2)))
    assert_same(onnx_out(m, x), np.transpose(x, (0, 3, 1, 2)))
    v = rng_x(2, 5)
    m = model(RepeatVector(3), (5,))
    assert_same(runtime(m, v), np.stack([v] * 3, axis=1))
    assert_same(onnx_out(m, v), np.stack([v] * 3, axis=1))
    with pytest.raises(ValueError, match="permute 3 axes"):
        Permute((3, 1, 2)).output_shapes([(2, 3)])
    with pytest.raises(ValueError, match="repeats a"):
        RepeatVector(3).output_shapes([(2, 3)])


@pytest.mark.parametrize("major", [2, 3])
def test_shape_layers_drop_the_mask(major: int) -> None:
    """No Keras version lets a mask through these layers: a masked step is data like any other after them."""
    x, _ = hand_masked()
    for op, shape in ((Flatten(), (6, 4)), (Reshape((4, 6)), (6, 4)), (Permute((2, 1)), (6, 4))):
        m = model(op, shape, major, masked=True)
        assert_same(runtime(m, x), runtime(model(op, shape, major), x))
        assert op.call([x], [x[..., 0] != 0], _RUN)[1] == [None]


_RUN = None  # the shape and pooling ops read nothing from the run context


# Refusals (edited real files) -------------------------------------------------------------------------


def edited_config(tmp_path: Path, name: str, edit) -> tuple[Path, Path]:
    """The Keras 3 fixture's config with ``edit(layer_config_by_class)`` applied, beside its weights."""
    config = json.loads((K3 / f"{name}.json").read_text())
    for layer in config["config"]["layers"]:
        edit(layer["class_name"], layer["config"])
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return K3 / f"{name}.weights.h5", path


def set_option(cls: str, key: str, value):
    def edit(class_name: str, config: dict) -> None:
        if class_name == cls:
            config[key] = value

    return edit


@pytest.mark.parametrize(
    ("fixture", "cls", "key", "value", "error", "words"),
    [
        ("pooling_same", "MaxPooling1D", "padding", "causal", UnsupportedLayer, ["padding 'causal'", "valid, same"]),
        ("pooling_same", "AveragePooling1D", "data_format", "channels_middle", UnsupportedLayer, ["data_format"]),
        ("pooling_same", "MaxPooling1D", "pool_size", [0], BadModelFile, ["pool_size"]),
        ("pooling_valid", "AveragePooling1D", "strides", [0], BadModelFile, ["strides"]),
        ("text_bilstm_avg", "GlobalAveragePooling1D", "data_format", "nchw", UnsupportedLayer, ["data_format"]),
        ("open_time_pool", "Reshape", "target_shape", [-1, -1], UnsupportedLayer, ["target_shape", "one -1"]),
        ("open_time_pool", "Reshape", "target_shape", [0, 3], UnsupportedLayer, ["target_shape"]),
        ("reshape_permute", "Permute", "dims", [1, 1], BadModelFile, ["dims", "permutation"]),
        ("lstm_autoencoder", "RepeatVector", "n", 0, BadModelFile, ["n is 0"]),
        ("lstm_flatten", "Flatten", "dtype", "float16", UnsupportedLayer, ["float16", "float32"]),
    ],
)
def test_options_that_cannot_convert_are_refused_by_name(
    tmp_path: Path, fixture: str, cls: str, key: str, value, error: type, words: list[str]
) -> None:
    weights, config = edited_config(tmp_path, fixture, set_option(cls, key, value))
    with pytest.raises(error) as caught:
        converter.load(weights, config=config)
    message = str(caught.value)
    assert "\n" not in message and (str(config) in message or str(weights) in message)
    assert f"({cls})" in message
    for word in words:
        assert word in message


def test_a_refusal_exits_2_without_output(tmp_path: Path) -> None:
    weights, config = edited_config(tmp_path, "pooling_same", set_option("MaxPooling1D", "padding", "causal"))
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(app, ["to-onnx", str(weights), "--config", str(config), "-o", str(out)])
    assert result.exit_code == 2
    assert "padding 'causal'" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_keras_2_writes_pool_options_as_lists_and_they_read_alike() -> None:
    a = converter.load(K2 / "pooling_same.h5").ir
    b = converter.load(K3 / "pooling_same.keras").ir
    pools = [(n.layer.config(), n.keras_class) for n in a.nodes if isinstance(n.layer, Pooling1D)]
    assert pools == [(n.layer.config(), n.keras_class) for n in b.nodes if isinstance(n.layer, Pooling1D)]
    assert pools[0][0] == {"pool_size": 3, "strides": 2, "padding": "same", "data_format": "channels_last"}


@pytest.mark.parametrize("major", [2, 3])
def test_global_average_at_an_infinite_masked_step_follows_each_version(major: int) -> None:
    """Keras 3 drops masked steps with where(mask, x, 0), Keras 2 multiplies by the mask: Inf at a masked
    step (an Embedding row loaded with --allow-nonfinite) averages away in Keras 3 and gives NaN in Keras 2."""
    x, keep = hand_masked()
    x[0, 0, 0] = np.inf  # step 0 of sample 0 is masked
    op = GlobalAveragePooling1D()
    node = ir.Node("op", "GlobalAveragePooling1D", op, (ir.TensorRef("x"),), mask=ir.TensorRef("m"))
    specs = (ir.InputSpec("x", (6, 4)), ir.InputSpec("m", (6,), "bool"))
    m = ir.Model("m", specs, (node,), (ir.TensorRef("op"),), ("y",), VERSION[major], "test")
    got = Runtime(m).run({"x": x, "m": keep})[0][0]
    assert np.isnan(got[0, 0]) == (major == 2) and np.isfinite(got[0, 1:]).all()
    assert_same(session(build_onnx(m)).run(None, {"x": x, "m": keep})[0], got)
