"""keras.layers.RNN of cells: the same ops as the LSTM/GRU/SimpleRNN layers, stacks as one op per cell, and
tf.keras' PeepholeLSTMCell. The parametrised suites run every rnn_* fixture through every path; these are
the facts they do not look at: names, orders, states across calls, refusals.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest

import converter
from converter.errors import BadModelFile, UnsupportedLayer
from converter.export.layouts import to_layout
from converter.export.npz import write_npz
from converter.export.onnx_graph import build_onnx, graph_output_names, state_io_names
from converter.gates import PEEPHOLE_ORDER
from converter.layers.recurrent import Recurrent, Stacked
from converter.runtime import Runtime
from tests.fixture_index import ATOL, FIXTURES, max_abs_error
from tests.test_onnx import _fed_states, _split, keras_feeds, run, session

K2, K3 = FIXTURES / "keras2", FIXTURES / "keras3"


def load(name: str, keras: str = "3"):
    folder = K3 if keras == "3" else K2
    return converter.load(folder / f"{name}.keras" if keras == "3" else folder / f"{name}.h5")


def io(name: str, keras: str) -> dict[str, np.ndarray]:
    with np.load((K3 if keras == "3" else K2) / f"{name}.io.npz") as data:
        return {k: data[k] for k in data.files}


# RNN of one cell is the layer of that cell --------------------------------------------------------------


@pytest.mark.parametrize("keras", ["2", "3"])
def test_rnn_of_a_cell_is_the_recurrent_op_with_the_cells_options(keras: str) -> None:
    model = load("rnn_gru_cell", keras).ir
    first, second = (n.layer for n in model.nodes)
    assert isinstance(first, Recurrent) and isinstance(second, Recurrent)
    assert (first.kind, first.units, first.reset_after, first.return_sequences) == ("gru", 4, True, True)
    assert (second.kind, second.units, second.reset_after) == ("gru", 3, False)
    assert [n.keras_class for n in model.nodes] == ["RNN", "RNN"]
    proto = build_onnx(model)
    assert [n.op_type for n in proto.graph.node if n.op_type == "GRU"] == ["GRU", "GRU"]


# Stacked cells -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("keras", ["2", "3"])
def test_stacked_cells_are_one_fused_node_each_in_order(keras: str) -> None:
    model = load("rnn_stacked_mixed", keras).ir
    stack = model.node("rnn").layer
    assert isinstance(stack, Stacked)
    assert [(c.kind, c.units, c.input_dim) for c in stack.cells] == [
        ("gru", 4, 3),
        ("simple_rnn", 3, 4),
        ("lstm", 2, 3),
    ]
    # inner cells return sequences for the next one; the last follows the RNN (return_sequences=False)
    assert [c.return_sequences for c in stack.cells] == [True, True, False]
    proto = build_onnx(model)
    fused = [(n.name, n.op_type) for n in proto.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert fused == [("rnn/cell_0/GRU", "GRU"), ("rnn/cell_1/RNN", "RNN"), ("rnn/cell_2/LSTM", "LSTM")]


def test_stacked_tensor_names_in_every_layout() -> None:
    model = load("rnn_stacked").ir  # two LSTMCell(4) on 3 features
    keras = to_layout(model, "keras")
    assert [k for k in keras if k.startswith("rnn/cell_1/")][:4] == [f"rnn/cell_1/W_{g}" for g in "ifco"]
    assert keras["rnn/cell_0/W_i"].shape == (3, 4) and keras["rnn/cell_1/W_i"].shape == (4, 4)
    onnx_layout = to_layout(model, "onnx")
    assert {k: v.shape for k, v in onnx_layout.items()} == {
        "rnn/cell_0/W": (1, 16, 3),
        "rnn/cell_0/R": (1, 16, 4),
        "rnn/cell_0/B": (1, 32),
        "rnn/cell_1/W": (1, 16, 4),
        "rnn/cell_1/R": (1, 16, 4),
        "rnn/cell_1/B": (1, 32),
    }
    torch_keys = list(to_layout(model, "pytorch"))
    assert torch_keys == [f"rnn.{w}_l{k}" for k in (0, 1) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def test_stacked_inspect_formula_adds_the_cells() -> None:
    doc = converter.inspect(K3 / "rnn_stacked.keras")
    layer = doc["layers"][0]
    # LSTMCell(4) on 3 features: 4*(3*4 + 4*4 + 4) = 128; on the first cell's 4 outputs: 4*(4*4 + 4*4 + 4) = 144
    assert layer["params"] == 272 == json.loads((K3 / "rnn_stacked.entry.json").read_text())["count_params"]
    assert layer["formula"] == "[4*(3*4 + 4*4 + 4)] + [4*(4*4 + 4*4 + 4)] = 272"
    assert layer["output_shapes"] == [[None, 5, 4], [None, 4], [None, 4], [None, 4], [None, 4]]
    assert [t["name"] for t in layer["tensors"]][:1] == ["cell_0/W_i"]


def test_unequal_stacks_are_refused_for_pytorch(tmp_path: Path) -> None:
    model = load("rnn_stacked_mixed").ir
    target = tmp_path / "m.npz"
    with pytest.raises(UnsupportedLayer, match=r"layer 'rnn' \(RNN\): its stacked cells differ.*keras or onnx"):
        write_npz(model, target, layout="pytorch")
    assert not target.exists()


@pytest.mark.parametrize("keras", ["2", "3"])
def test_stateful_stack_streams_its_cells_states_through_onnx(keras: str) -> None:
    model = load("rnn_stateful", keras).ir
    ins, outs = state_io_names(model, state_io=False)
    assert ins == ["rnn/h0", "rnn/c0", "rnn_1/cell_0/h0", "rnn_1/cell_1/h0"]
    assert outs == ["rnn/h", "rnn/c", "rnn_1/cell_0/h", "rnn_1/cell_1/h"]
    data = io("rnn_stateful", keras)
    sess = session(build_onnx(model))
    first, states = _split(run(sess, keras_feeds(model, [data["input/0"]])), model)
    assert max_abs_error(first[0], data["output/0"]) <= ATOL
    second, _ = _split(run(sess, {**keras_feeds(model, [data["input2/0"]]), **_fed_states(model, states)}), model)
    assert max_abs_error(second[0], data["output2/0"]) <= ATOL
    fresh, _ = _split(run(sess, keras_feeds(model, [data["input2/0"]])), model)
    assert max_abs_error(fresh[0], second[0]) > 1e-3  # the carried states of both cells mattered


def test_runtime_initial_states_of_a_stack_are_per_cell() -> None:
    """Feeding a stack's cells their states by name equals wiring them as Keras inputs."""
    model = load("rnn_stacked_mixed").ir
    data = io("rnn_stacked_mixed", "3")
    xs = [data[f"input/{k}"] for k in range(5)]
    want = [data[f"output/{k}"] for k in range(5)]
    feeds = {s.name: x for s, x in zip(model.inputs, xs, strict=True)}
    got, _ = Runtime(model).run(feeds)
    for g, w in zip(got, want, strict=True):
        assert max_abs_error(g, w) <= ATOL
    # the same model without the wiring, the states given per cell from outside
    node = model.node("rnn")
    bare = replace(model, nodes=tuple(replace(n, initial_state=()) if n is node else n for n in model.nodes))
    given = {"rnn": {"cell_0": [xs[1]], "cell_1": [xs[2]], "cell_2": [xs[3], xs[4]]}}
    again, _ = Runtime(bare).run(feeds, initial_states=given)
    for g, w in zip(again, want, strict=True):
        assert max_abs_error(g, w) <= ATOL


