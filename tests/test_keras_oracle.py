"""Keras as the oracle: one worker process per run, its start-up reported once, TensorFlow's logs kept quiet."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import converter
from tests.fixture_index import ATOL, FIXTURES, ROOT, max_abs_error, one_form_each


def test_one_worker_serves_a_whole_batch_and_reports_its_start_once(tmp_path) -> None:
    reports = [
        converter.to_onnx(FIXTURES / name, tmp_path / f"{k}.onnx", oracle="keras")
        for k, name in enumerate(["keras3/tutorial.keras", "keras2/stacked.h5", "keras3/gru_states.keras"])
    ]
    assert [r.oracle for r in reports] == ["keras 3.15.1", "tf_keras 2.21.0", "keras 3.15.1"]
    assert all(r.passed for r in reports)
    assert reports[2].oracle_seconds == 0.0  # Keras 3 was already imported in the worker
    assert all(0 <= r.oracle_seconds <= r.seconds for r in reports)


def test_the_worker_computes_what_keras_recorded() -> None:
    from converter.keras_oracle import worker

    for fx in [f for f in one_form_each() if f.name in ("masked_bidi", "multi_io", "embedding")]:
        model = converter.load(fx.path, config=fx.config).ir
        names = [s.name for s in model.inputs]
        feeds = dict(zip(names, fx.inputs(), strict=True))
        (outputs,), oracle, _ = worker().predict(
            fx.path, fx.config, model.keras_major, names, list(model.output_names), feeds
        )
        assert oracle.startswith("keras " if fx.keras == "3" else "tf_keras ")
        for got, want in zip(outputs.values(), fx.outputs(), strict=True):
            assert max_abs_error(got, want) <= ATOL


def test_the_worker_calls_a_stateful_model_again_from_its_states() -> None:
    """``calls=2`` predicts twice on one loaded model: the first call is Keras' recorded one, the second
    continues from its states (as the NumPy runtime, proven against Keras' recorded second calls, does)."""
    from converter.keras_oracle import worker

    stateful = [f for f in one_form_each() if f.entry.get("stateful")]
    assert stateful
    for fx in stateful:
        loaded = converter.load(fx.path, config=fx.config)
        model = loaded.ir
        names = [s.name for s in model.inputs]
        feeds = dict(zip(names, fx.inputs(), strict=True))
        loaded.predict_dict(feeds)
        again = loaded.predict_dict(feeds)
        first, second = worker().predict(
            fx.path, fx.config, model.keras_major, names, list(model.output_names), feeds, calls=2
        )[0]
        for got, want in zip(first.values(), fx.outputs(), strict=True):
            assert max_abs_error(got, want) <= ATOL, fx.id
        for got, want, fresh in zip(second.values(), again.values(), first.values(), strict=True):
            assert max_abs_error(got, want) <= ATOL and max_abs_error(got, fresh) > 1e-3, fx.id


def test_keras_failing_on_a_file_falls_back_to_the_numpy_runtime_saying_why(tmp_path) -> None:
    # Keras 3 cannot reload its own legacy .h5 of a functional masked model ("Unknown layer: 'NotEqual'").
    report = converter.to_onnx(FIXTURES / "keras3/masked_states.h5", tmp_path / "m.onnx")
    assert report.passed and report.oracle == "numpy runtime (Keras could not run the file: ValueError)"


def test_tensorflow_logs_do_not_reach_the_terminal(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "converter", "to-onnx", str(FIXTURES / "keras3/tutorial.keras"), "-o",
         str(tmp_path / "t.onnx"), "--json", "--oracle", "keras"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    doc = json.loads(done.stdout)
    assert doc["oracle"] == "keras 3.15.1" and doc["oracle_seconds"] > 0
    assert np.isfinite(doc["worst_abs_error"])
