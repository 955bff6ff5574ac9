"""Mutated fixture files (bit flips, truncation, edited config JSON, deleted or resized datasets, shuffled
zip members) either convert or raise ``ConversionError``: never another exception, never a hang.

CI runs a few hundred cases; ``LSTM_CONVERT_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py`` runs
a longer campaign by hand.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import converter
from converter.errors import ConversionError
from converter.verification import sample_inputs
from tests.fixture_index import FIXTURES

EXAMPLES = int(os.environ.get("LSTM_CONVERT_FUZZ_EXAMPLES", "120"))
SOURCES = [
    FIXTURES / "keras3" / "tutorial.keras",
    FIXTURES / "keras3" / "masked_states.keras",
    FIXTURES / "keras3" / "bidi_states.h5",
    FIXTURES / "keras2" / "stacked.h5",
    FIXTURES / "keras2" / "initial_state.h5",
]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=5000,  # ms per case: a hang shows up as a failure
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 1 << 40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def outcome_is_clean(path: Path) -> None:
    """Load and run: success or ConversionError are the only acceptable outcomes."""
    try:
        model = converter.load(path)
        model.predict_dict(sample_inputs(model.ir))
    except ConversionError:
        pass


@FUZZ
@given(source=st.sampled_from(SOURCES), data=st.data())
def test_bit_flips_and_truncation(tmp_path_factory: pytest.TempPathFactory, source: Path, data: st.DataObject) -> None:
    blob = bytearray(source.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        blob = blob[: data.draw(st.integers(0, len(blob) - 1), label="length")]
    for _ in range(data.draw(st.integers(0, 8), label="flips")):
        if blob:
            at = data.draw(st.integers(0, len(blob) - 1), label="offset")
            blob[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    path = tmp_path_factory.mktemp("fuzz") / source.name
    path.write_bytes(bytes(blob))
    outcome_is_clean(path)


def _edit_json(doc: object, data: st.DataObject) -> object:
    """Replace one randomly chosen value deep inside a JSON document."""
    if isinstance(doc, dict) and doc and data.draw(st.booleans(), label="descend"):
        key = data.draw(st.sampled_from(sorted(doc)), label="key")
        return {**doc, key: _edit_json(doc[key], data)}
    if isinstance(doc, list) and doc and data.draw(st.booleans(), label="descend"):
        at = data.draw(st.integers(0, len(doc) - 1), label="index")
        return [*doc[:at], _edit_json(doc[at], data), *doc[at + 1 :]]
    return data.draw(json_values, label="value")


@FUZZ
@given(data=st.data())
def test_edited_config_and_shuffled_members(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    source = data.draw(st.sampled_from([s for s in SOURCES if s.suffix == ".keras"]), label="source")
    with zipfile.ZipFile(source) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    config = json.loads(members["config.json"])
    members["config.json"] = json.dumps(_edit_json(config, data)).encode()
    order = data.draw(st.permutations(sorted(members)), label="order")
    path = tmp_path_factory.mktemp("fuzz") / source.name
    with zipfile.ZipFile(path, "w") as z:
        for name in order:
            z.writestr(name, members[name])
    outcome_is_clean(path)


def _datasets(f: h5py.File) -> list[str]:
    found: list[str] = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(found)


@FUZZ
@given(data=st.data())
def test_deleted_or_resized_datasets(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    source = data.draw(st.sampled_from([s for s in SOURCES if s.suffix == ".h5"]), label="source")
    path = tmp_path_factory.mktemp("fuzz") / source.name
    path.write_bytes(source.read_bytes())
    with h5py.File(path, "r+") as f:
        name = data.draw(st.sampled_from(_datasets(f)), label="dataset")
        del f[name]
        if data.draw(st.booleans(), label="resize"):
            shape = tuple(data.draw(st.lists(st.integers(0, 9), max_size=3), label="shape"))
            dtype = data.draw(st.sampled_from(["f4", "f8", "i4", "f2"]), label="dtype")
            f.create_dataset(name, data=np.ones(shape, dtype))
    outcome_is_clean(path)


def test_fuzz_sources_are_valid() -> None:
    """The mutations start from files that convert, so a refusal is the mutation's doing."""
    for source in SOURCES:
        outcome = converter.load(source)
        assert outcome.predict_dict(sample_inputs(outcome.ir))


def test_in_memory_zip_bytes_roundtrip() -> None:
    buffer = io.BytesIO((FIXTURES / "keras3" / "tutorial.keras").read_bytes())
    assert zipfile.is_zipfile(buffer)
