"""The ONNX export computes what Keras computed: every fixture, masks of any shape, states across calls.

Oracles: Keras' recorded outputs (fixtures), and the NumPy runtime (proven against Keras in
test_runtime.py) for inputs Keras never saw: hand-made masks, chunked streams, synthetic layers.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import converter
from converter import ir
from converter.activations import supported_activations
from converter.errors import BadOptions, UnsupportedLayer
from converter.export.onnx_graph import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    build_onnx,
    graph_output_names,
    state_io_names,
)
from converter.gates import CANONICAL, gate_tensor_name
from converter.layers.recurrent.onnx_weights import expressible_activations
from converter.runtime import Runtime
from tests.fixture_index import ATOL, ROOT, max_abs_error, one_form_each

FIXTURES = one_form_each()
#: fixture -> (refused layer, its activation per Keras version): ONNX's recurrent ops cannot compute these.
REFUSED = {
    "activations_gru": ("simple_rnn", {"2": "selu", "3": "selu"}),
    "activations_more": ("lstm", {"2": "swish", "3": "silu"}),
}
RECURRENT_OPS = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "RNN"}


# Helpers ----------------------------------------------------------------------------------------------


@functools.cache
def load_ir(name: str, keras: str) -> ir.Model:
    fx = fixture(name, keras)
    return converter.load(fx.path, config=fx.config).ir


def fixture(name: str, keras: str):
    return next(f for f in FIXTURES if f.name == name and f.keras == keras)


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3  # state inputs with defaults make ORT warn about const folding
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs by graph name; inputs cast to the declared type (Keras' int32 ids to int64).

    State inputs are required plain inputs (listed by ``get_inputs()``); those not in ``feeds`` get zeros
    of (batch, units), a fresh stream.
    """
    inputs = {i.name: i for i in sess.get_inputs()}
    assert not sess.get_overridable_initializers()  # no input has a hidden default
    batch = next(iter(feeds.values())).shape[0]
    cast = {k: v.astype(np.int64 if inputs[k].type == "tensor(int64)" else np.float32) for k, v in feeds.items()}
    for name, spec in inputs.items():
        if name not in cast and name.endswith(("/h0", "/c0")):
            cast[name] = np.zeros((batch, spec.shape[1]), np.float32)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, cast), strict=True))


def keras_outputs(got: dict[str, np.ndarray], model: ir.Model) -> list[np.ndarray]:
    """The Keras outputs in model order (return_state ones are named ``<layer>/h`` in the graph)."""
    return [got[n] for n in graph_output_names(model)]


