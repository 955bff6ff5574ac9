"""The NumPy runtime reproduces what real Keras 3 and Keras 2 computed, for every fixture and file form."""

from __future__ import annotations

import numpy as np
import pytest

import converter
from tests.fixture_index import ATOL, all_fixtures, max_abs_error

FIXTURES = all_fixtures()


@pytest.mark.parametrize("fx", FIXTURES, ids=[f.id for f in FIXTURES])
def test_runtime_matches_keras(fx) -> None:
    model = converter.load(fx.path, config=fx.config)
    got = list(model.predict_dict(fx.inputs()).values())
    want = fx.outputs()
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert max_abs_error(g, w) <= ATOL
    if fx.entry["stateful"]:  # the second call continues from the states the first one left
        got2 = list(model.predict_dict(fx.inputs(call=2)).values())
        for g, w in zip(got2, fx.outputs(call=2), strict=True):
            assert max_abs_error(g, w) <= ATOL


def test_stateful_reset_states_starts_from_zero() -> None:
    fx = next(f for f in FIXTURES if f.name == "stateful" and f.keras == "3")
    model = converter.load(fx.path)
    model.predict(fx.inputs())
    carried = model.predict(fx.inputs(call=2))
    model.reset_states()
    fresh = model.predict(fx.inputs(call=2))
    assert max_abs_error(carried, fx.outputs(call=2)[0]) <= ATOL
    assert max_abs_error(fresh, carried) > 1e-3  # the carried state really mattered


def test_masked_steps_repeat_previous_output() -> None:
    """Keras semantics, checked on the recorded outputs themselves: a masked step repeats the last output."""
    fx = next(f for f in FIXTURES if f.name == "masked_states" and f.keras == "3")
    x = fx.inputs()[0]
    seq = converter.load(fx.path).predict(x)[0]
    masked = ~np.any(x != 0, axis=-1)
    sample, step = 1, x.shape[1] - 1  # post-padded sample: last steps masked
    assert masked[sample, step]
    np.testing.assert_array_equal(seq[sample, step], seq[sample, step - 2])
