"""npz and JSON exports in every layout: they validate, read back into a model that reproduces Keras' outputs,
keep every tensor bit-exact, and say clearly what is wrong with a bad file."""

from __future__ import annotations

import functools
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

import converter
from converter import ir
from converter.errors import BadInputs, BadModelFile, BadOptions, UnsupportedLayer
from converter.export.description import describe, undescribe
from converter.export.json_doc import read_json, write_json
from converter.export.layouts import LAYOUTS, load_layer, to_layout
from converter.export.npz import read_npz, write_npz
from converter.layers import OP_TYPES
from converter.runtime import Runtime
from converter.runtime.graph import as_feeds
from tests.fixture_index import ATOL, ROOT, max_abs_error, one_form_each

FIXTURES = one_form_each()
#: fixtures with a layer torch.nn cannot compute exactly (non-default gate activations, GRU reset_after=False)
PYTORCH_REFUSED = {"gru_reset_before", "activations_lstm", "activations_gru", "activations_more", "no_bias"}
# GRU reset_after=False; stacks of unequal cells (no one multi-layer torch module); peepholes.
PYTORCH_REFUSED |= {"rnn_gru_cell", "rnn_stacked_mixed", "rnn_backwards_masked", "rnn_peephole"}
PYTORCH_REFUSED |= {"bn_axis_list", "ln_rms"}  # BatchNormalization over two axes; LayerNormalization(rms_scaling)
# MultiHeadAttention shapes nn.MultiheadAttention cannot hold (heads*key_dim != features, value_dim, output_shape)
PYTORCH_REFUSED |= {"mha_embedding_bilstm", "mha_options", "mha_robust", "mha_sliding"}
SCHEMAS = ROOT / "schemas"


def _schema_validator(name: str) -> Draft202012Validator:
    schemas = [json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")]
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas if "$id" in s)
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry)


MODEL_SCHEMA = _schema_validator("model.schema.json")
EXPORT_SCHEMA = _schema_validator("export.schema.json")


@functools.cache
def _load(path: Path, config: Path | None) -> ir.Model:
    return converter.load(path, config=config).ir


def model_of(fx) -> ir.Model:
    return _load(fx.path, fx.config)


def fixture(name: str, keras: str = "3"):
    return next(f for f in FIXTURES if f.name == name and f.keras == keras)


def assert_same_model(a: ir.Model, b: ir.Model) -> None:
    """Equal architecture (every IR field, via the keras-layout description) and bit-identical tensors."""
    assert describe(a, "keras") == describe(b, "keras")
    ta, tb = to_layout(a, "keras"), to_layout(b, "keras")
    assert ta.keys() == tb.keys()
    for key in ta:
        assert ta[key].dtype == tb[key].dtype == np.float32
        assert ta[key].shape == tb[key].shape and ta[key].tobytes() == tb[key].tobytes(), key


def assert_matches_keras(model: ir.Model, fx) -> None:
    runtime = Runtime(model)
    calls = (1, 2) if fx.entry["stateful"] else (1,)
    for call in calls:  # the stateful fixture's second call continues from the first one's states
        got, _ = runtime.run(as_feeds(model, fx.inputs(call=call), fx.id))
        want = fx.outputs(call=call)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert max_abs_error(g, w) <= ATOL


CASES = [(fx, layout) for fx in FIXTURES for layout in LAYOUTS]