def keras_feeds(model: ir.Model, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {spec.name: a for spec, a in zip(model.inputs, arrays, strict=True)}


def open_time(model: ir.Model) -> ir.Model:
    """The same model with an open time axis, so one graph takes chunks of any length."""
    inputs = tuple(dataclasses.replace(s, shape=(None, *s.shape[1:])) if s.shape else s for s in model.inputs)
    return dataclasses.replace(model, inputs=inputs)


def assert_close(got: np.ndarray, want: np.ndarray, atol: float = ATOL) -> None:
    assert max_abs_error(got, want) <= atol


def op_types(proto: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


def fused_kinds(node: ir.Node) -> list[str]:
    """The fused ONNX ops a recurrent node becomes: one per layer (a Bidirectional layer's two directions
    share one), one per cell of an RNN of stacked cells."""
    dirs = list(ir.recurrent_directions(node.layer).values())
    return [d.kind for d in dirs] if node.layer.op_type == "stacked" else [dirs[0].kind]


# Every fixture ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fx", FIXTURES, ids=[f.id for f in FIXTURES])
def test_fixture_matches_keras_or_is_refused(fx) -> None:
    model = load_ir(fx.name, fx.keras)
    if fx.name in REFUSED:
        layer, activation = REFUSED[fx.name][0], REFUSED[fx.name][1][fx.keras]
        with pytest.raises(UnsupportedLayer) as caught:
            build_onnx(model)
        message = str(caught.value)
        assert f"layer '{layer}'" in message and f"'{activation}'" in message and "can express" in message
        return
    proto = build_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    # One fused op per recurrent layer (per cell of a stacked RNN), of the right type; nothing looped. A
    # masked Bidirectional layer is two forward nodes (see test_portable_onnx.py); a tanh SimpleRNN over a
    # fixed time axis is unrolled into plain ops (onnx_unrolled.py: faster than onnxruntime's RNN kernel).
    kinds = [
        RECURRENT_OPS[kind]
        for n in model.recurrent_nodes
        if not _unrolled(proto, n)
        for kind in fused_kinds(n) * (2 if _split_bidirectional(proto, n) else 1)
    ]
    types = op_types(proto)
    assert [t for t in types if t in ("LSTM", "GRU", "RNN")] == kinds
    assert not {"Loop", "Scan", "If"} & set(types)
    got = run(session(proto), keras_feeds(model, fx.inputs()))
    assert list(got) == [*graph_output_names(model), *state_io_names(model, state_io=False)[1]]
    for g, w in zip(keras_outputs(got, model), fx.outputs(), strict=True):
        assert_close(g, w)


def _unrolled(proto: onnx.ModelProto, node: ir.Node) -> bool:
    """A SimpleRNN layer written as its per-step chain: ``<layer>/h_0`` is a Tanh, and no RNN node exists."""
    names = {n.name: n.op_type for n in proto.graph.node}
    if names.get(f"{node.name}/h_0") != "Tanh":
        return False
    assert fused_kinds(node) == ["simple_rnn"] and f"{node.name}/RNN" not in names
    return True


def _split_bidirectional(proto: onnx.ModelProto, node: ir.Node) -> bool:
    """A masked Bidirectional layer: one forward node per direction, ``<layer>/forward/...``."""
    ops = RECURRENT_OPS.values()
    return any(n.name.startswith(f"{node.name}/backward/") and n.op_type in ops for n in proto.graph.node)


def test_refused_fixtures_are_exactly_those_with_inexpressible_recurrent_activations() -> None:
    """The REFUSED list is derived from the models too, so a change on either side shows."""
    for fx in FIXTURES:
        model = load_ir(fx.name, fx.keras)
        expressible = set(expressible_activations(model.keras_major))
        used = {
            a
            for node in model.recurrent_nodes
            for d in ir.recurrent_directions(node.layer).values()
            for a in (d.activation, d.recurrent_activation)
            if a is not None
        }
        assert (fx.name in REFUSED) == bool(used - expressible), fx.id


def test_graph_metadata_and_declared_io() -> None:
    model = load_ir("lstm_states", "3")
    proto = build_onnx(model, state_io=True)
    assert proto.producer_name == "lstm-convert" and proto.producer_version == converter.__version__
    assert [o.version for o in proto.opset_import] == [DEFAULT_OPSET]
    assert proto.ir_version == onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", DEFAULT_OPSET)])

    def declared(values) -> list[tuple[str, list]]:
        return [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

    assert declared(proto.graph.input) == [
        ("input_layer", ["batch", 5, 3]),
        ("lstm/h0", ["batch", 6]),
        ("lstm/c0", ["batch", 6]),
    ]
    # return_state outputs are the layer's state outputs (Keras calls them lstm_1, lstm_2): not repeated.
    assert declared(proto.graph.output) == [
        ("lstm", ["batch", 5, 6]),
        ("lstm/h", ["batch", 6]),
        ("lstm/c", ["batch", 6]),
    ]
    assert not proto.graph.initializer or not {i.name for i in proto.graph.input} & {
        t.name for t in proto.graph.initializer
    }
    assert state_io_names(model) == (["lstm/h0", "lstm/c0"], [])
    props = {p.key: p.value for p in proto.metadata_props} if proto.metadata_props else {}
    assert props == {}  # metadata is written by write_onnx (see test_portable_onnx.py)
    assert {n.name for n in proto.graph.node} >= {"lstm/LSTM", "lstm/X"}
    assert {"lstm/W", "lstm/R", "lstm/B"} <= {t.name for t in proto.graph.initializer}
    open_model = build_onnx(load_ir("open_time", "2"))
    assert declared(open_model.graph.input) == [("input_1", ["batch", "time", 3])]
    ids = build_onnx(load_ir("embedding", "3")).graph.input[0]
    assert ids.type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_import_converter_does_not_import_onnx() -> None:
    code = "import sys, converter, converter.export; print('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


# Opsets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", sorted({MIN_OPSET, 18, MAX_OPSET}))
def test_opset_range_runs_alike(opset: int) -> None:
    """masked_states uses ReduceMax (Masking, ReduceAny), whose signature changes at 18."""
    fx = fixture("masked_states", "3")
    proto = build_onnx(load_ir(fx.name, fx.keras), opset=opset)
    assert [o.version for o in proto.opset_import] == [opset]
    onnx.checker.check_model(proto, full_check=True)
    got = run(session(proto), keras_feeds(load_ir(fx.name, fx.keras), fx.inputs()))
    for g, w in zip(got.values(), fx.outputs(), strict=True):
        assert_close(g, w)


@pytest.mark.parametrize("opset", [MIN_OPSET - 1, MAX_OPSET + 1, 7])
def test_opset_out_of_range_is_refused(opset: int) -> None:
    with pytest.raises(BadOptions, match=f"from {MIN_OPSET} to {MAX_OPSET}"):
        build_onnx(load_ir("tutorial", "3"), opset=opset)


def test_opset_constants() -> None:
    assert MIN_OPSET <= DEFAULT_OPSET <= MAX_OPSET == min(28, onnx.defs.onnx_opset_version())


# States ------------------------------------------------------------------------------------------------


def _split(outputs: dict[str, np.ndarray], model: ir.Model) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """The Keras outputs, and the final states by graph name (return_state outputs included)."""
    return keras_outputs(outputs, model), {k: v for k, v in outputs.items() if k.endswith(("/h", "/c"))}


def _fed_states(model: ir.Model, finals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The next call's state inputs (``lstm/h0``) from this call's state outputs (``lstm/h``)."""
    ins, _ = state_io_names(model)
    return {i: finals[i[:-1]] for i in ins}


def _runtime_states(model: ir.Model, finals: dict[str, dict[str, list[np.ndarray]]]) -> dict[str, np.ndarray]:
    """The runtime's final states under the ONNX state output names."""
    result = {}
    for node in model.recurrent_nodes:
        for direction, layer in ir.recurrent_directions(node.layer).items():
            base = f"{node.name}/{direction}" if direction else node.name
            for s_name, value in zip(layer.state_names, finals[node.name][direction], strict=True):
                result[f"{base}/{s_name}"] = value
    return result


STREAMED = [("lstm_states", "3"), ("gru_states", "2"), ("masked_states", "3"), ("embedding", "2"), ("stacked", "3")]


@pytest.mark.parametrize(("name", "keras"), STREAMED, ids=[f"k{k}-{n}" for n, k in STREAMED])
def test_two_chunks_with_fed_states_equal_one_call(name: str, keras: str) -> None:
    """Like a stateful Keras layer: chunk 2 starts from chunk 1's final states.

    The one place a chunked stream may differ from one call is a masked step that starts chunk 2: Keras
    repeats the previous output there, and a new call has none yet (zeros), stateful or not.
    """
    model = open_time(load_ir(name, keras))
    x = fixture(name, keras).inputs()[0]
    feed = model.inputs[0].name
    sess = session(build_onnx(model, state_io=True))
    whole, whole_states = _split(run(sess, {feed: x}), model)
    cut = x.shape[1] // 2
    first, first_states = _split(run(sess, {feed: x[:, :cut]}), model)
    second, second_states = _split(run(sess, {feed: x[:, cut:], **_fed_states(model, first_states)}), model)
    chunked = [
        np.concatenate([a, b], axis=1) if w.ndim == 3 else b for w, a, b in zip(whole, first, second, strict=True)
    ]
    runtime = Runtime(model)
    want, finals = runtime.run({feed: x})
    want_1, finals_1 = runtime.run({feed: x[:, :cut]})
    want_2, _ = runtime.run({feed: x[:, cut:]}, initial_states=finals_1)
    for g, w, w1, w2 in zip(chunked, want, want_1, want_2, strict=True):
        assert_close(g, np.concatenate([w1, w2], axis=1) if w.ndim == 3 else w2)
    for g, w in zip(whole, want, strict=True):
        assert_close(g, w)
    for key, value in _runtime_states(model, finals).items():
        assert_close(whole_states[key], value)
        assert_close(second_states[key], value)
    starts_masked = x.ndim == 3 and not np.all(np.any(x[:, cut] != 0, axis=-1))
    if not starts_masked:
        for g, w in zip(chunked, whole, strict=True):
            assert_close(g, w)


def test_bidirectional_chunks_follow_the_runtime_with_the_same_states() -> None:
    """A backward direction cannot stream, but each call starts from exactly the states fed to it."""
    model = open_time(load_ir("bidi_states", "3"))
    x = fixture("bidi_states", "3").inputs()[0]
    sess = session(build_onnx(model, state_io=True))
    runtime = Runtime(model)
    _, states = _split(run(sess, {"input_layer": x[:, :2]}), model)
    _, finals = runtime.run({"input_layer": x[:, :2]})
    for key, value in _runtime_states(model, finals).items():
        assert_close(states[key], value)
    got, _ = _split(run(sess, {"input_layer": x[:, 2:], **_fed_states(model, states)}), model)
    want, _ = runtime.run({"input_layer": x[:, 2:]}, initial_states=finals)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)


@pytest.mark.parametrize("keras", ["2", "3"])
def test_stateful_second_call_continues_from_first(keras: str) -> None:
    fx = fixture("stateful", keras)
    model = load_ir("stateful", keras)
    assert state_io_names(model, state_io=False)[0] == ["lstm/h0", "lstm/c0", "gru/h0", "simple_rnn/h0"]
    sess = session(build_onnx(model))  # stateful layers get state I/O without asking
    first, states = _split(run(sess, keras_feeds(model, fx.inputs())), model)
    assert_close(first[0], fx.outputs()[0])
    second, _ = _split(run(sess, {**keras_feeds(model, fx.inputs(call=2)), **_fed_states(model, states)}), model)
    assert_close(second[0], fx.outputs(call=2)[0])
    fresh, _ = _split(run(sess, keras_feeds(model, fx.inputs(call=2))), model)
    assert max_abs_error(fresh[0], second[0]) > 1e-3  # the fed states really mattered


def test_unfed_state_inputs_are_zeros_and_fed_ones_are_used() -> None:
    model = load_ir("gru_states", "3")
    x = fixture("gru_states", "3").inputs()[0]
    sess = session(build_onnx(model, state_io=True))
    unfed = run(sess, {"input_layer": x})
    zeros = run(sess, {"input_layer": x, "gru/h0": np.zeros((x.shape[0], 4), np.float32)})
    for key in unfed:
        np.testing.assert_array_equal(unfed[key], zeros[key])
    h0 = np.random.default_rng(1).standard_normal((x.shape[0], 4)).astype(np.float32)
    fed = run(sess, {"input_layer": x, "gru/h0": h0})
    want, _ = Runtime(model).run({"input_layer": x}, initial_states={"gru": {"": [h0]}})
    assert max_abs_error(fed["gru"], unfed["gru"]) > 1e-3
    for g, w in zip(keras_outputs(fed, model), want, strict=True):
        assert_close(g, w)


# Masks of every shape ------------------------------------------------------------------------------------

#: per sample, which of 6 steps are valid: none, only the last, only the first, holes, pre- and post-padding, all
MASK_ROWS = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1],
        [1, 0, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 1],
        [0, 0, 1, 1, 1, 1],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
    ],
    bool,
)
MASKED = ["masked_lstm", "masked_last", "masked_bidi", "masked_backwards", "masked_states", "embedding"]
MASKED += ["rnn_backwards_masked", "rnn_bidi_masked"]  # RNN(cell), stacked cells, go_backwards


