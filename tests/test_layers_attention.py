"""Attention, AdditiveAttention and MultiHeadAttention: options, each Keras version's mask rule, refusals."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import converter
from converter.errors import UnsupportedLayer
from converter.export.layouts import to_layout
from converter.export.onnx_graph import build_onnx
from converter.runtime import Runtime
from tests.fixture_index import ATOL, FIXTURES, all_fixtures, max_abs_error

ATTENTION = [fx for fx in all_fixtures() if fx.name.startswith(("attn_", "mha_")) and fx.form in ("keras", "h5")]


def _with_layer(model, name: str, **changes):
    nodes = tuple(replace(n, layer=replace(n.layer, **changes)) if n.name == name else n for n in model.nodes)
    return replace(model, nodes=nodes)


def _fixture(name: str, keras: str):
    return next(fx for fx in all_fixtures() if fx.name == name and fx.keras == keras and fx.form in ("keras", "h5"))


def test_every_attention_fixture_exists_in_both_versions() -> None:
    names = {(fx.name, fx.keras) for fx in ATTENTION}
    both = {"attn_bilstm_self", "attn_additive_qv", "attn_concat_causal", "mha_embedding_bilstm"}
    assert {(n, k) for n in both | {"mha_encoder_decoder", "mha_options"} for k in "23"} <= names


@pytest.mark.parametrize("fx", ATTENTION, ids=[fx.id for fx in ATTENTION])
def test_onnx_uses_standard_ops_at_opset_13(fx) -> None:
    proto = build_onnx(converter.load(fx.path).ir)
    assert [o.version for o in proto.opset_import] == [13]
    kinds = {n.op_type for n in proto.graph.node}
    assert not kinds & {"Loop", "Scan", "If"}
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert "Softmax" in kinds


@pytest.mark.parametrize("fx", ATTENTION, ids=[fx.id for fx in ATTENTION])
def test_inspect_counts_what_keras_counts(fx) -> None:
    doc = converter.inspect(fx.path)
    assert sum(layer["params"] for layer in doc["layers"]) == fx.entry["count_params"]


@pytest.mark.parametrize("keras", ["2", "3"])
def test_fully_masked_rows_follow_each_versions_softmax(keras) -> None:
    """mha_options' attention_mask zeroes whole query rows: Keras 2 shifts scores by -1e9, Keras 3 replaces
    them and (with scores returned) zeroes the weights; the other version's rule misses the recording."""
    fx = _fixture("mha_options", keras)
    model = converter.load(fx.path).ir
    want = fx.outputs()
    got = Runtime(model).run(dict(zip([s.name for s in model.inputs], fx.inputs(), strict=True)))[0]
    assert max_abs_error(got[1], want[1]) <= ATOL
    other = {"mask_mode": "subtract", "zero_masked": False} if keras == "3" else {"zero_masked": True}
    wrong = Runtime(_with_layer(model, "mha", **other)).run(
        dict(zip([s.name for s in model.inputs], fx.inputs(), strict=True))
    )[0]
    assert max_abs_error(wrong[1], want[1]) > 1e-3


def test_keras3_mask_erasure_ambiguity_is_refused() -> None:
    path = FIXTURES / "keras3" / "mha_shared_masked.keras"
    with pytest.raises(UnsupportedLayer, match=r"removes that mask.*separate Masking layer"):
        converter.load(path)


def test_keras_layout_names_say_which_kernel_is_which() -> None:
    arrays = to_layout(converter.load(_fixture("mha_options", "3").path).ir, "keras")
    assert arrays["mha/query/kernel"].shape == (4, 3, 2)
    assert arrays["mha/key/kernel"].shape == (5, 3, 2)
    assert arrays["mha/value/kernel"].shape == (3, 3, 4)
    assert arrays["mha/attention_output/kernel"].shape == (3, 4, 5)
    assert "mha/query/bias" not in arrays  # use_bias=False


def test_pytorch_layout_refuses_shapes_nn_multiheadattention_cannot_hold() -> None:
    model = converter.load(_fixture("mha_options", "3").path).ir
    with pytest.raises(UnsupportedLayer, match=r"PyTorch's nn\.MultiheadAttention needs num_heads\*key_dim"):
        to_layout(model, "pytorch")
    packed = to_layout(converter.load(_fixture("mha_torch_packed", "2").path).ir, "pytorch")
    assert {k: v.shape for k, v in packed.items() if k.startswith("mha.")} == {
        "mha.in_proj_weight": (12, 4),
        "mha.in_proj_bias": (12,),
        "mha.out_proj.weight": (4, 4),
        "mha.out_proj.bias": (4,),
    }


def _edited(tmp_path: Path, name: str, edit) -> Path:
    config = json.loads((FIXTURES / "keras3" / f"{name}.json").read_text())
    for layer in config["config"]["layers"]:
        edit(layer)
    (tmp_path / "m.json").write_text(json.dumps(config))
    shutil.copy(FIXTURES / "keras3" / f"{name}.weights.h5", tmp_path / "m.weights.h5")
    return tmp_path / "m.weights.h5"


def test_unknown_call_argument_is_refused(tmp_path: Path) -> None:
    def edit(layer: dict) -> None:
        if layer["class_name"] == "Attention":
            layer["inbound_nodes"][0]["kwargs"]["temperature"] = 2.0

    with pytest.raises(UnsupportedLayer, match="'attention' \\(Attention\\): the call argument\\(s\\) temperature"):
        converter.load(_edited(tmp_path, "attn_bilstm_self", edit))


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("use_gate", True, "use_gate=True"),
        ("attention_axes", [1, 2], "attention_axes"),
        ("output_shape", [2, 3], "output_shape"),
    ],
)
def test_unsupported_mha_options_are_refused(tmp_path: Path, key: str, value, words: str) -> None:
    def edit(layer: dict) -> None:
        if layer["class_name"] == "MultiHeadAttention":
            layer["config"][key] = value

    with pytest.raises(UnsupportedLayer, match=f"'mha' \\(MultiHeadAttention\\): {words}"):
        converter.load(_edited(tmp_path, "mha_torch_packed", edit))


def test_tensor_keyword_the_layer_does_not_take_is_refused(tmp_path: Path) -> None:
    def edit(layer: dict) -> None:
        if layer["class_name"] == "MultiHeadAttention":
            node = layer["inbound_nodes"][0]
            node["kwargs"]["query_mask"] = node["args"][0]

    with pytest.raises(UnsupportedLayer, match="tensor for 'query_mask'; only value, key, attention_mask"):
        converter.load(_edited(tmp_path, "mha_torch_packed", edit))


def test_cross_attention_reads_keyword_query_value_key() -> None:
    model = converter.load(_fixture("mha_encoder_decoder", "3").path).ir
    node = model.node("cross")
    assert node.layer.inputs == ("query", "value", "key")
    assert [r.node for r in node.inputs] == ["decoder", "encoder", "encoder"]
    assert np.shape(node.layer.weights["query/kernel"]) == (4, 2, 2)
