"""A reader for the LevelDB table format (SSTable) that TensorFlow writes a tensor bundle's index in.

The file ends in a 48-byte footer: the metaindex and index block handles (offset and size, varints),
padding, and the magic number 0xdb4775248b80fb57. The index block maps separator keys to the handles
of the data blocks, which hold the sorted key/value pairs. A block is a run of entries
(``shared, non_shared, value_length`` varints, the key's new suffix, the value), then its restart
offsets (uint32 each) and their count (uint32); after the block come a compression type byte and the
masked CRC-32C of block and type byte. TensorFlow writes the blocks uncompressed (type 0); any other
type is refused, as is a checksum that does not match.
"""

from __future__ import annotations

import struct
from pathlib import Path

from converter.errors import BadModelFile
from converter.keras.crc32c import crc32c, unmask

MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
TRAILER_BYTES = 5  # compression type + masked crc32c
#: An index of a few thousand variables is a few hundred KB; anything this large is not a bundle index.
MAX_TABLE_BYTES = 256 * 1024 * 1024


class _Damaged(Exception):
    """Raised inside the parser; turned into one BadModelFile naming the file."""


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Damaged("a varint runs past its block")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _handle(data: bytes, pos: int, end: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(data, pos, end)
    size, pos = _varint(data, pos, end)
    return (offset, size), pos


def _block(data: bytes, handle: tuple[int, int], limit: int) -> bytes:
    offset, size = handle
    if offset + size + TRAILER_BYTES > limit:
        raise _Damaged(f"a block at {offset} of {size} bytes lies past the end of the table")
    contents = data[offset : offset + size]
    kind = data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if crc32c(data[offset : offset + size + 1]) != unmask(stored):
        raise _Damaged(f"the block at offset {offset} fails its CRC-32C check")
    if kind != 0:
        what = {1: "Snappy", 2: "zlib"}.get(kind, f"type {kind}")
        raise _Damaged(f"the block at offset {offset} is {what}-compressed; only uncompressed tables are read")
    return contents


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Damaged("a block is too short to hold its restart count")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if restarts == 0 or end < 0:
        raise _Damaged(f"a block claims {restarts} restart points, which do not fit in it")
    result: list[tuple[bytes, bytes]] = []
    key, pos = b"", 0
    while pos < end:
        shared, pos = _varint(block, pos, end)
        fresh, pos = _varint(block, pos, end)
        length, pos = _varint(block, pos, end)
        if shared > len(key) or pos + fresh + length > end:
            raise _Damaged("an entry's key or value runs past its block")
        key = key[:shared] + block[pos : pos + fresh]
        pos += fresh
        result.append((key, block[pos : pos + length]))
        pos += length
    return result


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the table at ``path``, in key order; ``BadModelFile`` if it is not one."""
    try:
        size = path.stat().st_size
        if size > MAX_TABLE_BYTES:
            raise BadModelFile(f"{path}: {size} bytes is too large for a tensor bundle index; refusing it.")
        data = path.read_bytes()
    except OSError as exc:
        raise BadModelFile(f"{path}: cannot read the checkpoint index ({exc.strerror}).") from None
    try:
        if len(data) < FOOTER_BYTES:
            raise _Damaged(f"{len(data)} bytes is shorter than a table footer")
        footer = len(data) - FOOTER_BYTES
        (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
        if magic != MAGIC:
            raise _Damaged("it does not end in the table magic number")
        _, pos = _handle(data, footer, len(data) - 8)  # the metaindex block: unused by TensorFlow
        index_handle, _ = _handle(data, pos, len(data) - 8)
        result: list[tuple[bytes, bytes]] = []
        for _, value in _entries(_block(data, index_handle, footer)):
            handle, _ = _handle(value, 0, len(value))
            for key, item in _entries(_block(data, handle, footer)):
                if result and key <= result[-1][0]:
                    raise _Damaged("its keys are not in increasing order")
                result.append((key, item))
        return result
    except (_Damaged, struct.error, IndexError) as exc:
        raise BadModelFile(
            f"{path}: not a readable TensorFlow checkpoint index ({exc}); the file is damaged."
        ) from None