def masked_input(model: ir.Model, valid: np.ndarray, seed: int = 0) -> np.ndarray:
    """Random input whose masked steps are exactly ``~valid`` (mask value 0, or id 0)."""
    rng = np.random.default_rng(seed)
    spec = model.inputs[0]
    if spec.dtype != "float32":  # Embedding ids; 0 is the mask id
        return np.where(valid, rng.integers(1, 10, valid.shape), 0).astype(np.int32)
    x = rng.uniform(0.1, 1.0, (*valid.shape, spec.shape[-1])) * rng.choice([-1, 1], (*valid.shape, spec.shape[-1]))
    return (x * valid[..., None]).astype(np.float32)


@pytest.mark.parametrize("keras", ["2", "3"])
@pytest.mark.parametrize("name", MASKED)
def test_any_mask_matches_runtime(name: str, keras: str) -> None:
    """Fully masked samples, a lone last step, holes, pre/post-padding: the runtime is the Keras oracle."""
    model = load_ir(name, keras)
    x = masked_input(model, MASK_ROWS)
    got = run(session(build_onnx(model)), {model.inputs[0].name: x})
    want, _ = Runtime(model).run({model.inputs[0].name: x})
    for g, w in zip(got.values(), want, strict=True):
        assert_close(g, w)


def test_masked_steps_keep_fed_initial_states() -> None:
    """A sample with no valid step ends in its initial state (ORT alone would give zeros)."""
    model = load_ir("masked_states", "3")
    x = masked_input(model, MASK_ROWS)
    rng = np.random.default_rng(2)
    h0, c0 = (rng.standard_normal((len(x), 4)).astype(np.float32) for _ in range(2))
    got = run(session(build_onnx(model, state_io=True)), {"input_layer": x, "lstm/h0": h0, "lstm/c0": c0})
    want, _ = Runtime(model).run({"input_layer": x}, initial_states={"lstm": {"": [h0, c0]}})
    for g, w in zip(keras_outputs(got, model), want, strict=True):
        assert_close(g, w)
    np.testing.assert_array_equal(got["lstm/h"][0], h0[0])
    np.testing.assert_array_equal(got["lstm/c"][0], c0[0])