@pytest.mark.parametrize("fx,layout", CASES, ids=[f"{fx.id}-{layout}" for fx, layout in CASES])
def test_round_trip_matches_keras(fx, layout, tmp_path) -> None:
    model = model_of(fx)
    inputs = as_feeds(model, fx.inputs(), fx.id)
    outputs = dict(zip(model.output_names, fx.outputs(), strict=True))
    npz, doc_path = tmp_path / "m.npz", tmp_path / "m.json"
    if layout == "pytorch" and fx.name in PYTORCH_REFUSED:
        for write, path in ((write_npz, npz), (write_json, doc_path)):
            with pytest.raises(UnsupportedLayer, match="PyTorch"):
                write(model, path, layout=layout, test_inputs=inputs, test_outputs=outputs)
            assert not path.exists()
        buffer = io.BytesIO()
        with pytest.raises(UnsupportedLayer):
            write_npz(model, buffer, layout=layout)
        assert buffer.getvalue() == b""
        return
    write_npz(model, npz, layout=layout, test_inputs=inputs, test_outputs=outputs)
    write_json(model, doc_path, layout=layout, test_inputs=inputs, test_outputs=outputs)

    with np.load(npz, allow_pickle=False) as data:  # no pickles anywhere in the file
        entries = {key: data[key] for key in data.files}
    description = json.loads(str(entries["__model__"]))
    MODEL_SCHEMA.validate(description)
    assert description["layout"] == layout
    listed = {t["key"]: t["shape"] for n in description["nodes"] for t in n["tensors"]}
    tests = {f"__test__/inputs/{k}" for k in inputs} | {f"__test__/outputs/{k}" for k in outputs}
    assert set(entries) == {"__model__"} | set(listed) | tests
    assert all(list(entries[k].shape) == shape and entries[k].dtype == np.float32 for k, shape in listed.items())
    document = json.loads(doc_path.read_text())
    EXPORT_SCHEMA.validate(document)
    assert document["model"] == description

    for read in (read_npz, read_json):
        rebuilt, vector = read(npz if read is read_npz else doc_path)
        assert_matches_keras(rebuilt, fx)
        assert_same_model(rebuilt, model)  # keras -> IR -> layout -> IR keeps every bit
        assert vector is not None
        for name, array in (inputs | outputs).items():
            back = (vector.inputs | vector.outputs)[name]
            assert back.dtype == array.dtype and back.shape == array.shape and back.tobytes() == array.tobytes()


def test_every_fixture_and_layer_kind_is_covered() -> None:
    kinds = {type(n.layer) for fx in FIXTURES for n in model_of(fx).nodes}
    assert kinds == set(OP_TYPES.values())  # every registered op, and nothing else, has a fixture
    assert any(n.mask is not None for fx in FIXTURES for n in model_of(fx).nodes)
    assert {fx.name for fx in FIXTURES} >= PYTORCH_REFUSED


@pytest.mark.parametrize("keras", ["2", "3"])
def test_tutorial_keys_and_gate_blocks(keras) -> None:
    model = model_of(fixture("tutorial", keras))
    k, o, t = (to_layout(model, layout) for layout in LAYOUTS)
    names = [f"{p}_{g}" for p in "WUb" for g in "ifco"]
    assert list(k) == [f"lstm/{n}" for n in names] + ["dense/W", "dense/b"]
    assert k["lstm/W_i"].shape == (3, 5) and k["lstm/U_f"].shape == (5, 5) and k["lstm/b_o"].shape == (5,)
    assert k["dense/W"].shape == (5, 1) and k["dense/b"].shape == (1,)

    assert {key: a.shape for key, a in o.items()} == {
        "lstm/W": (1, 20, 3), "lstm/R": (1, 20, 5), "lstm/B": (1, 40), "dense/W": (5, 1), "dense/b": (1,)
    }  # fmt: skip
    for n, gate in enumerate("iofc"):  # ONNX order i, o, f, c; rows are gate units, so blocks are transposed
        rows = slice(5 * n, 5 * n + 5)
        np.testing.assert_array_equal(o["lstm/W"][0, rows], k[f"lstm/W_{gate}"].T)
        np.testing.assert_array_equal(o["lstm/R"][0, rows], k[f"lstm/U_{gate}"].T)
        np.testing.assert_array_equal(o["lstm/B"][0, rows], k[f"lstm/b_{gate}"])
    assert not o["lstm/B"][0, 20:].any()  # Rb: Keras has one LSTM bias

    assert {key: a.shape for key, a in t.items()} == {
        "lstm.weight_ih_l0": (20, 3), "lstm.weight_hh_l0": (20, 5), "lstm.bias_ih_l0": (20,),
        "lstm.bias_hh_l0": (20,), "dense.weight": (1, 5), "dense.bias": (1,),
    }  # fmt: skip
    for n, gate in enumerate("ifco"):  # PyTorch order i, f, g, o
        rows = slice(5 * n, 5 * n + 5)
        np.testing.assert_array_equal(t["lstm.weight_ih_l0"][rows], k[f"lstm/W_{gate}"].T)
        np.testing.assert_array_equal(t["lstm.bias_ih_l0"][rows], k[f"lstm/b_{gate}"])
    assert not t["lstm.bias_hh_l0"].any()
    np.testing.assert_array_equal(t["dense.weight"], k["dense/W"].T)


