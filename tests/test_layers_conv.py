"""Convolutions, 2-D pooling, Up/ZeroPad/Crop1D and TimeDistributed: options, graphs, masks and refusals.

The numbers of every fixture are checked against Keras by the parametrised suites; here: the ONNX graph's
shape (one Conv per convolution, explicit pads, transposes only at the edges), open lengths against the
NumPy runtime, the mask rules read from Keras' source, and the refusals.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import converter
from converter.errors import BadModelFile, UnsupportedLayer
from converter.export.layouts import to_layout
from converter.export.onnx_graph import MAX_OPSET, build_onnx
from converter.layers.base import ReadContext, RunContext
from converter.layers.conv import Conv, read_conv1d
from converter.layers.time_distributed import TimeDistributed, read_time_distributed
from converter.runtime import Runtime
from converter.summary import summarize
from tests.fixture_index import ATOL, FIXTURES, max_abs_error
from tests.test_onnx import keras_feeds, load_ir, open_time, run, session

K3 = FIXTURES / "keras3"


def nodes(proto: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.op_type == op_type]


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def ctx(class_name: str = "Conv1D", major: int = 3) -> ReadContext:
    return ReadContext(Path("m.keras"), "layer", class_name, major)


# --- the ONNX graph ----------------------------------------------------------------------------------


def test_one_conv_node_per_convolution_with_keras_pads() -> None:
    proto = build_onnx(load_ir("conv1d_options", "3"))
    convs = [attrs(n) for n in nodes(proto, "Conv")]
    # same k3 (groups 2), same k4 stride 2 on 9 steps (TF: out 5, total pad 3 -> 1 before, 2 after),
    # same k2 (1 step, at the end), causal k2 stride 2 (1 step at the start); all explicit.
    assert [c["pads"] for c in convs] == [[1, 1], [1, 2], [0, 1], [1, 0]]
    assert [c["group"] for c in convs] == [2, 1, 3, 1]
    assert all("auto_pad" not in c for c in convs)
    assert [c["strides"] for c in convs] == [[1], [2], [1], [2]]


def test_causal_dilated_stack_transposes_only_at_its_edges() -> None:
    proto = build_onnx(load_ir("conv1d_causal", "2"))
    convs = [attrs(n) for n in nodes(proto, "Conv")]
    assert [c["pads"] for c in convs] == [[2, 0], [4, 0], [4, 0]] and [c["dilations"] for c in convs] == [[1], [2], [4]]
    kinds = [n.op_type for n in proto.graph.node]
    first, last = kinds.index("Conv"), len(kinds) - 1 - kinds[::-1].index("Conv")
    assert "Transpose" not in kinds[first:last] and kinds[:first].count("Transpose") == 1


def test_cnn_over_frames_reshapes_and_transposes_once_at_each_edge() -> None:
    proto = build_onnx(load_ir("td_cnn_lstm", "3"))
    kinds = [n.op_type for n in proto.graph.node]
    before_lstm = kinds[: kinds.index("LSTM")]
    assert before_lstm.count("Reshape") == 2  # (B, T, H, W, C) -> (B*T, ...) and (B*T, C) -> (B, T, C)
    assert before_lstm.count("Transpose") == 2  # to channels-first once; the LSTM's own time-major one
    assert [k for k in kinds if k in ("Conv", "MaxPool", "GlobalAveragePool")] == [
        "Conv", "MaxPool", "Conv", "GlobalAveragePool",
    ]  # fmt: skip
    assert not {"Loop", "Scan", "If"} & set(kinds)


def test_separable_is_two_convs_depthwise_then_pointwise() -> None:
    model = load_ir("separable_depthwise", "3")
    convs = [attrs(n) for n in nodes(build_onnx(model), "Conv")]
    assert [c.get("group", 1) for c in convs] == [3, 1, 6, 12, 1, 4]  # depthwise groups = input channels
    assert [c["kernel_shape"] for c in convs] == [[3], [1], [3], [2], [1], [2]]


@pytest.mark.parametrize("steps", [7, 8, 10, 11])
def test_open_length_same_stride_2_pads_in_the_graph_and_matches_the_runtime(steps: int) -> None:
    model = load_ir("conv1d_open_time", "3")
    proto = build_onnx(model)
    assert all("auto_pad" not in attrs(n) for n in nodes(proto, "Conv"))  # deprecated, and negative at times
    assert len(nodes(proto, "Pad")) == 1  # only the strided 'same' one needs its pads computed
    x = np.random.default_rng(steps).normal(size=(2, steps, 3)).astype(np.float32)
    (want,), _ = Runtime(model).run({model.inputs[0].name: x})
    got = next(iter(run(session(proto), {model.inputs[0].name: x}).values()))
    assert max_abs_error(got, want) <= ATOL


def _open_sizes(model):
    spec = model.inputs[0]
    return dataclasses.replace(
        model, inputs=(dataclasses.replace(spec, shape=(None,) * (len(spec.shape) - 1) + spec.shape[-1:]),)
    )


@pytest.mark.parametrize("size", [(9, 9), (10, 11), (13, 17), (16, 12)])
@pytest.mark.parametrize("name", ["td_pooling", "conv2d_image", "td_mobile", "pool2d_strided"])
def test_open_image_sizes_match_the_runtime(name: str, size: tuple[int, int]) -> None:
    model = _open_sizes(load_ir(name, "3"))
    proto = build_onnx(model)
    assert all("auto_pad" not in attrs(n) for n in proto.graph.node)
    shape = (2, *size, 2) if name in ("conv2d_image", "pool2d_strided") else (2, 3, *size, 2)
    x = np.random.default_rng(sum(size)).normal(size=shape).astype(np.float32)
    (want,), _ = Runtime(model).run({model.inputs[0].name: x})
    got = next(iter(run(session(proto), {model.inputs[0].name: x}).values()))
    assert max_abs_error(got, want) <= ATOL


@pytest.mark.parametrize("steps", [1, 3, 6])
def test_time_distributed_keeps_batch_and_time_symbolic(steps: int) -> None:
    model = open_time(load_ir("td_cnn_lstm", "2"))
    proto = build_onnx(model)
    x = np.random.default_rng(steps).normal(size=(5, steps, 8, 8, 2)).astype(np.float32)
    (want,), _ = Runtime(model).run({model.inputs[0].name: x})
    got = next(iter(run(session(proto), keras_feeds(model, [x])).values()))
    assert max_abs_error(got, want) <= ATOL


@pytest.mark.parametrize("name", ["td_pooling", "separable_depthwise", "resample1d", "conv2d_image"])
def test_newest_opset_runs_alike(name: str) -> None:
    from tests.test_onnx import fixture

    fx = fixture(name, "3")
    proto = build_onnx(load_ir(name, "3"), opset=MAX_OPSET)
    onnx.checker.check_model(proto, full_check=True)
    got = run(session(proto), keras_feeds(load_ir(name, "3"), fx.inputs()))
    assert max_abs_error(next(iter(got.values())), fx.outputs()[0]) <= ATOL


# --- inspect and layouts -------------------------------------------------------------------------------


def test_inspect_formulas_of_convolutions() -> None:
    layers = summarize(load_ir("separable_depthwise", "3"))["layers"]
    assert layers[0]["formula"] == "3*3*2 + 6*6 + 6 = 60"  # depthwise (k, in, m), pointwise (in*m, filters), bias
    assert layers[1]["formula"] == "3*6*2 + 12 = 48"
    layers = summarize(load_ir("conv1d_options", "3"))["layers"]
    assert layers[0]["formula"] == "3*2*4 = 24"  # 4 inputs in 2 groups, no bias


def test_layout_keys_say_what_each_tensor_is() -> None:
    model = load_ir("td_cnn_lstm", "3")
    keras = to_layout(model, "keras")
    assert keras["time_distributed/kernel"].shape == (3, 3, 2, 4)  # Keras' own (kh, kw, in, out)
    assert keras["time_distributed/bias"].shape == (4,)
    torch_keys = to_layout(model, "pytorch")
    assert torch_keys["time_distributed.weight"].shape == (4, 2, 3, 3)
    stored = np.asarray(keras["time_distributed/kernel"])
    assert np.array_equal(torch_keys["time_distributed.weight"], stored.transpose(3, 2, 0, 1))
    sep = to_layout(load_ir("separable_depthwise", "2"), "pytorch")
    assert {k for k in sep if k.startswith("separable_conv1d.")} == {
        "separable_conv1d.depthwise.weight", "separable_conv1d.pointwise.weight", "separable_conv1d.pointwise.bias",
    }  # fmt: skip


def test_pytorch_meaning_warns_about_padding_nn_conv_cannot_express() -> None:
    from converter.export.description import describe

    doc = describe(load_ir("conv1d_causal", "3"), "pytorch")
    meaning = doc["nodes"][0]["tensors"][0]["meaning"]
    assert "causal" in meaning and "2 steps at the start" in meaning and "pad the input yourself" in meaning


# --- masks ---------------------------------------------------------------------------------------------


def test_a_convolution_drops_the_mask_in_both_versions() -> None:
    for major in (2, 3):
        model = load_ir("conv1d_masked", str(major))
        conv = model.nodes[1].layer
        x = np.ones((2, 6, 3), np.float32)
        _, masks = conv.call([x], [np.ones((2, 6), bool)], RunContext(major, "conv", model.nodes[1]))
        assert masks == [None]


def _wrapped_activation(major: int) -> TimeDistributed:
    entry = {"layer": {"class_name": "Activation", "config": {"activation": "tanh"}}}
    return read_time_distributed(entry, [], ctx("TimeDistributed", major))  # type: ignore[return-value]


def test_time_distributed_mask_rules_of_each_version() -> None:
    x = np.ones((2, 3, 4, 5), np.float32)
    sub_step_mask = np.array([[[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]] * 2, bool)  # (B, T, S)
    node = load_ir("td_masked", "3").nodes[1]
    for major in (2, 3):  # an Activation keeps the mask it is given: (B*T, S), back to (B, T, S)
        _, (mask,) = _wrapped_activation(major).call([x], [sub_step_mask], RunContext(major, "td", node))
        assert np.array_equal(mask, sub_step_mask)
    conv = read_conv1d(
        {"filters": 2, "kernel_size": [1]}, [("k", np.ones((1, 5, 2))), ("b", np.zeros(2))], ctx()
    )  # drops masks, as Keras' convolutions do
    wrapped = TimeDistributed("Conv1D", conv)
    _, (k3,) = wrapped.call([x], [sub_step_mask], RunContext(3, "td", node))
    _, (k2,) = wrapped.call([x], [sub_step_mask], RunContext(2, "td", node))
    assert np.array_equal(k3, sub_step_mask)  # Keras 3: the input mask, whatever the wrapped layer does
    assert np.array_equal(k2, [[True, False, True]] * 2)  # Keras 2: the input mask reduced to (B, T)


# --- refusals ------------------------------------------------------------------------------------------


def _conv_config(**extra) -> dict:
    return {"filters": 2, "kernel_size": [3], **extra}


def _weights(k: int = 3, cin: int = 4, out: int = 2) -> list:
    return [("kernel", np.ones((k, cin, out), np.float32)), ("bias", np.zeros(out, np.float32))]


@pytest.mark.parametrize(
    ("extra", "error", "words"),
    [
        ({"padding": "full"}, UnsupportedLayer, ["padding 'full'", "valid, same, causal"]),
        ({"lora_rank": 4}, UnsupportedLayer, ["LoRA"]),
        ({"strides": [2], "dilation_rate": [2]}, BadModelFile, ["strides > 1 together with dilation_rate > 1"]),
        ({"kernel_size": [0]}, BadModelFile, ["kernel_size"]),
        ({"groups": 3}, BadModelFile, ["not a multiple of groups"]),
        ({"data_format": "channels_middle"}, BadModelFile, ["data_format"]),
        ({"activation": "no_such"}, UnsupportedLayer, ["activation 'no_such'"]),
    ],
)
def test_conv_options_refused_by_name(extra: dict, error: type, words: list[str]) -> None:
    with pytest.raises(error) as info:
        read_conv1d(_conv_config(**extra), _weights(), ctx())
    assert all(w in str(info.value) for w in words) and "m.keras: layer 'layer' (Conv1D)" in str(info.value)


def test_conv_weights_must_fit_the_config() -> None:
    with pytest.raises(BadModelFile, match="shape"):
        read_conv1d(_conv_config(), [("kernel", np.ones((2, 4, 2))), ("bias", np.zeros(2))], ctx())
    with pytest.raises(BadModelFile, match="needs 2"):
        read_conv1d(_conv_config(), _weights()[:1], ctx())


def test_conv2d_has_no_causal_padding() -> None:
    from converter.layers.conv2d import read_conv2d

    with pytest.raises(UnsupportedLayer, match="padding 'causal'"):
        read_conv2d(_conv_config(padding="causal", kernel_size=[3, 3]), [("k", np.ones((3, 3, 4, 2)))], ctx("Conv2D"))


@pytest.mark.parametrize(
    ("inner", "words"),
    [
        ({"class_name": "LSTM", "config": {"units": 3}}, "wrapping 'LSTM' is not supported"),
        ({"class_name": "Concatenate", "config": {}}, "wrapping 'Concatenate' is not supported"),
        ({"class_name": "ConvLSTM2D", "config": {}}, "any per-step layer"),
        ({"class_name": "Conv1D", "registered_name": "my>Conv", "config": {}}, "custom class"),
    ],
)
def test_time_distributed_refuses_what_is_not_a_per_step_layer(inner: dict, words: str) -> None:
    with pytest.raises(UnsupportedLayer, match=words):
        read_time_distributed({"layer": inner}, [], ctx("TimeDistributed"))


def test_time_distributed_dense_is_still_the_dense_op() -> None:
    layer = load_ir("stacked", "3").nodes[-1].layer
    assert layer.op_type == "dense" and layer.time_distributed


def test_conv_lstm2d_refused_naming_the_missing_onnx_op(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedLayer) as info:
        converter.load(K3 / "conv_lstm2d.keras")
    assert "ConvLSTM2D" in str(info.value) and "no fused ConvLSTM2D operator" in str(info.value)
    # ConvLSTM1D too, in a config edited from the fixture (built here, small on disk)
    with zipfile.ZipFile(K3 / "conv_lstm2d.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][1]["class_name"] = "ConvLSTM1D"
    members["config.json"] = json.dumps(config).encode()
    edited = tmp_path / "conv_lstm1d.keras"
    with zipfile.ZipFile(edited, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(UnsupportedLayer, match="no fused ConvLSTM1D operator"):
        converter.load(edited)


def test_config_round_trip_keeps_tuples() -> None:
    conv = load_ir("td_pooling", "3").nodes[0].layer
    again = TimeDistributed.from_config(json.loads(json.dumps(conv.config())))
    assert isinstance(again.inner, Conv) and again.inner.kernel_size == (3, 2)
    assert again.inner.dilation_rate == (1, 2) and again.layer == "Conv2D"


def test_an_open_sized_input_too_small_for_a_window_is_bad_input() -> None:
    from converter.errors import BadInputs

    model = load_ir("td_mobile", "3")
    model = dataclasses.replace(model, inputs=(dataclasses.replace(model.inputs[0], shape=(None, None, None, 2)),))
    with pytest.raises(BadInputs, match="layer 'time_distributed_3': its window of 3 does not fit an axis of 2"):
        Runtime(model).run({model.inputs[0].name: np.zeros((2, 3, 8, 8, 2), np.float32)})