@pytest.mark.parametrize("opset", [13, 18, 28])
@pytest.mark.parametrize(("name", "keras"), [("rnn_backwards_masked", "3"), ("rnn_peephole", "2")])
def test_stacked_and_peephole_graphs_at_every_opset(name: str, keras: str, opset: int) -> None:
    model = load(name, keras).ir
    data = io(name, keras)
    proto = build_onnx(model, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    got = run(session(proto), keras_feeds(model, [data["input/0"]]))
    for k, out in enumerate(graph_output_names(model)):
        assert max_abs_error(got[out], data[f"output/{k}"]) <= ATOL


# PeepholeLSTMCell ----------------------------------------------------------------------------------------


def test_peephole_tensors_in_the_keras_and_onnx_layouts() -> None:
    model = load("rnn_peephole", "2").ir
    layer = model.node("rnn").layer
    assert layer.peephole and [k for k in layer.weights if k.startswith("P_")] == ["P_i", "P_f", "P_o"]
    keras = to_layout(model, "keras")
    assert keras["rnn/P_f"].shape == (4,)
    onnx_p = to_layout(model, "onnx")["rnn/P"]
    assert onnx_p.shape == (1, 12)
    assert PEEPHOLE_ORDER["onnx"] == ("i", "o", "f")  # the ONNX spec's P[iof]
    np.testing.assert_array_equal(onnx_p[0], np.concatenate([keras["rnn/P_i"], keras["rnn/P_o"], keras["rnn/P_f"]]))
    bidi = to_layout(model, "onnx")["bidirectional/P"]  # both directions, forward first
    assert bidi.shape == (2, 6)
    np.testing.assert_array_equal(bidi[1, 2:4], keras["bidirectional/backward/P_o"])


def test_peephole_weights_are_the_lstm_input_p_in_onnx() -> None:
    model = load("rnn_peephole", "2").ir
    proto = build_onnx(model)
    node = next(n for n in proto.graph.node if n.name == "rnn/LSTM")
    assert node.input[7] == "rnn/P"  # X, W, R, B, sequence_lens, initial_h, initial_c, P
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(weights["rnn/P"], to_layout(model, "onnx")["rnn/P"])


def test_onnxruntime_reads_p_in_the_spec_order() -> None:
    """The ONNX spec's P[iof]: with every P's o and f blocks swapped, onnxruntime no longer matches Keras,
    so the match of the unswapped graph (the fixture tests) is no luck of similar values."""
    model = load("rnn_peephole", "2").ir
    data = io("rnn_peephole", "2")
    proto = build_onnx(model)
    swapped = 0
    for init in proto.graph.initializer:
        if init.name.endswith("/P"):
            p = onnx.numpy_helper.to_array(init).copy()
            h = p.shape[1] // 3
            p[:, h : 2 * h], p[:, 2 * h :] = p[:, 2 * h :].copy(), p[:, h : 2 * h].copy()
            init.CopyFrom(onnx.numpy_helper.from_array(p, init.name))
            swapped += 1
    # rnn, rnn_1, the masked bidirectional's two forward nodes, rnn_3's peephole cell
    assert swapped == 5
    got = run(session(proto), keras_feeds(model, [data["input/0"]]))
    errors = [max_abs_error(got[name], data[f"output/{k}"]) for k, name in enumerate(graph_output_names(model))]
    assert min(errors[1:]) > 1e-3


def test_peepholes_change_the_result() -> None:
    """The fixture's recorded outputs need the peephole terms: without them the runtime is off, for the
    plain RNNs (outputs y, h, c), the Bidirectional one and the stack with a peephole cell."""
    model = load("rnn_peephole", "2").ir
    data = io("rnn_peephole", "2")
    want = [data[f"output/{k}"] for k in range(5)]

    def without_peepholes(layer):
        if isinstance(layer, Recurrent):
            return replace(layer, peephole=False)
        if isinstance(layer, Stacked):
            return replace(layer, cells=tuple(without_peepholes(c) for c in layer.cells))
        if hasattr(layer, "forward"):
            return replace(layer, forward=without_peepholes(layer.forward), backward=without_peepholes(layer.backward))
        return layer

    def errors(names: set[str]) -> list[float]:
        nodes = tuple(replace(n, layer=without_peepholes(n.layer)) if n.name in names else n for n in model.nodes)
        got, _ = Runtime(replace(model, nodes=nodes)).run({"input_1": data["input/0"]})
        return [max_abs_error(g, w) for g, w in zip(got, want, strict=True)]

    assert max(errors(set())) <= ATOL
    assert max(errors({"rnn", "rnn_1"})[:3]) > 1e-2
    assert errors({"bidirectional"})[3] > 1e-3
    assert errors({"rnn_3"})[4] > 1e-3
    assert [c.peephole for c in model.node("rnn_3").layer.cells] == [True, False]


def test_peephole_inspect_formula() -> None:
    layer = converter.inspect(K2 / "rnn_peephole.h5")["layers"][1]
    assert layer["name"] == "rnn" and layer["options"]["peephole"] is True
    assert layer["formula"] == "4*(3*4 + 4*4 + 4) + 3*4 = 140"  # the LSTM's 128 and one vector per peephole


def test_peephole_is_refused_for_pytorch(tmp_path: Path) -> None:
    target = tmp_path / "m.npz"
    with pytest.raises(UnsupportedLayer, match=r"peephole connections.*PyTorch's nn.LSTM"):
        write_npz(load("rnn_peephole", "2").ir, target, layout="pytorch")
    assert not target.exists()


# Refusals ----------------------------------------------------------------------------------------------


def _with_config(tmp_path: Path, source: Path, edit) -> Path:
    """A copy of a legacy .h5 whose model config was changed by ``edit`` (weights kept)."""
    target = tmp_path / source.name
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = json.dumps(config)
    return target


def _layer(config: dict, name: str) -> dict:
    return next(entry for entry in config["config"]["layers"] if entry["config"].get("name") == name)


def test_a_stack_inside_bidirectional_is_refused(tmp_path: Path) -> None:
    def stack_it(config: dict) -> None:
        inner = _layer(config, "bidirectional")["config"]["layer"]["config"]
        cell = inner["cell"]
        inner["cell"] = {"class_name": "StackedRNNCells", "config": {"name": "s", "cells": [cell]}}

    path = _with_config(tmp_path, K2 / "rnn_bidi.h5", stack_it)
    with pytest.raises(UnsupportedLayer, match=r"layer 'bidirectional/forward' \(RNN\).*StackedRNNCells inside"):
        converter.load(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda cell: cell.update(class_name="MinimalRNNCell"),
            r"wrapping 'MinimalRNNCell' is not supported.*LSTMCell",
        ),
        (lambda cell: cell["config"].update(dtype="mixed_float16"), r"dtype policy 'mixed_float16'"),
        (lambda cell: cell["config"].update(activation="selu_custom"), r"activation 'selu_custom' is not supported"),
    ],
    ids=["custom-cell", "mixed-precision-cell", "unknown-activation"],
)
def test_cells_that_do_not_convert_exactly_are_refused(tmp_path: Path, edit, message: str) -> None:
    path = _with_config(tmp_path, K2 / "rnn_lstm_cell.h5", lambda config: edit(_layer(config, "rnn")["config"]["cell"]))
    with pytest.raises(UnsupportedLayer, match=message):
        converter.load(path)


def test_time_major_rnn_is_refused(tmp_path: Path) -> None:
    path = _with_config(tmp_path, K2 / "rnn_lstm_cell.h5", lambda c: _layer(c, "rnn")["config"].update(time_major=True))
    with pytest.raises(UnsupportedLayer, match="layer 'rnn' \\(RNN\\): time_major=True is not supported"):
        converter.load(path)


def test_a_stack_whose_weights_do_not_fit_its_cells_is_a_bad_file(tmp_path: Path) -> None:
    def grow(config: dict) -> None:
        cells = _layer(config, "rnn")["config"]["cell"]["config"]["cells"]
        cells.append(json.loads(json.dumps(cells[-1])))  # a third cell the file has no weights for

    path = _with_config(tmp_path, K2 / "rnn_stacked.h5", grow)
    with pytest.raises(BadModelFile, match=r"too few weight arrays for cell 2 \(LSTMCell\)"):
        converter.load(path)
