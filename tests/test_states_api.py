"""States a user can see, set and stream: ``model.states``, ``set_states``, ``predict(initial_states=)``,
``lstm-convert predict`` with state arrays, and one streaming loop against the NumPy runtime and ONNX.

Oracles: Keras' recorded outputs (return_state fixtures give Keras' own final states; the stateful fixture
its second call), and the NumPy runtime (proven against Keras) for chunked streams.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import converter
from converter.errors import BadInputs
from converter.export.onnx_run import Runner
from converter.runtime import Runtime
from tests.fixture_index import ATOL, FIXTURES, max_abs_error
from tests.test_convert_cli import cli

Array = np.ndarray


def io(name: str, keras: str = "3") -> dict[str, Array]:
    with np.load(FIXTURES / f"keras{keras}" / f"{name}.io.npz") as data:
        return {k: data[k] for k in data.files}


def model_file(name: str, keras: str = "3") -> Path:
    return FIXTURES / f"keras{keras}" / (f"{name}.keras" if keras == "3" else f"{name}.h5")


# model.states ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keras", ["2", "3"])
def test_states_are_keras_final_states(keras: str) -> None:
    """lstm_states returns [seq, h, c]: Keras' own final states, which model.states must equal."""
    model = converter.load(model_file("lstm_states", keras))
    assert model.states == {}
    data = io("lstm_states", keras)
    model.predict(data["input/0"])
    states = model.states
    assert list(states) == ["lstm"] and sorted(states["lstm"]) == ["c", "h"]
    assert max_abs_error(states["lstm"]["h"], data["output/1"]) <= ATOL
    assert max_abs_error(states["lstm"]["c"], data["output/2"]) <= ATOL


def test_bidirectional_states_are_per_direction() -> None:
    model = converter.load(model_file("bidi_states"))
    data = io("bidi_states")
    model.predict(data["input/0"])
    states = model.states["bidirectional"]
    assert sorted(states) == ["backward", "forward"] and sorted(states["forward"]) == ["c", "h"]
    # bidi_states returns [seq, fw h, fw c, bw h, bw c]
    for k, (direction, s) in enumerate([("forward", "h"), ("forward", "c"), ("backward", "h"), ("backward", "c")]):
        assert max_abs_error(states[direction][s], data[f"output/{k + 1}"]) <= ATOL


def test_states_are_copies() -> None:
    model = converter.load(model_file("gru_states"))
    model.predict(io("gru_states")["input/0"])
    model.states["gru"]["h"][:] = 99
    assert not np.any(model.states["gru"]["h"] == 99)


# set_states and initial_states ------------------------------------------------------------------------------


@pytest.mark.parametrize("keras", ["2", "3"])
def test_set_states_continues_a_stateful_model_like_keras(keras: str) -> None:
    """A fresh model set to the first call's final states gives Keras' second call."""
    data = io("stateful", keras)
    first = converter.load(model_file("stateful", keras))
    first.predict(data["input/0"])
    fresh = converter.load(model_file("stateful", keras))
    fresh.set_states(first.states)
    assert max_abs_error(fresh.predict(data["input2/0"]), data["output2/0"]) <= ATOL
    # Both have now made the same two calls: the same states.
    first.predict(data["input2/0"])
    for layer in ("lstm", "gru", "simple_rnn"):
        assert max_abs_error(fresh.states[layer]["h"], first.states[layer]["h"]) <= ATOL
    fresh.reset_states()
    assert max_abs_error(fresh.predict(data["input/0"]), data["output/0"]) <= ATOL


def test_initial_states_nested_and_flat_names_agree() -> None:
    model = converter.load(model_file("lstm_states"))
    x = io("lstm_states")["input/0"]
    rng = np.random.default_rng(0)
    h, c = (rng.normal(size=(len(x), 6)).astype(np.float32) for _ in range(2))
    want, _ = Runtime(model.ir).run({"input_layer": x}, initial_states={"lstm": {"": [h, c]}})
    for given in ({"lstm": {"h": h, "c": c}}, {"lstm/h": h, "lstm/c": c}, {"lstm/h0": h, "lstm/c0": c}):
        got = model.predict(x, initial_states=given)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    zeros = model.predict(x)  # initial_states apply to that call only
    assert max_abs_error(zeros[0], want[0]) > 1e-3


def test_set_states_applies_to_the_next_call_only_for_non_stateful_layers() -> None:
    model = converter.load(model_file("gru_states"))
    x = io("gru_states")["input/0"]
    h = np.ones((len(x), 4), np.float32)
    model.set_states({"gru": {"h": h}})
    fed = model.predict(x)
    plain = model.predict(x)
    want, _ = Runtime(model.ir).run({"input_layer": x}, initial_states={"gru": {"": [h]}})
    assert max_abs_error(fed[0], want[0]) <= ATOL
    assert max_abs_error(plain[0], io("gru_states")["output/0"]) <= ATOL


