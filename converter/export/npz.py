"""npz export: the weights in a chosen layout, the description as ``__model__``, and an optional test vector.

Every entry is a plain array (no pickles): ``np.load(path, allow_pickle=False)`` opens the file, and
``json.loads(str(data["__model__"]))`` gives the description (``schemas/model.schema.json``). A test vector is
stored as ``__test__/inputs/<input name>`` and ``__test__/outputs/<output name>``.

>>> import io, converter
>>> model = converter.load("fixtures/keras3/tutorial.keras").ir
>>> buffer = io.BytesIO()
>>> write_npz(model, buffer, layout="pytorch")
>>> _ = buffer.seek(0)
>>> sorted(np.load(buffer, allow_pickle=False).files)[:3]
['__model__', 'dense.bias', 'dense.weight']
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from typing import IO

import numpy as np

from converter import ir
from converter.errors import BadModelFile
from converter.export.description import TestVector, describe, make_test_vector, undescribe
from converter.export.guards import check_depth, check_inputs, check_npz, check_test_vector
from converter.export.layouts import model_tensors

MODEL_KEY = "__model__"
TEST_PREFIX = "__test__/"


def write_npz(
    model: ir.Model,
    file: IO[bytes] | str | os.PathLike[str],
    layout: str = "keras",
    test_inputs: dict[str, np.ndarray] | None = None,
    test_outputs: dict[str, np.ndarray] | None = None,
) -> None:
    """Write ``model`` to an open binary file (or a path) as npz. Raises ``UnsupportedLayer`` for a layer the
    layout cannot hold, and ``BadInputs`` for a test vector that does not fit, before writing anything."""
    tensors = model_tensors(model, layout)  # every refusal happens here, before a byte is written
    doc = describe(model, layout)
    vector = make_test_vector(model, test_inputs, test_outputs)
    if isinstance(file, str | os.PathLike):
        with open(file, "wb") as handle:
            _write(handle, doc, tensors, vector)
    else:
        _write(file, doc, tensors, vector)


def read_npz(path: str | os.PathLike[str]) -> tuple[ir.Model, TestVector | None]:
    """Read an npz written by ``write_npz``: the rebuilt model and its test vector (None if it has none)."""
    where = str(path)
    if isinstance(path, str | os.PathLike) and os.path.isfile(path):
        check_npz(path, where)  # every npy header against its bytes, before NumPy allocates what they declare
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError as e:
        raise BadModelFile(f"{where}: no such file.") from e
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BadModelFile(f"{where}: not an npz file lstm-convert can read ({e}).") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise BadModelFile(f"{where}: holds a single array, not an lstm-convert npz export.")
    with data:
        entries = _Entries(data, where)
        if MODEL_KEY not in entries:
            raise BadModelFile(f"{where}: has no '{MODEL_KEY}' entry, so it is not an lstm-convert export.")
        text = entries[MODEL_KEY]
        if text.dtype.kind != "U" or text.ndim != 0:
            raise BadModelFile(f"{where}: '{MODEL_KEY}' must be one unicode string, not {text.dtype} {text.shape}.")
        check_depth(str(text), where, f"'{MODEL_KEY}'")
        try:
            doc = json.loads(str(text))
        except json.JSONDecodeError as e:
            raise BadModelFile(f"{where}: '{MODEL_KEY}' is not valid JSON ({e}).") from e
        model = undescribe(doc, entries, where)
        check_inputs(model, where)
        tests = [key for key in entries if key.startswith(TEST_PREFIX)]
        if not tests:
            return model, None
        found: dict[str, dict[str, np.ndarray]] = {"inputs": {}, "outputs": {}}
        for key in tests:
            part, _, name = key[len(TEST_PREFIX) :].partition("/")
            if part not in found or not name:
                raise BadModelFile(f"{where}: unexpected entry '{key}' (test entries are {TEST_PREFIX}inputs/<name>).")
            found[part][name] = entries[key]
        vector = make_test_vector(model, found["inputs"], found["outputs"], BadModelFile, where)
        check_test_vector(model, vector.inputs, vector.outputs, where)  # type: ignore[union-attr]
        return model, vector


def _write(handle: IO[bytes], doc: dict, tensors: dict, vector: TestVector | None) -> None:
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        _put(archive, MODEL_KEY, np.array(json.dumps(doc, indent=1)))
        for node_tensors in tensors.values():
            for t in node_tensors:  # built one at a time: a big model is never held twice
                _put(archive, t.key, t.array())
        if vector is not None:
            for part in ("inputs", "outputs"):
                for name, array in getattr(vector, part).items():
                    _put(archive, f"{TEST_PREFIX}{part}/{name}", array)


def _put(archive: zipfile.ZipFile, key: str, array: np.ndarray) -> None:
    # What np.savez does, without its keyword-argument names (a key like "file" would clash there).
    with archive.open(key + ".npy", "w", force_zip64=True) as out:
        np.lib.format.write_array(out, np.asanyarray(array), allow_pickle=False)


class _Entries(Mapping[str, np.ndarray]):
    """The arrays of an open npz, turning unreadable entries into ``BadModelFile`` naming the key."""

    def __init__(self, data: np.lib.npyio.NpzFile, where: str) -> None:
        self.data, self.where = data, where

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.data.files:
            raise KeyError(key)
        try:
            return self.data[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise BadModelFile(f"{self.where}: entry '{key}' cannot be read ({e}).") from e

    def __contains__(self, key: object) -> bool:
        return key in self.data.files

    def __iter__(self) -> Iterator[str]:
        return iter(self.data.files)

    def __len__(self) -> int:
        return len(self.data.files)


__all__ = ["TestVector", "read_npz", "write_npz"]
