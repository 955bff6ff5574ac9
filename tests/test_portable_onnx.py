"""ONNX graphs that give Keras' answer in every runtime, not only onnxruntime (issue 13).

Every fixture's export runs in OpenVINO (CPU, f32 set explicitly) and in onnx's ReferenceEvaluator where
they compute the graph exactly; where they cannot, the refusal says why, and the set of refused fixtures
is derived from the models, not listed. Masked and stateful fixtures match Keras' recorded outputs there
too; the stateful one streams two calls. Then the graph contract (required state inputs, names, no
default attributes), independence from ``sequence_lens``, the verification's repeated calls, and the
``--batch-size``/``--time-steps``/``--runtime`` options.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import converter
from converter import ir
from converter.errors import BadOptions, VerificationFailed
from converter.export.input_shapes import reshape_inputs
from converter.export.onnx_file import write_onnx
from converter.export.onnx_graph import graph_output_names, state_io_names
from converter.export.onnx_portability import portability
from converter.export.onnx_run import Runner
from tests.fixture_index import ATOL, FIXTURES, max_abs_error, one_form_each
from tests.test_convert_cli import cli
from tests.test_onnx import REFUSED

pytest.importorskip("openvino")

CASES = [f for f in one_form_each() if f.name not in REFUSED]
RECURRENT = ("LSTM", "GRU", "RNN")


@functools.cache
def load_ir(name: str, keras: str) -> ir.Model:
    fx = next(f for f in CASES if f.name == name and f.keras == keras)
    return converter.load(fx.path, config=fx.config).ir


def written(model: ir.Model, folder: Path, name: str = "m", **options) -> Path:
    path = folder / f"{name}.onnx"
    write_onnx(model, path, opset=None, state_io=options.get("state_io", False), external=False)
    return path


def uses_other_activations(model: ir.Model) -> bool:
    """A recurrent activation outside sigmoid/tanh/relu (hard_sigmoid, elu, softsign, linear ...)."""
    return any(
        name not in ("sigmoid", "tanh", "relu")
        for node in model.recurrent_nodes
        for d in node.layer.directions.values()
        for name in (d.activation, d.recurrent_activation)
        if name is not None
    )


def uses_explicit_activations(model: ir.Model) -> bool:
    """Activations other than the ONNX defaults (sigmoid gates, tanh), which the ReferenceEvaluator ignores."""
    for node in model.recurrent_nodes:
        for d in node.layer.directions.values():
            if d.activation != "tanh" or d.recurrent_activation not in (None, "sigmoid"):
                return True
    return False


def stream(runner: Runner, model: ir.Model, calls: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """Each call's Keras outputs, feeding each call the previous call's final states."""
    results, states = [], {}
    for arrays in calls:
        got = runner.run({**{s.name: a for s, a in zip(model.inputs, arrays, strict=True)}, **states})
        results.append([got[n] for n in graph_output_names(model)])
        states = runner.next_states(got)
    return results


# Every fixture in OpenVINO and the ReferenceEvaluator ---------------------------------------------------------


@pytest.mark.parametrize("runtime", ["openvino", "reference"])
@pytest.mark.parametrize("fx", CASES, ids=[f.id for f in CASES])
def test_fixture_in_other_runtimes_matches_keras_or_is_refused_with_the_reason(fx, runtime, tmp_path) -> None:
    model = load_ir(fx.name, fx.keras)
    path = written(model, tmp_path)
    found = portability(path)
    why = found.refusal(runtime)
    # Refused exactly where the runtime would not compute the graph: derived from the model.
    activations = uses_other_activations(model) if runtime == "openvino" else uses_explicit_activations(model)
    # OpenVINO honours sequence_lens once every input shape is fixed (a stateful model's batch, say).
    lens_ignored = bool(found.needs_sequence_lens) and (runtime == "reference" or not found.static_shapes)
    assert (why is not None) == (activations or lens_ignored), (why, found)
    if why is not None:
        if activations:
            assert "activation" in why
            return
        assert "sequence_lens" in why and found.needs_sequence_lens[0] in why
        if runtime == "reference":
            return
        # OpenVINO honours sequence_lens once every input shape is fixed: --batch-size N.
        model = reshape_inputs(model, len(fx.inputs()[0]), None, "test")
        path = written(model, tmp_path, "fixed")
        assert portability(path).refusal("openvino") is None
    runner = Runner.open(path, runtime)
    calls = [fx.inputs(), fx.inputs()] + ([fx.inputs(call=2)] if fx.entry["stateful"] else [])
    results = stream(runner, model, calls[:1]) + stream(runner, model, [calls[1]])  # fresh, then again
    for got in results:
        for g, w in zip(got, fx.outputs(), strict=True):
            assert max_abs_error(g, w) <= ATOL
    if fx.entry["stateful"]:  # the second Keras call continued from the first call's states
        _, second = stream(runner, model, [fx.inputs(), fx.inputs(call=2)])
        for g, w in zip(second, fx.outputs(call=2), strict=True):
            assert max_abs_error(g, w) <= ATOL
        assert max_abs_error(second[0], stream(runner, model, [fx.inputs(call=2)])[0][0]) > 1e-3


def test_refusals_cover_the_fixtures_they_should() -> None:
    """The parametrised test above is not vacuous: some fixtures are refused, most run, for both reasons."""
    ov = {f.name for f in CASES if uses_other_activations(load_ir(f.name, f.keras))}
    assert {"activations_lstm"} <= ov and len(ov) < len(CASES) // 4
    masked_c = [f for f in CASES if f.name in ("masked_states", "seq2seq_masked")]
    assert len(masked_c) == 4


# The graph contract --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fx", CASES, ids=[f.id for f in CASES])
def test_graph_contract(fx, tmp_path) -> None:
    model = load_ir(fx.name, fx.keras)
    proto = onnx.load(written(model, tmp_path, state_io=True))
    graph = proto.graph
    assert [o.version for o in proto.opset_import] == [13]
    # State inputs are plain required inputs: no initializer backs any graph input.
    assert not {i.name for i in graph.input} & {t.name for t in graph.initializer}
    inputs, outputs = state_io_names(model, state_io=True)
    assert [i.name for i in graph.input] == [*(s.name for s in model.inputs), *inputs]
    assert [o.name for o in graph.output] == [*graph_output_names(model), *outputs]
    batch = model.inputs[0].batch_size or "batch"
    for value in graph.input[len(model.inputs) :]:
        dims = [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]
        assert dims[0] == batch and value.name.endswith(("/h0", "/c0"))
    for node in graph.node:
        assert all(node.output), node.name  # every output named (OpenCV refuses an empty Y_c)
        if node.op_type in RECURRENT:
            attrs = {a.name: a for a in node.attribute}
            if "activations" in attrs:  # written only when not the defaults
                acts = [s.decode() for s in attrs["activations"].strings]
                default = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
                assert acts != default[node.op_type] * (len(acts) // len(default[node.op_type]))
            assert attrs.get("direction") is None or attrs["direction"].s == b"bidirectional"
            assert "linear_before_reset" not in attrs or attrs["linear_before_reset"].i == 1
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["keras_outputs"]) == dict(zip(model.output_names, graph_output_names(model), strict=True))


def test_return_state_outputs_are_named_for_their_layer(tmp_path) -> None:
    """Keras calls lstm's c state `lstm_2`: in the graph it is `lstm/c`, and verification maps it back."""
    model = load_ir("lstm_states", "3")
    assert list(model.output_names) == ["lstm", "lstm_1", "lstm_2"]
    assert graph_output_names(model) == ["lstm", "lstm/h", "lstm/c"]
    bidi = load_ir("bidi_state_mask", "3")
    assert graph_output_names(bidi)[1:] == ["bi/forward/h", "bi/forward/c", "bi/backward/h", "bi/backward/c"]
    report = converter.to_onnx(FIXTURES / "keras3/lstm_states.keras", tmp_path / "s.onnx", oracle="numpy")
    assert [c.name for c in report.outputs][:3] == ["lstm", "lstm_1", "lstm_2"]