def test_gru_biases_in_each_layout() -> None:
    k, o, t = (to_layout(model_of(fixture("gru_reset_after")), layout) for layout in LAYOUTS)
    assert o["gru/W"].shape == (1, 15, 3) and o["gru/B"].shape == (1, 30)
    for n, gate in enumerate("zrh"):  # ONNX z, r, h: input bias in Wb, recurrent bias in Rb
        np.testing.assert_array_equal(o["gru/B"][0, 5 * n : 5 * n + 5], k[f"gru/b_{gate}"])
        np.testing.assert_array_equal(o["gru/B"][0, 15 + 5 * n : 20 + 5 * n], k[f"gru/rb_{gate}"])
        np.testing.assert_array_equal(o["gru/W"][0, 5 * n : 5 * n + 5], k[f"gru/W_{gate}"].T)
    for n, gate in enumerate("rzh"):  # PyTorch r, z, n
        np.testing.assert_array_equal(t["gru.weight_hh_l0"][5 * n : 5 * n + 5], k[f"gru/U_{gate}"].T)
        np.testing.assert_array_equal(t["gru.bias_hh_l0"][5 * n : 5 * n + 5], k[f"gru/rb_{gate}"])
    before = model_of(fixture("gru_reset_before"))
    ob = to_layout(before, "onnx")
    assert "gru/rb_z" not in to_layout(before, "keras") and not ob["gru/B"][0, 15:].any()
    meaning = describe(before, "onnx")["nodes"][0]["tensors"][2]["meaning"]
    assert "linear_before_reset=0" in meaning


def test_bidirectional_time_distributed_embedding_and_no_bias_keys() -> None:
    bidi = model_of(fixture("bidi_concat", "2"))
    k, o, t = (to_layout(bidi, layout) for layout in LAYOUTS)
    assert k["bidirectional/forward/W_i"].shape == (3, 4) and "bidirectional/backward/U_o" in k
    np.testing.assert_array_equal(o["bidirectional/W"][1, 4:8], k["bidirectional/backward/W_o"].T)
    assert o["bidirectional/W"].shape == (2, 16, 3) and o["bidirectional/B"].shape == (2, 32)
    np.testing.assert_array_equal(t["bidirectional.weight_hh_l0_reverse"][8:12], k["bidirectional/backward/U_c"].T)
    assert to_layout(model_of(fixture("stacked")), "keras")["time_distributed/W"].shape == (6, 3)
    emb = model_of(fixture("embedding"))
    assert to_layout(emb, "keras")["embedding/E"].shape == (20, 6)
    assert to_layout(emb, "pytorch")["embedding.weight"].shape == (20, 6)
    rnn = to_layout(model_of(fixture("simple_rnn")), "onnx")
    assert rnn["simple_rnn/W"].shape == (1, 4, 2) and rnn["simple_rnn/B"].shape == (1, 8)
    for layout in ("keras", "onnx"):
        keys = to_layout(model_of(fixture("no_bias")), layout)
        assert not [key for key in keys if key.rsplit("/", 1)[-1] in ("B", "b") or "/b_" in key or "/rb_" in key]


def test_description_reads_like_the_tutorials() -> None:
    doc = describe(model_of(fixture("tutorial")), "keras")
    lstm = doc["nodes"][0]
    assert (lstm["type"], lstm["class"], lstm["config"]["units"], lstm["config"]["input_dim"]) == (
        "recurrent",
        "LSTM",
        5,
        3,
    )
    meanings = {t["key"]: t["meaning"] for t in lstm["tensors"]}
    assert meanings["lstm/W_f"] == "input kernel of the forget gate (input_dim x units)"
    assert meanings["lstm/U_c"] == "recurrent kernel of the cell candidate (units x units)"
    assert doc["source"] == {"file": "tutorial.keras", "keras_version": "3.15.1"}
    assert doc["outputs"] == [{"name": "dense", "node": "dense", "index": 0}]
    masked = describe(model_of(fixture("masked_states")), "onnx")
    by_name = {n["name"]: n for n in masked["nodes"]}
    assert by_name["not_equal"]["type"] == "not_equal" and by_name["any"]["config"] == {"axis": -1, "keepdims": False}
    assert by_name["lstm"]["mask"] == {"node": "any", "index": 0}
    assert describe(model_of(fixture("open_time")), "keras")["inputs"][0]["shape"] == [None, 3]
    init = describe(model_of(fixture("initial_state")), "pytorch")
    assert [r["node"] for r in init["nodes"][0]["initial_state"]] == ["h0", "c0"]


