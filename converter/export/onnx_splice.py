"""Write a one-file ``.onnx`` whose big weights never sit in memory as protobuf bytes.

``onnx.save`` needs the whole model serialised in memory: the weights held by the IR, again in the
proto, and a third time in the serialised bytes. Instead, the graph is built with its big tensors in a
scratch external-data file; this module then writes the model's small part with protobuf, and appends
each big tensor as a ``graph.initializer`` entry in protobuf's wire format, copying its bytes from the
scratch file in slices. Protobuf merges repeated fields and accepts fields in any order, so readers see
exactly the model ``onnx.save`` would have written (initializers in another order).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from onnx import GraphProto, ModelProto, TensorProto

_GRAPH = ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_INITIALIZER = GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
_RAW_DATA = TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number
_LENGTH_DELIMITED = 2
_COPY_BYTES = 64 * 2**20


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint.

    >>> varint(1), varint(300)
    (b'\\x01', b'\\xac\\x02')
    """
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, length: int) -> bytes:
    """The key and length of a length-delimited field."""
    return varint(number << 3 | _LENGTH_DELIMITED) + varint(length)


def save_inline(proto: ModelProto, path: Path, data: Path) -> None:
    """Write ``proto`` to ``path`` as one file, its external tensors (all stored in ``data``) made inline.

    ``proto`` loses its graph (it is consumed); ``data`` is left for the caller to remove.
    """
    graph = proto.graph
    spliced: list[tuple[bytes, int, int]] = []  # (entry prefix, offset in data, byte count)
    for index in reversed(range(len(graph.initializer))):
        tensor = graph.initializer[index]
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        where = {entry.key: entry.value for entry in tensor.external_data}
        offset, length = int(where.get("offset", 0)), int(where["length"])
        header = TensorProto(name=tensor.name, dims=tensor.dims, data_type=tensor.data_type).SerializeToString()
        raw_key = _field(_RAW_DATA, length)
        prefix = _field(_INITIALIZER, len(header) + len(raw_key) + length) + header + raw_key
        spliced.append((prefix, offset, length))
        del graph.initializer[index]
    spliced.reverse()
    graph_bytes = graph.SerializeToString()
    proto.ClearField("graph")
    graph_length = len(graph_bytes) + sum(len(prefix) + length for prefix, _, length in spliced)
    with path.open("wb") as out, data.open("rb") as source:
        out.write(proto.SerializeToString())
        out.write(_field(_GRAPH, graph_length))
        out.write(graph_bytes)
        for prefix, offset, length in spliced:
            out.write(prefix)
            source.seek(offset)
            _copy(source, out, length)


def _copy(source: BinaryIO, out: BinaryIO, length: int) -> None:
    while length:
        chunk = source.read(min(length, _COPY_BYTES))
        if not chunk:
            raise OSError("the scratch weight file is shorter than the tensors it should hold")
        out.write(chunk)
        length -= len(chunk)
