"""The safetensors file format (huggingface/safetensors), written and read with NumPy alone.

The format is simple and fixed: an 8-byte little-endian header length N, N bytes of JSON header
(``{"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}``,
padded with spaces so the data starts 8-byte aligned), then the tensors' little-endian C-order bytes, one
after another with no gap. Writing it here keeps the converter free of the ``safetensors`` package (and of
torch); the generated PyTorch file reads it with ``safetensors.torch.load_file``. Nothing is pickled.

>>> import io
>>> buffer = io.BytesIO()
>>> write_safetensors(buffer, [("lstm.weight_ih_l0", np.ones((2, 3), np.float32))], {"source": "m.keras"})
>>> arrays, meta = read_safetensors(io.BytesIO(buffer.getvalue()), "m.safetensors")
>>> arrays["lstm.weight_ih_l0"].shape, meta
((2, 3), {'source': 'm.keras'})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import IO

import numpy as np

from converter.errors import BadModelFile

_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4")}
_NAMES = {v: k for k, v in _DTYPES.items()}
#: A header past this many bytes is refused before it is read (the official reader's limit is 100 MB).
MAX_HEADER = 100_000_000


def write_safetensors(
    fh: IO[bytes], tensors: Iterable[tuple[str, np.ndarray]], metadata: Mapping[str, str] | None = None
) -> None:
    """Write named arrays (float32/float64/int32/int64), in the order given, to an open binary file."""
    arrays = [(name, np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))) for name, a in tensors]
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, array in arrays:
        if array.dtype not in _NAMES:
            raise ValueError(f"safetensors: {name} has dtype {array.dtype}, which this writer does not write")
        header[name] = {
            "dtype": _NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % 8)
    fh.write(len(text).to_bytes(8, "little"))
    fh.write(text)
    for _, array in arrays:
        fh.write(memoryview(array).cast("B"))


def read_safetensors(fh: IO[bytes], where: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays and metadata of a safetensors file; anything off the format is a ``BadModelFile``."""
    bad = lambda why: BadModelFile(f"{where}: not a valid safetensors file ({why}).")  # noqa: E731
    head = fh.read(8)
    if len(head) != 8:
        raise bad("it is shorter than its 8-byte header length")
    size = int.from_bytes(head, "little")
    if size > MAX_HEADER:
        raise bad(f"its header claims {size} bytes")
    raw = fh.read(size)
    if len(raw) != size:
        raise bad("its header is cut short")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = fh.read()
    arrays, end = {}, 0
    for name, entry in sorted(header.items(), key=lambda item: _offsets(item[1])):
        if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPES:
            raise bad(f"tensor {name!r} has no dtype this reader knows")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise bad(f"tensor {name!r} has a bad shape")
        begin, stop = _offsets(entry)
        dtype = _DTYPES[entry["dtype"]]
        if begin != end or stop - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or stop > len(data):
            raise bad(f"tensor {name!r} does not lie where its shape and offsets say")
        arrays[name] = np.frombuffer(data, dtype, count=(stop - begin) // dtype.itemsize, offset=begin).reshape(shape)
        end = stop
    if end != len(data):
        raise bad(f"{len(data) - end} bytes after the last tensor")
    return arrays, metadata


def _offsets(entry: object) -> tuple[int, int]:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and o >= 0 for o in offsets):
        return offsets[0], offsets[1]
    return (-1, -1)
