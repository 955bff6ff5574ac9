"""Which mask a layer call computes with: Keras 3 and Keras 2 differ for RNNs called with initial states.

Keras 3 passes a call the mask of its input only when the call has one tensor argument (or ``mask=``
is given); Keras 2 always applies the first input's mask (issue 18). The numbers are checked against
Keras' recorded outputs by the parametrised suites; these tests pin the rule itself and show that the
fixtures tell the two rules apart.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest

import converter
from converter import ir
from converter.export.description import describe, undescribe
from converter.export.npz import write_npz
from converter.export.onnx_graph import build_onnx
from converter.runtime import Runtime
from converter.runtime.graph import as_feeds
from tests.fixture_index import ATOL, FIXTURES, all_fixtures, max_abs_error

FIXTURE_LIST = all_fixtures()

#: Fixtures with a masked RNN called with initial states, in both Keras versions.
STATE_MASKS = [
    "state_mask_dense",
    "state_mask_inputs",
    "embedding_gru_state",
    "bidi_state_mask",
    "state_mask_downstream",
    "seq2seq_masked",
    "state_mask_full",
]
CASES = [fx for fx in FIXTURE_LIST if fx.name in STATE_MASKS]


def _fixture(name: str, keras: str, form: str | None = None):
    return next(f for f in CASES if f.name == name and f.keras == keras and form in (None, f.form))


def _run(model: ir.Model, fx) -> list[np.ndarray]:
    return Runtime(model).run(as_feeds(model, fx.inputs(), fx.id))[0]


def test_every_issue_18_fixture_exists_in_both_versions() -> None:
    assert {(fx.name, fx.keras) for fx in CASES} == {(n, k) for n in STATE_MASKS for k in "23"}


@pytest.mark.parametrize("fx", CASES, ids=[fx.id for fx in CASES])
def test_initial_state_call_gets_no_mask_in_keras3_and_the_mask_in_keras2(fx) -> None:
    model = converter.load(fx.path, config=fx.config).ir
    with_states = [n for n in model.recurrent_nodes if n.initial_state]
    assert with_states
    for node in with_states:
        assert node.mask is None
        assert node.receives_mask is (fx.keras == "2"), node.name
    for node in model.nodes:  # every other call receives the mask flowing in, as in both versions
        if node not in with_states:
            assert node.receives_mask, node.name


@pytest.mark.parametrize("fx", [fx for fx in CASES if fx.form in ("keras", "h5")], ids=lambda fx: fx.id)
def test_the_other_versions_rule_would_be_wrong(fx) -> None:
    """The fixtures discriminate: with the other version's rule the outputs leave Keras' by far."""
    model = converter.load(fx.path, config=fx.config).ir
    flipped = tuple(replace(n, receives_mask=not n.receives_mask) if n.initial_state else n for n in model.nodes)
    right, wrong = _run(model, fx), _run(replace(model, nodes=flipped), fx)
    want = fx.outputs()
    assert all(max_abs_error(g, w) <= ATOL for g, w in zip(right, want, strict=True))
    assert max(max_abs_error(g, w) for g, w in zip(wrong, want, strict=True)) > 0.01


def test_keras3_positional_states_are_initial_states() -> None:
    """``GRU(4)(m, [h0])``: Keras 3 records the states as the second positional argument."""
    for keras in "23":
        node = converter.load(_fixture("state_mask_inputs", keras).path).ir.node("gru")
        assert node.inputs == (ir.TensorRef("masking"),)
        assert node.initial_state == (ir.TensorRef("h0"),)


def test_keras3_call_recorded_without_mask_still_receives_the_flowing_mask() -> None:
    """``GRU(...)(y, training=False)`` is saved without ``mask``; Keras 3 fills it in when it runs."""
    fx = _fixture("state_mask_downstream", "3", "keras")
    node = converter.load(fx.path).ir.node("quirk")
    config = json.loads((FIXTURES / fx.entry["files"]["config"]).read_text())
    saved = next(layer for layer in config["config"]["layers"] if layer["name"] == "quirk")
    assert "mask" not in saved["inbound_nodes"][0]["kwargs"]
    assert node.mask is None and node.receives_mask
    first = converter.load(fx.path).ir.node("first")
    assert not first.receives_mask  # ... while the LSTM it reads from computed unmasked


def test_explicit_mask_with_initial_state_is_applied() -> None:
    fx = next(f for f in FIXTURE_LIST if f.name == "state_mask_explicit" and f.form == "keras")
    node = converter.load(fx.path).ir.node("rnn")
    assert node.mask is not None and node.receives_mask
    got = converter.load(fx.path).predict(fx.inputs())
    assert max_abs_error(got, fx.outputs()[0]) <= ATOL


def test_keras3_functional_recurrent_calls_follow_the_saved_arguments() -> None:
    """Over every Keras 3 config: an RNN call gets no mask exactly when it has states and no mask=."""
    checked = 0
    for fx in FIXTURE_LIST:
        if fx.keras != "3" or fx.form != "keras":
            continue
        config = json.loads((FIXTURES / fx.entry["files"]["config"]).read_text())
        if config["class_name"] == "Sequential":
            continue
        model = converter.load(fx.path).ir
        for layer in config["config"]["layers"]:
            if layer["class_name"] not in ("LSTM", "GRU", "SimpleRNN", "Bidirectional"):
                continue
            call = layer["inbound_nodes"][0]
            states = len(call["args"]) > 1 or call["kwargs"].get("initial_state") is not None
            given = isinstance(call["kwargs"].get("mask"), dict)
            assert model.node(layer["name"]).receives_mask is (given or not states), (fx.id, layer["name"])
            checked += 1
    assert checked > 20


def _sequence_lens(proto: onnx.ModelProto, name: str) -> str:
    node = next(n for n in proto.graph.node if n.op_type == "LSTM" and n.name.startswith(name))
    return node.input[4] if len(node.input) > 4 else ""


def test_onnx_lstm_with_states_has_no_sequence_lens_in_keras3_only() -> None:
    k3 = build_onnx(converter.load(_fixture("state_mask_dense", "3", "keras").path).ir)
    k2 = build_onnx(converter.load(_fixture("state_mask_dense", "2").path).ir)
    assert _sequence_lens(k3, "rnn") == ""
    assert _sequence_lens(k2, "rnn") != ""


def test_description_carries_the_flag_and_defaults_to_receiving(tmp_path) -> None:
    fx = _fixture("seq2seq_masked", "3", "keras")
    model = converter.load(fx.path).ir
    path = tmp_path / "m.npz"
    write_npz(model, path)
    assert not converter.load(path).ir.node("decoder").receives_mask
    assert converter.load(path).ir.node("encoder").receives_mask
    doc = describe(model, "keras")
    assert [n["receives_mask"] for n in doc["nodes"] if n["name"] in ("encoder", "decoder")] == [True, False]
    with np.load(path, allow_pickle=False) as data:
        tensors = {k: data[k] for k in data.files if not k.startswith("__")}
    for node in doc["nodes"]:  # a description written before the flag existed
        del node["receives_mask"]
    assert undescribe(doc, tensors).node("decoder").receives_mask