def test_stateful_state_inputs_have_the_keras_batch(tmp_path) -> None:
    model = load_ir("stateful", "3")
    graph = onnx.load(written(model, tmp_path)).graph
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {
        "input_layer": [3, 4, 3],
        "lstm/h0": [3, 5],
        "lstm/c0": [3, 5],
        "gru/h0": [3, 4],
        "simple_rnn/h0": [3, 3],
    }


# Independent of sequence_lens --------------------------------------------------------------------------------


MASKED = ["masked_lstm", "masked_last", "masked_bidi", "masked_backwards", "embedding", "nested_masked"]


@pytest.mark.parametrize("keras", ["2", "3"])
@pytest.mark.parametrize("name", MASKED)
def test_masked_graph_is_right_without_sequence_lens(name, keras, tmp_path) -> None:
    """Drop sequence_lens from every recurrent node (what OpenVINO and the ReferenceEvaluator do): onnxruntime
    still gives Keras' outputs, because nothing reads Y past a row's length."""
    fx = next(f for f in CASES if f.name == name and f.keras == keras)
    model = load_ir(name, keras)
    proto = onnx.load(written(model, tmp_path))
    lens = [n for n in proto.graph.node if n.op_type in RECURRENT and len(n.input) > 4 and n.input[4]]
    assert lens  # the masked layers do pass sequence_lens (onnxruntime skips the padding)
    for node in lens:
        node.input[4] = ""
        assert node.attribute and not any(a.name == "direction" and a.s == b"reverse" for a in node.attribute)
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, bare)
    got = Runner.open(bare).run({s.name: a for s, a in zip(model.inputs, fx.inputs(), strict=True)})
    for g, w in zip([got[n] for n in graph_output_names(model)], fx.outputs(), strict=True):
        assert max_abs_error(g, w) <= ATOL