# Synthetic layers (what no fixture holds) ---------------------------------------------------------------------


def recurrent(kind: str, units: int, input_dim: int, rng: np.random.Generator, **options) -> ir.Recurrent:
    settings_ = {
        "activation": "tanh",
        "recurrent_activation": None if kind == "simple_rnn" else "sigmoid",
        "use_bias": True,
        "return_sequences": True,
        "return_state": False,
        "go_backwards": False,
        "stateful": False,
        "reset_after": kind == "gru",
        "zero_output_for_mask": False,
    } | options
    weights = {}
    for g in CANONICAL[kind]:
        weights[gate_tensor_name("W", g)] = rng.normal(0, 0.5, (input_dim, units)).astype(np.float32)
        weights[gate_tensor_name("U", g)] = rng.normal(0, 0.5, (units, units)).astype(np.float32)
        if settings_["use_bias"]:
            weights[gate_tensor_name("b", g)] = rng.normal(0, 0.3, units).astype(np.float32)
            if kind == "gru" and settings_["reset_after"]:
                weights[gate_tensor_name("rb", g)] = rng.normal(0, 0.3, units).astype(np.float32)
    return ir.Recurrent(kind, units, input_dim, weights=weights, **settings_)  # type: ignore[arg-type]


def chain(layers: list[tuple[str, ir.Layer]], inputs: tuple[ir.InputSpec, ...], major: int) -> ir.Model:
    """A Sequential-like model: each layer takes the previous output."""
    nodes, previous = [], ir.TensorRef(inputs[0].name)
    for name, layer in layers:
        nodes.append(ir.Node(name, type(layer).__name__, layer, (previous,)))
        previous = ir.TensorRef(name)
    return ir.Model("synthetic", inputs, tuple(nodes), (previous,), (layers[-1][0],), f"{major}.0", "synthetic")


