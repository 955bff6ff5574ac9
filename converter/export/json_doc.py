"""JSON export: the description, every tensor as ``{shape, dtype, data}`` and an optional test vector, in one
document (schema: ``schemas/export.schema.json``).

float32 values are written with 9 significant digits (``%.9g``). That is never the shortest form, but it is
provably exact through the path every JSON reader takes (parse as float64, then round to float32): 9 digits
put the decimal within 5e-9 (relative) of the float32 value, far inside the 3e-8 to the nearest rounding
boundary, so the float64 parse cannot move it across one. Negative zero is written as ``-0.0``.

The text is written tensor by tensor in slices, so a large model never exists as one big string; reading
turns each ``data`` list into an array as soon as the parser finishes it.

>>> import io, converter
>>> model = converter.load("fixtures/keras3/tutorial.keras").ir
>>> buffer = io.BytesIO()
>>> write_json(model, buffer, layout="onnx")
>>> rebuilt, vector = read_json(io.BytesIO(buffer.getvalue()))
>>> rebuilt.node("lstm").layer.weights["W_f"].tobytes() == model.node("lstm").layer.weights["W_f"].tobytes()
True
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from converter import ir
from converter.errors import BadModelFile, BadOptions
from converter.export.description import TestVector, check_format, describe, make_test_vector, undescribe, validate
from converter.export.guards import check_depth, check_inputs, check_shape, check_test_vector
from converter.export.layouts import model_tensors

_SLICE = 1 << 16  # values formatted per write


def write_json(
    model: ir.Model,
    file: IO[bytes] | IO[str] | str | os.PathLike[str],
    layout: str = "keras",
    test_inputs: dict[str, np.ndarray] | None = None,
    test_outputs: dict[str, np.ndarray] | None = None,
) -> None:
    """Write ``model`` as one JSON document to an open file (binary or text) or a path.

    Raises ``UnsupportedLayer`` (layout cannot hold a layer), ``BadInputs`` (test vector does not fit) or
    ``BadOptions`` (NaN or Inf, which JSON cannot hold) before anything is written.
    """
    tensors = model_tensors(model, layout)  # every refusal happens before a byte is written
    doc = describe(model, layout)
    vector = make_test_vector(model, test_inputs, test_outputs)
    _check_finite(model, vector)
    parts = _document(doc, tensors, vector)
    if isinstance(file, str | os.PathLike):
        with open(file, "wb") as handle:
            _emit(handle, parts)
    else:
        _emit(file, parts)


def read_json(file: str | os.PathLike[str] | IO[bytes] | IO[str]) -> tuple[ir.Model, TestVector | None]:
    """Read a document written by ``write_json``: the rebuilt model and its test vector (None if none)."""
    where = str(file) if isinstance(file, str | os.PathLike) else getattr(file, "name", "JSON document")
    try:
        if isinstance(file, str | os.PathLike):
            with open(file, encoding="utf-8") as handle:  # text mode: the text is held once, as str only
                text = handle.read()
        else:
            text = file.read()
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        check_depth(text, where)  # json.loads recurses: a 100,000-deep document must not reach it
        doc = json.loads(text, object_hook=_hook, parse_constant=_no_constants)
        del text
    except FileNotFoundError as e:
        raise BadModelFile(f"{where}: no such file.") from e
    except OSError as e:
        raise BadModelFile(f"{where}: cannot be read ({e.strerror or e}).") from e
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadModelFile(f"{where}: not valid JSON ({e}).") from e
    if not isinstance(doc, dict) or "model" not in doc:
        raise BadModelFile(f'{where}: not an lstm-convert JSON export (no "model" member).')
    check_format(doc["model"], where)
    validate(doc, "export.schema.json", where)  # fast: each data list is an empty stand-in by now
    listed = {t["key"] for node in doc["model"]["nodes"] for t in node["tensors"]}
    for key in doc["tensors"]:
        if key not in listed:
            raise BadModelFile(f"{where}: tensor '{key}' is not listed in the model description.")
    tensors = {key: _array(entry, f"tensor '{key}'", where) for key, entry in doc["tensors"].items()}
    model = undescribe(doc["model"], tensors, where)
    check_inputs(model, where)
    test = doc.get("test")
    if test is None:
        return model, None
    inputs = {name: _array(e, f"test input '{name}'", where) for name, e in test["inputs"].items()}
    outputs = {name: _array(e, f"test output '{name}'", where) for name, e in test["outputs"].items()}
    vector = make_test_vector(model, inputs, outputs, BadModelFile, where)
    check_test_vector(model, vector.inputs, vector.outputs, where)  # type: ignore[union-attr]
    return model, vector


def _document(doc: dict, tensors: dict, vector: TestVector | None) -> Iterator[str]:
    yield '{"model": ' + json.dumps(doc, indent=1) + ',\n"tensors": {'
    first = True
    for node_tensors in tensors.values():
        for t in node_tensors:  # one converted tensor at a time
            yield ("\n" if first else ",\n") + json.dumps(t.key) + ": "
            yield from _array_text(t.array())
            first = False
    yield "\n}"
    if vector is not None:
        for part in ("inputs", "outputs"):
            yield ',\n"test": {"inputs": {' if part == "inputs" else '},\n "outputs": {'
            for k, (name, array) in enumerate(getattr(vector, part).items()):
                yield ("\n  " if k == 0 else ",\n  ") + json.dumps(name) + ": "
                yield from _array_text(array)
        yield "}}"
    yield "\n}\n"


def _array_text(array: np.ndarray) -> Iterator[str]:
    yield f'{{"shape": {json.dumps(list(array.shape))}, "dtype": "{array.dtype.name}", "data": ['
    flat = np.ascontiguousarray(array).reshape(-1)
    for start in range(0, flat.size, _SLICE):
        part = flat[start : start + _SLICE]
        values = part.tolist()
        if part.dtype.kind == "b":
            texts = ["true" if v else "false" for v in values]
        elif part.dtype.kind in "iu":
            texts = list(map(str, values))
        elif part.dtype == np.float32:
            texts = list(map("%.9g".__mod__, values))
            for i in np.flatnonzero((part == 0) & np.signbit(part)):
                texts[i] = "-0.0"  # "-0" would read back as the integer 0
        else:
            texts = list(map(repr, values))  # float64: Python's repr round-trips exactly
        yield ("," if start else "") + ",".join(texts)
    yield "]}"


def _emit(handle: IO[Any], parts: Iterator[str]) -> None:
    text_mode = isinstance(handle, io.TextIOBase)
    for part in parts:
        handle.write(part if text_mode else part.encode("utf-8"))


def _check_finite(model: ir.Model, vector: TestVector | None) -> None:
    arrays = [(f"weight '{key}'", array) for key, array in ir.iter_weights(model)]
    if vector is not None:
        arrays += [(f"test array '{k}'", a) for k, a in (vector.inputs | vector.outputs).items()]
    for what, array in arrays:
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise BadOptions(f"{what} holds NaN or Inf, which JSON cannot represent; export to npz instead.")


class _Values(list):
    """A ``data`` list once parsed: empty, so the schema check stays fast, with the numbers kept as an array."""

    def __init__(self, values: list) -> None:
        super().__init__()
        try:
            self.array: np.ndarray | None = np.array(values)
        except (ValueError, OverflowError):  # ragged nesting and the like
            self.array = None


def _hook(obj: dict[str, Any]) -> dict[str, Any]:
    if obj.keys() == {"shape", "dtype", "data"} and type(obj["data"]) is list:
        obj["data"] = _Values(obj["data"])
    return obj


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _array(entry: dict[str, Any], what: str, where: str) -> np.ndarray:
    dtype, shape = np.dtype(entry["dtype"]), check_shape(entry["shape"], where, what)
    values = entry["data"].array if isinstance(entry["data"], _Values) else None
    allowed = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[dtype.kind]  # a float may be written "1"
    if values is None or values.ndim != 1 or (values.size and values.dtype.kind not in allowed):
        kind = "true/false values" if dtype.kind == "b" else "numbers"
        raise BadModelFile(f"{where}: {what}: data must be a flat list of {kind} for dtype {dtype.name}.")
    if values.size != math.prod(shape):
        raise BadModelFile(
            f"{where}: {what} has {values.size} values, but its shape {list(shape)} needs {math.prod(shape)}."
        )
    with np.errstate(over="ignore", invalid="ignore"):
        result = values.astype(dtype)
    if (dtype.kind == "f" and not np.isfinite(result).all()) or (dtype.kind in "iu" and not (result == values).all()):
        raise BadModelFile(f"{where}: {what} holds a value outside the range of {dtype.name}.")
    return result.reshape(shape)