def test_pytorch_refusal_names_layer_option_and_what_torch_supports() -> None:
    with pytest.raises(UnsupportedLayer) as info:
        describe(model_of(fixture("gru_reset_before")), "pytorch")
    assert (
        "'gru'" in str(info.value) and "reset_after=False" in str(info.value) and "reset_after=True" in str(info.value)
    )
    with pytest.raises(UnsupportedLayer) as info:
        describe(model_of(fixture("activations_lstm")), "pytorch")
    assert "'lstm'" in str(info.value) and "hard_sigmoid" in str(info.value) and "sigmoid" in str(info.value)


def _dense_model(weights: np.ndarray) -> ir.Model:
    layer = ir.Dense(weights.shape[1], "linear", False, {"W": weights})
    node = ir.Node("dense", "Dense", layer, (ir.TensorRef("x"),))
    spec = ir.InputSpec("x", (weights.shape[0],))
    return ir.Model("m", (spec,), (node,), (ir.TensorRef("dense"),), ("dense",), "3.15.1", "m.keras")


def test_json_float32_is_bit_exact_including_extremes(tmp_path) -> None:
    extremes = np.array(
        [1e-38, 3.4e38, -3.4028235e38, 1.1754944e-38, 1e-45, -1e-45, 1.1754942e-38, 0.0, -0.0, 0.1, 1 / 3, 1.0, -2.5],
        np.float32,
    )
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([extremes, bits[np.isfinite(bits)]])
    values = np.concatenate([values, np.zeros((-len(values)) % 8, np.float32)]).reshape(-1, 8)
    model = _dense_model(values)
    for target in (tmp_path / "m.json", io.StringIO()):  # a path, or a text stream
        write_json(model, target, layout="onnx")
        source = target if isinstance(target, Path) else io.StringIO(target.getvalue())
        back = read_json(source)[0].node("dense").layer.weights["W"]
        assert back.dtype == np.float32 and back.tobytes() == values.tobytes()
    assert np.signbit(back.reshape(-1)[8]) and np.isclose(back.reshape(-1)[4], 1e-45, rtol=0, atol=0)


