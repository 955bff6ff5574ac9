"""The visual report without a browser: self-contained, every gate block drawn with its exact values, the
traces those of ``trace()``, big layers capped, and the CLI's file rules."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import converter
from converter import ir
from converter.cli import app
from converter.verification import sample_inputs
from tests.fixture_index import ATOL, max_abs_error, one_form_each
from tests.hostile_names import MARKUP, renamed
from tests.report_models import expected_panels, stacked_lstms

#: one fixture of each kind of recurrent layer: LSTM, GRU (reset_after: recurrent biases), GRU (reset
#: before), SimpleRNN, Bidirectional, a stack of mixed cells, a masked LSTM (NaN at masked steps), a shared one
KINDS = ["tutorial", "gru_reset_after", "gru_reset_before", "simple_rnn", "bidi_concat", "rnn_stacked_mixed"]
KINDS += ["masked_lstm", "shared_lstm", "no_bias", "bidi_gru_rnn"]
BLOCKS = {
    "lstm": {"W_i", "W_f", "W_c", "W_o", "U_i", "U_f", "U_c", "U_o"},
    "gru": {"W_z", "W_r", "W_h", "U_z", "U_r", "U_h"},
    "simple_rnn": {"W", "U"},
}
FIGURE = re.compile(r'<figure data-panel="(\w+)"([^>]*)>(.*?)</figure>', re.S)


def fixture(name: str, keras: str = "3"):
    return next(f for f in one_form_each() if f.name == name and f.keras == keras)


def panels(html: str) -> list[tuple[str, dict[str, str], str]]:
    """(kind, data attributes, inner HTML) of every panel of a report."""
    found = []
    for kind, attrs, body in FIGURE.findall(html):
        found.append((kind, dict(re.findall(r'data-([\w-]+)="([^"]*)"', attrs)), body))
    return found


def titles(body: str, name: str) -> dict[tuple[int, ...], np.float32]:
    """``name[i, j] = v`` titles of a panel, by index."""
    pattern = "<title>" + re.escape(name) + r"\[([\d, ]+)\] = ([-\w.+]+)</title>"
    return {tuple(int(k) for k in idx.split(", ")): np.float32(v) for idx, v in re.findall(pattern, body)}


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, tuple[converter.LoadedModel, str]]:
    folder = tmp_path_factory.mktemp("reports")
    result = {}
    for name in KINDS:
        fx = fixture(name)
        converter.report(fx.path, folder / f"{name}.html")
        result[name] = (converter.load(fx.path), (folder / f"{name}.html").read_text(encoding="utf-8"))
    return result


@pytest.mark.parametrize("name", KINDS)
def test_the_file_needs_no_network(reports, name) -> None:
    _, html = reports[name]
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"\b(src|href)\s*=", html) and "<link" not in html and "@import" not in html
    assert not re.search(r"url\((?!#)", html)  # only the graph's own arrow marker, by fragment


@pytest.mark.parametrize("name", KINDS)
def test_every_gate_block_is_drawn_with_its_exact_values(reports, name) -> None:
    model, html = reports[name]
    found = panels(html)
    assert {k: sum(1 for p in found if p[0] == k) for k in expected_panels(model.ir)} == expected_panels(model.ir)
    for node in model.ir.recurrent_nodes:
        if node.weights_of is not None:
            continue
        for d, op in ir.recurrent_directions(node.layer).items():
            mine = [p for p in found if p[1].get("layer") == node.name and p[1].get("direction") == d]
            heatmaps = {re.search(r'data-block="(\w+)"', body)[1]: body for kind, _, body in mine if kind == "heatmap"}
            assert set(heatmaps) == BLOCKS[op.kind]
            for block, body in heatmaps.items():
                got, want = titles(body, block), op.weights[block]
                assert len(got) == want.size
                assert all(v == want[idx] for idx, v in got.items())
            (bias,) = [body for kind, _, body in mine if kind == "bias"] or [None]
            vectors = {k: a for k, a in op.weights.items() if a.ndim == 1}
            assert (bias is None) == (not vectors)
            for key, want in vectors.items():
                got = titles(bias, key)
                assert len(got) == want.size and all(v == want[idx] for idx, v in got.items())


@pytest.mark.parametrize("name", KINDS)
def test_the_traced_lines_are_those_of_trace(reports, name) -> None:
    model, html = reports[name]
    traced = model.trace(sample_inputs(model.ir, batch=1))
    plots = {attrs["key"]: body for kind, attrs, body in panels(html) if kind == "trace"}
    assert set(plots) == set(traced)
    for key, body in plots.items():
        lines = re.findall(r"unit (\d+): ([^<]*)</title>", body)
        assert len(lines) == min(8, traced[key].shape[2])
        for unit, values in lines:
            got = np.array(values.split(), np.float32)
            np.testing.assert_array_equal(got, traced[key][0, :, int(unit)])
    if name == "masked_lstm":  # masked steps are gaps in the lines
        assert any(np.isnan(v).any() for v in traced.values()) and " nan" in html


def test_a_big_model_is_capped_and_says_so(tmp_path) -> None:
    model = stacked_lstms(units=256, input_dim=256)
    out = converter.report(model, tmp_path / "big.html")
    html = out.read_text(encoding="utf-8")
    assert out.stat().st_size < 4_000_000
    w_i = next(body for kind, a, body in panels(html) if kind == "heatmap" and 'data-block="W_i"' in body)
    got = titles(w_i, "W_i")
    assert set(got) == {(i, j) for i in range(32) for j in range(32)}
    want = model.ir.nodes[0].layer.weights["W_i"]
    assert all(v == want[idx] for idx, v in got.items())
    assert "showing the first 32 of 256 rows and the first 32 of 256 columns" in html
    assert "units 0-7 of 256" in html
    small = converter.report(model, tmp_path / "small.html", max_cells=4)
    assert len(re.findall(r"<title>W_i\[", small.read_text(encoding="utf-8"))) == 2 * 16  # two W_i, 4 x 4 each


def test_the_formulas_with_named_terms_are_shown(reports) -> None:
    _, html = reports["tutorial"]
    doc = converter.inspect(fixture("tutorial").path)
    for layer in doc["layers"]:
        assert layer["formula"] in html and layer["explained"] in html
    assert "W_f (3, 5) = kernel[:, 5:10]" in html
    assert "i = sigmoid(x @ W_i + h_prev @ U_i + b_i)" in html and "h = o * tanh(c)" in html


def test_cli_writes_refuses_and_overwrites(tmp_path) -> None:
    fx = fixture("tutorial")
    out = tmp_path / "model.html"
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(fx.path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    out.write_text("mine")
    result = runner.invoke(app, ["report", str(fx.path), "-o", str(out)])
    assert result.exit_code == 2 and "already exists; pass --force" in result.output
    assert out.read_text() == "mine"
    assert runner.invoke(app, ["report", str(fx.path), "-o", str(out), "--force"]).exit_code == 0
    assert "<svg" in out.read_text(encoding="utf-8")
    missing = tmp_path / "nowhere" / "m.html"
    result = runner.invoke(app, ["report", str(fx.path), "-o", str(missing)])
    assert result.exit_code == 2 and "does not exist" in result.output and not missing.parent.exists()


def test_cli_traces_the_given_inputs_and_refuses_bad_ones(tmp_path) -> None:
    fx = fixture("tutorial")
    x = np.random.default_rng(7).normal(size=(2, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input_layer=x)
    out = tmp_path / "m.html"
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(fx.path), "-o", str(out), "--inputs", str(tmp_path / "in.npz")])
    assert result.exit_code == 0, result.output
    traced = converter.load(fx.path).trace(x)
    body = next(b for kind, a, b in panels(out.read_text(encoding="utf-8")) if a.get("key") == "lstm/f")
    values = re.search(r"unit 2: ([^<]*)</title>", body)[1]
    np.testing.assert_array_equal(np.array(values.split(), np.float32), traced["lstm/f"][0, :, 2])
    np.savez(tmp_path / "bad.npz", a=x, b=x)
    bad = tmp_path / "bad.html"
    result = runner.invoke(app, ["report", str(fx.path), "-o", str(bad), "--inputs", str(tmp_path / "bad.npz")])
    assert result.exit_code == 2 and "input_layer" in result.output and len(result.output.splitlines()) == 1
    assert not bad.exists() and not list(tmp_path.glob(".*"))


def test_bad_options_are_refused(tmp_path) -> None:
    with pytest.raises(converter.BadOptions, match="max_cells is 0"):
        converter.report(fixture("tutorial").path, tmp_path / "m.html", max_cells=0)
    assert not (tmp_path / "m.html").exists()


def test_the_readme_screenshot_is_small_and_committed() -> None:
    png = Path(__file__).resolve().parent.parent / "docs" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000


def test_a_stacked_rnn_is_traced_per_cell() -> None:
    fx = fixture("rnn_stacked_mixed")  # [Dense(last), h_gru, h_rnn, h_lstm, c_lstm] from initial states
    traced = converter.load(fx.path).trace(fx.inputs())
    _, h_gru, h_rnn, h_lstm, c_lstm = fx.outputs()
    for key, want in (("cell_0/h", h_gru), ("cell_1/h", h_rnn), ("cell_2/h", h_lstm), ("cell_2/c", c_lstm)):
        assert max_abs_error(traced[f"rnn/{key}"][:, -1], want) <= ATOL
    assert sorted(k.split("/")[1] for k in traced if k.endswith("/h")) == ["cell_0", "cell_1", "cell_2"]


def test_names_from_the_model_file_stay_text(tmp_path) -> None:
    """A report of an uploaded model is opened in a browser: layer, output and model names that carry
    markup (a script tag, an attribute breaking out of its quotes) are escaped, never HTML or script."""

    from converter.api import LoadedModel

    fx = fixture("masked_lstm")
    model = converter.load(fx.path).ir
    evil = MARKUP
    model = renamed(model, evil)
    out = converter.report(LoadedModel(model, fx.path), tmp_path / "r.html")
    html = out.read_text()
    assert html.count("<script") == 1 and "<img" not in html and "window.PWNED" in html
    assert "&lt;script&gt;window.PWNED=1&lt;/script&gt;" in html