def fan(layers: list[tuple[str, ir.Layer]], spec: ir.InputSpec, major: int) -> ir.Model:
    """Every layer reads the one input; every layer's output is a model output."""
    nodes = tuple(ir.Node(n, type(layer).__name__, layer, (ir.TensorRef(spec.name),)) for n, layer in layers)
    outputs = tuple(ir.TensorRef(n) for n, _ in layers)
    return ir.Model("fan", (spec,), nodes, outputs, tuple(n for n, _ in layers), f"{major}.0", "synthetic")


@pytest.mark.parametrize("major", [2, 3])
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_every_expressible_recurrent_activation(kind: str, major: int) -> None:
    """Each activation in each role, beside a bounded partner (an unbounded gate pair can blow up to inf)."""
    rng = np.random.default_rng(3)
    layers: list[tuple[str, ir.Layer]] = []
    for k, act in enumerate(expressible_activations(major)):
        gate = None if kind == "simple_rnn" else "sigmoid"
        layers.append((f"act_{k}", recurrent(kind, 3, 3, rng, activation=act, recurrent_activation=gate)))
        if kind != "simple_rnn":
            layers.append((f"gate_{k}", recurrent(kind, 3, 3, rng, activation="tanh", recurrent_activation=act)))
    model = fan(layers, ir.InputSpec("x", (5, 3)), major)
    proto = build_onnx(model)
    # tanh SimpleRNNs over fixed steps are unrolled (see test_fixture_matches_keras_or_is_refused)
    fused = [n for n in model.nodes if not _unrolled(proto, n)]
    assert len(fused) >= len(layers) - 1
    assert op_types(proto).count(RECURRENT_OPS[kind]) == len(fused)
    x = rng.normal(0, 1, (4, 5, 3)).astype(np.float32)
    got = run(session(proto), {"x": x})
    want, _ = Runtime(model).run({"x": x})
    for name, w in zip(model.output_names, want, strict=True):
        assert_close(got[name], w)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x.astype(np.float64) - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("major", [2, 3])