def test_json_refuses_nan_and_npz_keeps_it(tmp_path) -> None:
    model = _dense_model(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(BadOptions, match="NaN"):
        write_json(model, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()
    write_npz(model, tmp_path / "m.npz")
    assert np.isnan(read_npz(tmp_path / "m.npz")[0].node("dense").layer.weights["W"][0, 0])


def test_test_vector_must_fit_the_model(tmp_path) -> None:
    model = model_of(fixture("tutorial"))
    with pytest.raises(BadInputs, match="input_layer"):
        write_npz(
            model, tmp_path / "m.npz", test_inputs={"x": np.zeros((1, 4, 3))}, test_outputs={"dense": np.zeros(1)}
        )
    write_npz(model, tmp_path / "m.npz")
    assert read_npz(tmp_path / "m.npz")[1] is None


def test_integer_test_vectors_keep_their_dtype(tmp_path) -> None:
    fx = fixture("embedding", "2")
    model = model_of(fx)
    ids = {model.inputs[0].name: fx.inputs()[0].astype(np.uint8)}
    outputs = dict(zip(model.output_names, fx.outputs(), strict=True))
    for write, read, path in ((write_npz, read_npz, tmp_path / "m.npz"), (write_json, read_json, tmp_path / "m.json")):
        write(model, path, test_inputs=ids, test_outputs=outputs)
        back = read(path)[1].inputs[model.inputs[0].name]
        assert back.dtype == np.uint8 and np.array_equal(back, ids[model.inputs[0].name])
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["test"]["inputs"][model.inputs[0].name]["data"][0] = -1
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(BadModelFile, match="outside the range of uint8"):
        read_json(tmp_path / "bad.json")


# --- bad files -------------------------------------------------------------------------------------------


def _npz_entries(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _rewrite(path: Path, entries: dict[str, np.ndarray]) -> Path:
    np.savez(path, **entries)
    return path


@pytest.fixture
def tutorial_npz(tmp_path) -> Path:
    path = tmp_path / "tutorial.npz"
    write_npz(model_of(fixture("tutorial")), path, layout="onnx")
    return path


def _doc_with(entries, change) -> dict[str, np.ndarray]:
    doc = json.loads(str(entries["__model__"]))
    change(doc)
    return entries | {"__model__": np.array(json.dumps(doc))}


BAD_NPZ = {
    "no description": (lambda e: {k: v for k, v in e.items() if k != "__model__"}, "no '__model__'"),
    "missing tensor": (lambda e: {k: v for k, v in e.items() if k != "lstm/R"}, "'lstm/R'.*missing"),
    "misshaped tensor": (lambda e: e | {"lstm/R": e["lstm/R"][:, :4]}, r"'lstm/R' has shape \(1, 4, 5\)"),
    "float64 tensor": (lambda e: e | {"dense/W": e["dense/W"].astype(np.float64)}, "'dense/W' is float64"),
    "object array": (lambda e: e | {"dense/b": np.array([{}], dtype=object)}, "'dense/b' holds Python objects"),
    "bad units": (lambda e: _doc_with(e, lambda d: d["nodes"][0]["config"].update(units="5")), "nodes/0/config/units"),
    "newer version": (lambda e: _doc_with(e, lambda d: d.update(format_version=2)), "format_version 2"),
    "unknown input": (
        lambda e: _doc_with(e, lambda d: d["nodes"][1]["inputs"][0].update(node="nope")),
        "node 'dense' reads 'nope'",
    ),
    "unknown activation": (
        lambda e: _doc_with(e, lambda d: d["nodes"][1]["config"].update(activation="sparkle")),
        "unknown activation 'sparkle'",
    ),
    "wrong listed shape": (
        lambda e: _doc_with(e, lambda d: d["nodes"][0]["tensors"][0].update(shape=[1, 20, 4])),
        r"'lstm/W' is described with shape \[1, 20, 4\]",
    ),
    "not json": (lambda e: e | {"__model__": np.array("{")}, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz_is_a_clear_bad_model_file(case, tutorial_npz, tmp_path) -> None:
    change, message = BAD_NPZ[case]
    bad = tmp_path / "bad.npz"
    entries = change(_npz_entries(tutorial_npz))
    if case == "object array":
        np.savez(bad, **entries, allow_pickle=True)
    else:
        _rewrite(bad, entries)
    with pytest.raises(BadModelFile, match=message) as info:
        read_npz(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_unreadable_npz_files(tmp_path) -> None:
    for name, content in (("trunc.npz", b"PK\x03\x04garbage"), ("text.npz", b"hello")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BadModelFile, match=name):
            read_npz(tmp_path / name)
    with pytest.raises(BadModelFile, match="no such file"):
        read_npz(tmp_path / "absent.npz")


def test_bad_json_is_a_clear_bad_model_file(tmp_path) -> None:
    good = tmp_path / "good.json"
    write_json(model_of(fixture("tutorial")), good, layout="keras")
    text = good.read_text()
    doc = json.loads(text)

    def with_tensors(tensors: dict) -> str:
        return json.dumps(doc | {"tensors": tensors})

    def one_bias(data: list) -> str:
        return with_tensors(doc["tensors"] | {"dense/b": {"shape": [1], "dtype": "float32", "data": data}})

    cases = {
        "truncated": (text[: len(text) // 2], "not valid JSON"),
        "nan": (text.replace('"data": [', '"data": [NaN,', 1), "not valid JSON"),
        "count": (one_bias([1, 2]), "has 2 values"),
        "strings": (one_bias(["1"]), "flat list of numbers"),
        "range": (one_bias([1e39]), "outside the range"),
        "extra": (
            with_tensors(doc["tensors"] | {"x/W": {"shape": [0], "dtype": "float32", "data": []}}),
            "'x/W' is not",
        ),
        "missing": (with_tensors({k: v for k, v in doc["tensors"].items() if k != "lstm/U_o"}), "'lstm/U_o'.*missing"),
        "not ours": (json.dumps({"hello": 1}), "not an lstm-convert JSON export"),
        "schema": (with_tensors([]), "invalid lstm-convert document at tensors"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.json"
        bad.write_text(content)
        with pytest.raises(BadModelFile, match=message):
            read_json(bad)


def test_onnx_layout_folds_a_second_lstm_bias() -> None:
    """A hand-made file may split the LSTM bias over Wb and Rb; Keras' single bias is their sum."""
    model = model_of(fixture("tutorial"))
    arrays = to_layout(model, "onnx")
    arrays["lstm/B"] = arrays["lstm/B"].copy()
    arrays["lstm/B"][0, 20:] = 0.5
    doc = describe(model, "onnx")
    rebuilt = undescribe(doc, arrays)
    want = model.node("lstm").layer.weights["b_o"] + np.float32(0.5)
    np.testing.assert_array_equal(rebuilt.node("lstm").layer.weights["b_o"], want)


# --- property: layouts are lossless for any recurrent layer they accept -----------------------------------


def _random_recurrent(kind: str, units: int, input_dim: int, use_bias: bool, reset_after: bool, seed: int):
    rng = np.random.default_rng(seed)
    gates = {"lstm": "ifco", "gru": "zrh", "simple_rnn": [""]}[kind]
    prefixes = ["W", "U"] + (["b"] if use_bias else []) + (["rb"] if use_bias and kind == "gru" and reset_after else [])
    shapes = {"W": (input_dim, units), "U": (units, units), "b": (units,), "rb": (units,)}

    def tensor(shape):
        bits = rng.integers(0, 2**32, int(np.prod(shape)), dtype=np.uint64).astype(np.uint32).view(np.float32)
        bits[~np.isfinite(bits)] = -0.0  # keep the awkward zero in play
        return bits.reshape(shape)

    weights = {f"{p}_{g}" if g else p: tensor(shapes[p]) for p in prefixes for g in gates}
    rec = "sigmoid" if kind != "simple_rnn" else None
    return ir.Recurrent(
        kind, units, input_dim, "tanh", rec, use_bias, True, False, False, False, reset_after, False, weights
    )


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["lstm", "gru", "simple_rnn"]),
    units=st.integers(1, 4),
    input_dim=st.integers(1, 4),
    use_bias=st.booleans(),
    reset_after=st.booleans(),
    bidirectional=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_layouts_round_trip_random_gate_tensors(kind, units, input_dim, use_bias, reset_after, bidirectional, seed):
    reset_after = reset_after and kind == "gru"
    fw = _random_recurrent(kind, units, input_dim, use_bias, reset_after, seed)
    layer: ir.Layer = fw
    if bidirectional:
        bw = replace(_random_recurrent(kind, units, input_dim, use_bias, reset_after, seed + 1), go_backwards=True)
        layer = ir.Bidirectional(fw, bw, "concat")
    node = ir.Node("rnn", "LSTM", layer, (ir.TensorRef("x"),))
    model = ir.Model("m", (ir.InputSpec("x", (3, input_dim)),), (node,), (ir.TensorRef("rnn"),), ("rnn",), "3", "m")
    for layout in LAYOUTS:
        if layout == "pytorch" and kind == "gru" and not reset_after:
            with pytest.raises(UnsupportedLayer):
                to_layout(model, layout)
            continue
        arrays = to_layout(model, layout)
        bare = ir.recurrent_directions(layer)
        empty = {d: replace(r, weights={}) for d, r in bare.items()}
        skeleton = (
            replace(layer, weights={})
            if not bidirectional
            else replace(layer, forward=empty["forward"], backward=empty["backward"])
        )
        back = load_layer(replace(node, layer=skeleton), layout, arrays, "property")
        for d, original in bare.items():
            rebuilt = ir.recurrent_directions(back)[d]
            assert rebuilt.weights.keys() == original.weights.keys()
            for name, array in original.weights.items():
                assert rebuilt.weights[name].tobytes() == array.tobytes(), (layout, d, name)
