"""Gate traces: every recurrent layer's per-step gates and states, as the tutorials name them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import converter
from converter.cli import app
from tests.fixture_index import ATOL, FIXTURES, max_abs_error, one_form_each


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_lstm_trace_obeys_the_tutorial_equations_and_matches_keras() -> None:
    fx = next(f for f in one_form_each() if f.name == "lstm_states" and f.keras == "3")
    model = converter.load(fx.path)
    trace = model.trace(fx.inputs())
    i, f, c_tilde, o, c, h = (trace[f"lstm/{k}"] for k in ("i", "f", "c_tilde", "o", "c", "h"))
    c_prev = np.concatenate([np.zeros_like(c[:, :1]), c[:, :-1]], axis=1)
    assert max_abs_error(c, f * c_prev + i * c_tilde) <= 1e-6  # c = f*c + i*c~
    assert max_abs_error(h, o * np.tanh(c)) <= 1e-6  # h = o*tanh(c)
    sequence, h_last, c_last = fx.outputs()  # what Keras recorded: [seq, h, c]
    assert max_abs_error(h, sequence) <= ATOL
    assert max_abs_error(h[:, -1], h_last) <= ATOL and max_abs_error(c[:, -1], c_last) <= ATOL
    x = fx.inputs()[0]
    layer = model.ir.nodes[0].layer
    z = x[:, 0] @ layer.weights["W_f"] + layer.weights["b_f"]  # the first step's forget gate, by hand
    assert max_abs_error(f[:, 0], sigmoid(z)) <= 1e-6


def test_gru_trace_and_masked_steps() -> None:
    fx = next(f for f in one_form_each() if f.name == "masked_last" and f.keras == "2")
    x = fx.inputs()[0]
    trace = converter.load(fx.path).trace(x)
    assert sorted(trace) == ["gru/h", "gru/h_tilde", "gru/r", "gru/z"]
    masked = ~np.any(x != 0, axis=-1)
    assert masked.any() and np.isnan(trace["gru/z"][masked]).all() and not np.isnan(trace["gru/z"][~masked]).any()
    z, hh, h = trace["gru/z"], trace["gru/h_tilde"], trace["gru/h"]
    for t in range(1, x.shape[1]):
        valid = ~masked[:, t]
        expected = z[valid, t] * h[valid, t - 1] + (1 - z[valid, t]) * hh[valid, t]  # h = z*h + (1-z)*h~
        assert max_abs_error(h[valid, t], expected) <= 1e-6
        assert np.array_equal(h[~valid, t], h[~valid, t - 1])  # carried over a masked step


def test_bidirectional_and_go_backwards_traces_are_in_input_time_order() -> None:
    fx = next(f for f in one_form_each() if f.name == "bidi_none" and f.keras == "3")
    trace = converter.load(fx.path).trace(fx.inputs())
    forward, backward = fx.outputs()  # merge_mode=None: [fw, bw], bw in input time order (Keras reverses it back)
    assert max_abs_error(trace["bidirectional/forward/h"], forward) <= ATOL
    assert max_abs_error(trace["bidirectional/backward/h"], backward) <= ATOL


def test_predict_trace_cli(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = ["predict", str(FIXTURES / "keras3/tutorial.keras"), "--inputs", str(tmp_path / "x.npy")]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "y.npz"), "--trace", str(tmp_path / "t.npz")])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "t.npz") as data:
        assert sorted(data.files) == ["lstm/c", "lstm/c_tilde", "lstm/f", "lstm/h", "lstm/i", "lstm/o"]
        assert data["lstm/h"].shape == (2, 4, 5)
        expected = converter.load(FIXTURES / "keras3/tutorial.keras").trace(x)
        assert all(np.array_equal(data[k], expected[k]) for k in data.files)
