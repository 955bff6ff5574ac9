"""Nested models are flattened with their path in every name; shared layers keep one copy of their weights."""

from __future__ import annotations

import numpy as np

import converter
from converter.export.layouts import to_layout
from converter.export.onnx_graph import build_onnx
from tests.fixture_index import FIXTURES


def test_nested_layers_keep_their_path_in_node_and_tensor_names() -> None:
    model = converter.load(FIXTURES / "keras3/nested_models.keras").ir
    names = [node.name for node in model.nodes]
    assert {"encoder/lstm", "encoder/dense", "head/g", "shared", "shared/call_1"} <= set(names)
    keys = set(to_layout(model, "keras"))
    assert {"encoder/lstm/W_i", "encoder/lstm/U_o", "head/g/rb_z", "shared/W"} <= keys
    assert not any(k.startswith("shared/call_1") for k in keys)  # the second call owns no copy


def test_every_file_form_reads_the_same_nested_weights() -> None:
    forms = [
        converter.load(FIXTURES / "keras3/nested_models.keras").ir,
        converter.load(FIXTURES / "keras3/nested_models.h5").ir,
        converter.load(FIXTURES / "keras3/nested_models.weights.h5", config=FIXTURES / "keras3/nested_models.json").ir,
    ]
    reference = to_layout(forms[0], "keras")
    for model in forms[1:]:
        other = to_layout(model, "keras")
        assert sorted(other) == sorted(reference)
        assert all(np.array_equal(other[k], reference[k]) for k in reference)


def test_a_shared_encoder_is_one_set_of_weights_in_every_export() -> None:
    for path in ("keras3/siamese.keras", "keras2/siamese.h5"):
        model = converter.load(FIXTURES / path).ir
        shared = [node for node in model.nodes if node.weights_of]
        assert {node.name for node in shared} == {"encoder/call_1/lstm", "encoder/call_1/gru"}
        assert all(model.node(node.weights_of).layer is node.layer for node in shared)
        proto = build_onnx(model)
        kernels = [t.name for t in proto.graph.initializer if t.name.endswith(("/W", "/R"))]
        assert sorted(kernels) == ["dense/W", "encoder/gru/R", "encoder/gru/W", "encoder/lstm/R", "encoder/lstm/W"]
        summary = converter.inspect(FIXTURES / path)
        assert summary["total_params"] == 216  # count_params(): the encoder counted once
        assert "shares the weights of 'encoder/lstm'" in {layer["formula"] for layer in summary["layers"]}


def test_shared_layer_round_trips_through_npz(tmp_path) -> None:
    path = tmp_path / "s.npz"
    converter.to_npz(FIXTURES / "keras3/shared_lstm.keras", path, oracle="numpy")
    back = converter.load(path).ir
    calls = [node for node in back.nodes if node.weights_of == "shared_lstm"]
    assert len(calls) == 3 and all(node.layer is back.node("shared_lstm").layer for node in calls)
    assert converter.verify(path).passed