@pytest.mark.parametrize(
    ("states", "message"),
    [
        (
            {"lstm": {"h": np.zeros((3, 5)), "c": np.zeros((3, 6))}},
            r"state 'lstm/h' has shape \(3, 5\), .*'lstm' needs \(3, 6\)",
        ),
        ({"lstm": {"h": np.zeros((3, 6))}}, r"layer 'lstm' takes states h, c; got h"),
        ({"lsmt/h": np.zeros((3, 6))}, r"'lsmt', which is no recurrent layer \(they are: lstm\)"),
        ({"lstm": {"h": np.zeros((2, 6)), "c": np.zeros((2, 6))}}, r"'lstm/h' has shape \(2, 6\), .*needs \(3, 6\)"),
    ],
)
def test_bad_states_are_one_line_errors_naming_layer_and_shapes(states, message) -> None:
    model = converter.load(model_file("lstm_states"))
    x = io("lstm_states")["input/0"]  # batch 3
    with pytest.raises(BadInputs, match=message) as caught:
        model.predict(x, initial_states=states)
    assert "\n" not in str(caught.value) and str(model.path) in str(caught.value)


def test_set_states_with_another_batch_is_refused_at_the_call() -> None:
    model = converter.load(model_file("gru_states"))
    model.set_states({"gru/h": np.zeros((5, 4), np.float32)})
    with pytest.raises(BadInputs, match=r"layer 'gru' have shape \(5, 4\), but this call's inputs need \(3, 4\)"):
        model.predict(io("gru_states")["input/0"])


def test_states_of_a_layer_fed_by_model_inputs_are_refused() -> None:
    model = converter.load(model_file("initial_state", "2"))
    with pytest.raises(BadInputs, match="takes its initial states from model inputs"):
        model.set_states({"lstm": {"h": np.zeros((1, 4)), "c": np.zeros((1, 4))}})


def test_bidirectional_needs_both_directions() -> None:
    model = converter.load(model_file("bidi_states"))
    x = io("bidi_states")["input/0"]
    h = np.zeros((len(x), 4), np.float32)
    with pytest.raises(BadInputs, match="needs states for both directions; missing 'backward'"):
        model.predict(x, initial_states={"bidirectional": {"forward": {"h": h, "c": h}}})


# One streaming loop, NumPy and ONNX --------------------------------------------------------------------------


def stream_chunks(step: Callable[[dict[str, Array]], dict[str, Array]], x: Array, cut: int) -> list[dict[str, Array]]:
    """The README's loop: feed each chunk and the previous chunk's final states (``lstm/h`` -> ``lstm/h0``)."""
    states: dict[str, Array] = {}
    results = []
    for chunk in (x[:, :cut], x[:, cut:]):
        out = step({"input_layer": chunk, **states})
        results.append(out)
        states = {f"{k}0": v for k, v in out.items() if k.endswith(("/h", "/c"))}
    return results


def test_one_streaming_loop_runs_against_numpy_cli_and_onnxruntime(tmp_path: Path) -> None:
    fx = model_file("open_time")  # LSTM -> GRU over any length
    x = np.random.default_rng(3).normal(size=(2, 7, 3)).astype(np.float32)
    want = converter.load(fx).predict(x)

    def via_cli(feeds: dict[str, Array]) -> dict[str, Array]:
        np.savez(tmp_path / "in.npz", **feeds)
        result = cli("predict", fx, "--inputs", tmp_path / "in.npz", "-o", tmp_path / "out.npz", "--force")
        assert result.exit_code == 0, result.output
        with np.load(tmp_path / "out.npz") as data:
            return {k: data[k] for k in data.files}

    onnx_path = tmp_path / "s.onnx"
    converter.to_onnx(fx, onnx_path, state_io=True, oracle="numpy")
    runner = Runner.open(onnx_path)
    for step in (via_cli, lambda feeds: runner.run(feeds)):
        _, second = stream_chunks(step, x, 4)
        assert sorted(k for k in second if "/" in k) == ["gru/h", "lstm/c", "lstm/h"]
        assert max_abs_error(second["gru"], want) <= ATOL


def test_predict_cli_refuses_bad_state_shapes(tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", input_layer=np.zeros((2, 3, 3), np.float32), **{"gru/h0": np.zeros((2, 9))})
    out = tmp_path / "out.npz"
    result = cli("predict", model_file("open_time"), "--inputs", tmp_path / "in.npz", "-o", out)
    assert result.exit_code == 2 and not out.exists()
    assert "layer 'lstm' takes states h, c" not in result.stderr  # only gru was given: it is gru's shape
    assert "state 'gru/h' has shape (2, 9), but layer 'gru' needs (2, 3)" in result.stderr