def test_every_dense_activation(major: int) -> None:
    x = np.linspace(-9, 9, 4 * 37, dtype=np.float32).reshape(4, 37)
    layers = [(f"act_{k}", ir.Activation(a)) for k, a in enumerate(supported_activations(major))]
    model = fan(layers, ir.InputSpec("x", (37,)), major)
    got = run(session(build_onnx(model)), {"x": x})
    want, _ = Runtime(model).run({"x": x})
    for (name, layer), w in zip(layers, want, strict=True):
        if layer.activation == "log_softmax":  # the runtime's log_softmax is x - max(x) (reported bug)
            w = _log_softmax(x)
        scale = max(1.0, float(np.abs(w).max()))  # exponential reaches e^9: compare relative to size
        assert max_abs_error(got[name], w) <= ATOL * scale, layer.activation


def test_unknown_activation_is_refused_by_name() -> None:
    model = chain([("act", ir.Activation("bogus"))], (ir.InputSpec("x", (3,)),), 3)
    with pytest.raises(UnsupportedLayer, match=r"layer 'act' .*'bogus'"):
        build_onnx(model)


def _synthetic_masked(seed: int) -> ir.Model:
    """Masking -> bidirectional LSTM (zeros at masked steps) -> backwards GRU repeating outputs ->
    bidirectional RNN without zero_output_for_mask (repeat both ways) -> LSTM last output with states."""
    rng = np.random.default_rng(seed)
    bi_lstm = ir.Bidirectional(
        recurrent("lstm", 3, 2, rng, zero_output_for_mask=True),
        recurrent("lstm", 3, 2, rng, zero_output_for_mask=True, go_backwards=True, activation="relu"),
        "concat",
    )
    back_gru = recurrent("gru", 4, 6, rng, go_backwards=True, reset_after=False)
    bi_rnn = ir.Bidirectional(
        recurrent("simple_rnn", 3, 4, rng), recurrent("simple_rnn", 3, 4, rng, go_backwards=True), "ave"
    )
    last = recurrent("lstm", 2, 3, rng, return_sequences=False, return_state=True)
    layers = [
        ("masking", ir.Masking(0.0)),
        ("bi_lstm", bi_lstm),
        ("back_gru", back_gru),
        ("bi_rnn", bi_rnn),
        ("last", last),
    ]
    model = chain(layers, (ir.InputSpec("x", (None, 2)),), 3)
    outputs = (ir.TensorRef("bi_rnn"), ir.TensorRef("last", 0), ir.TensorRef("last", 1), ir.TensorRef("last", 2))
    return dataclasses.replace(model, outputs=outputs, output_names=("bi_rnn", "last", "last_h", "last_c"))