def test_masked_bidirectional_is_two_forward_nodes(tmp_path) -> None:
    proto = onnx.load(written(load_ir("masked_bidi", "3"), tmp_path))
    nodes = [n.name.rsplit("/", 1)[0] for n in proto.graph.node if n.op_type in RECURRENT]
    assert nodes[:2] == ["bidirectional/forward", "bidirectional/backward"]
    unmasked = onnx.load(written(load_ir("bidi_concat", "3"), tmp_path, "u"))
    assert [
        a.s for n in unmasked.graph.node if n.op_type in RECURRENT for a in n.attribute if a.name == "direction"
    ] == [b"bidirectional"]


# Verification: several calls, every output ---------------------------------------------------------------------


def test_verification_runs_the_graph_again_and_fed_states(tmp_path) -> None:
    report = converter.to_onnx(FIXTURES / "keras3/stateful.keras", tmp_path / "s.onnx", oracle="keras")
    names = [c.name for c in report.outputs]
    assert names == [
        "dense",
        "lstm/h",
        "lstm/c",
        "gru/h",
        "simple_rnn/h",
        *(f"{n} (again)" for n in ("dense", "lstm/h", "lstm/c", "gru/h", "simple_rnn/h")),
        *(f"{n} (fed states)" for n in ("dense", "lstm/h", "lstm/c", "gru/h", "simple_rnn/h")),
    ]
    assert report.passed and report.oracle.startswith("keras")
    assert report.state_inputs == ["lstm/h0", "lstm/c0", "gru/h0", "simple_rnn/h0"]
    assert report.state_outputs == ["lstm/h", "lstm/c", "gru/h", "simple_rnn/h"]


@pytest.mark.parametrize("broken_call", [2, 3])
def test_a_runtime_wrong_on_a_later_call_fails_verification(broken_call, tmp_path, monkeypatch) -> None:
    """Like onnxruntime 1.14-1.18 on a masked Bidirectional LSTM: right on the first call, wrong later."""
    real = Runner.run
    calls = {"n": 0}

    def flaky(self, given):
        calls["n"] += 1
        got = real(self, given)
        return {k: v + 0.1 for k, v in got.items()} if calls["n"] == broken_call else got

    monkeypatch.setattr(Runner, "run", flaky)
    target = tmp_path / "m.onnx"
    with pytest.raises(VerificationFailed, match="differs"):
        converter.to_onnx(FIXTURES / "keras3/masked_states.keras", target, state_io=True, oracle="numpy")
    assert not target.exists()


def test_verify_command_checks_calls_and_runtimes(tmp_path) -> None:
    out = tmp_path / "m.onnx"
    assert cli("to-onnx", FIXTURES / "keras2/stateful.h5", "-o", out, "--oracle", "numpy").exit_code == 0
    result = cli("verify", FIXTURES / "keras2/stateful.h5", out, "--runtime", "openvino", "--json", "--oracle", "keras")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["runtimes"] == ["onnxruntime", "openvino"] and doc["passed"]
    assert sum(c["name"].startswith("[openvino] ") for c in doc["outputs"]) == len(doc["outputs"]) // 2 == 15


def test_the_result_table_names_each_runtimes_rows(tmp_path) -> None:
    """``[openvino] dense`` is printed as is (rich would take ``[openvino]`` for markup and drop it)."""
    out = tmp_path / "m.onnx"
    result = cli(
        "to-onnx", FIXTURES / "keras3/masked_bidi.keras", "-o", out, "--runtime", "openvino", "--oracle", "numpy"
    )
    assert result.exit_code == 0, result.output
    assert "[openvino] dense (again)" in result.stderr and "in onnxruntime, openvino" in result.stderr


# --runtime refusals and notes -----------------------------------------------------------------------------------


def test_reference_runtime_refuses_explicit_activations(tmp_path) -> None:
    out = tmp_path / "a.onnx"
    result = cli("to-onnx", FIXTURES / "keras3/activations_lstm.keras", "-o", out, "--runtime", "reference")
    assert result.exit_code == 2 and not out.exists()
    assert "ReferenceEvaluator ignores the activations of layer 'lstm'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_openvino_refuses_sequence_lens_with_a_symbolic_batch_and_runs_with_a_fixed_one(tmp_path) -> None:
    model = FIXTURES / "keras3/masked_states.keras"
    with pytest.raises(BadOptions, match=r"OpenVINO ignores sequence_lens .*'lstm'.*--batch-size N"):
        converter.to_onnx(model, tmp_path / "a.onnx", runtime="openvino", oracle="numpy")
    assert not (tmp_path / "a.onnx").exists()
    report = converter.to_onnx(model, tmp_path / "b.onnx", runtime="openvino", batch_size=3, oracle="numpy")
    assert report.passed and report.runtimes == ["onnxruntime", "openvino"]
    assert "sequence_lens" in report.note and "lstm" in report.note


def test_report_says_which_activations_are_onnxruntime_only(tmp_path) -> None:
    report = converter.to_onnx(FIXTURES / "keras3/activations_lstm.keras", tmp_path / "a.onnx", oracle="numpy")
    assert "computed by onnxruntime only" in report.note and "HardSigmoid" in report.note


# --batch-size and --time-steps ------------------------------------------------------------------------------------


def test_fixed_length_gru_streams_one_step_at_a_time(tmp_path) -> None:
    """--time-steps 1 --state-io: five one-step calls give Keras' five-step sequence and final state."""
    fx = next(f for f in CASES if f.name == "gru_states" and f.keras == "3")
    out = tmp_path / "g.onnx"
    result = cli("to-onnx", fx.path, "-o", out, "--time-steps", "1", "--state-io", "--json", "--oracle", "numpy")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state_inputs"] == ["gru/h0"]
    x, (want_seq, want_h) = fx.inputs()[0], fx.outputs()
    runner, states, steps = Runner.open(out), {}, []
    for t in range(x.shape[1]):
        got = runner.run({"input_layer": x[:, t : t + 1], **states})
        steps.append(got["gru"])
        states = runner.next_states(got)
    assert max_abs_error(np.concatenate(steps, axis=1), want_seq) <= ATOL
    assert max_abs_error(got["gru/h"], want_h) <= ATOL


def test_batch_size_and_dynamic_time(tmp_path) -> None:
    out = tmp_path / "t.onnx"
    report = converter.to_onnx(FIXTURES / "keras3/tutorial.keras", out, batch_size=2, time_steps="dynamic")
    assert report.passed and report.inputs == {"input_layer": [2, 4, 3]}  # Keras' own length, so Keras runs it
    dims = [d.dim_value or d.dim_param for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, "time", 3]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--time-steps", "soon", "'dynamic'"), ("--time-steps", "0", "at least 1"), ("--batch-size", "0", "0")],
)
def test_bad_shape_options_are_one_line_errors(option, value, message, tmp_path) -> None:
    out = tmp_path / "t.onnx"
    result = cli("to-onnx", FIXTURES / "keras3/tutorial.keras", "-o", out, option, value)
    assert result.exit_code == 2 and not out.exists()
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