@functools.cache
def _synthetic_session() -> tuple[ir.Model, ort.InferenceSession]:
    model = _synthetic_masked(4)
    return model, session(build_onnx(model, state_io=True))


@settings(max_examples=40, deadline=None)
@given(valid=st.lists(st.lists(st.booleans(), min_size=7, max_size=7), min_size=1, max_size=5), seed=st.integers(0, 99))
def test_random_masks_and_states_match_runtime(valid: list[list[bool]], seed: int) -> None:
    model, sess = _synthetic_session()
    mask = np.array(valid, bool)
    x = masked_input(model, mask, seed)
    rng = np.random.default_rng(seed)
    h0, c0 = (rng.normal(0, 1, (len(x), 2)).astype(np.float32) for _ in range(2))
    got = run(sess, {"x": x, "last/h0": h0, "last/c0": c0})
    want, finals = Runtime(model).run({"x": x}, initial_states={"last": {"": [h0, c0]}})
    for g, w in zip(keras_outputs(got, model), want, strict=True):
        assert_close(g, w)
    for key, value in _runtime_states(model, finals).items():
        assert_close(got[key], value)


def test_bidirectional_with_keras_initial_states_and_masks() -> None:
    """Initial states wired from Keras inputs (forward's first), a mask, return_state, merge 'mul'."""
    rng = np.random.default_rng(5)
    layer = ir.Bidirectional(
        recurrent("gru", 3, 2, rng, zero_output_for_mask=True, return_state=True),
        recurrent("gru", 3, 2, rng, zero_output_for_mask=True, return_state=True, go_backwards=True),
        "mul",
    )
    inputs = (ir.InputSpec("x", (6, 2)), ir.InputSpec("h_fw", (3,)), ir.InputSpec("h_bw", (3,)))
    nodes = (
        ir.Node("masking", "Masking", ir.Masking(0.0), (ir.TensorRef("x"),)),
        ir.Node("bi", "Bidirectional", layer, (ir.TensorRef("masking"),), (ir.TensorRef("h_fw"), ir.TensorRef("h_bw"))),
    )
    outputs = tuple(ir.TensorRef("bi", k) for k in range(3))
    model = ir.Model("m", inputs, nodes, outputs, ("seq", "h_fw_out", "h_bw_out"), "3.0", "synthetic")
    # The return_state outputs are the state outputs, named for the layer, not Keras' h_fw_out.
    assert state_io_names(model) == ([], [])
    assert graph_output_names(model) == ["seq", "bi/forward/h", "bi/backward/h"]
    x = masked_input(model, MASK_ROWS)
    h_fw, h_bw = (rng.normal(0, 1, (len(x), 3)).astype(np.float32) for _ in range(2))
    got = run(session(build_onnx(model, state_io=True)), {"x": x, "h_fw": h_fw, "h_bw": h_bw})
    want, _ = Runtime(model).run({"x": x, "h_fw": h_fw, "h_bw": h_bw})
    for g, w in zip(keras_outputs(got, model), want, strict=True):
        assert_close(g, w)
    np.testing.assert_array_equal(got["bi/backward/h"][0], h_bw[0])  # the fully masked sample keeps its states


def test_mismatched_bidirectional_directions_are_refused() -> None:
    rng = np.random.default_rng(6)
    layer = ir.Bidirectional(
        recurrent("gru", 3, 2, rng), recurrent("gru", 3, 2, rng, go_backwards=True, reset_after=False), "sum"
    )
    model = chain([("bi", layer)], (ir.InputSpec("x", (4, 2)),), 3)
    with pytest.raises(UnsupportedLayer, match=r"layer 'bi' .*reset_after"):
        build_onnx(model)
