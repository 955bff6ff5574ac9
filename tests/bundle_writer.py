"""Writes LevelDB tables and TF bundle indexes, so tests can build damaged and hostile checkpoints.

Deliberately minimal (one data block, every key written whole): the reader under test must accept the
real files TensorFlow wrote (``fixtures/tf``) and these alike.
"""

from __future__ import annotations

import struct
from pathlib import Path

from converter.keras.crc32c import crc32c, mask
from converter.keras.protos import message
from converter.keras.sstable import MAGIC, read_table


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1)  # one restart point at offset 0


def table(entries: list[tuple[bytes, bytes]], kind: int = 0) -> bytes:
    """A table holding ``entries`` (sorted by key); ``kind`` is written as every block's compression type."""
    out = bytearray()

    def put(block: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(block))
        out.extend(block + bytes([kind]) + struct.pack("<I", mask(crc32c(block + bytes([kind])))))
        return handle

    data = put(_block(sorted(entries)))
    meta = put(_block([]))
    index = put(_block([(max(k for k, _ in entries) + b"\x00", data)]))
    footer = (meta + index).ljust(40, b"\x00") + struct.pack("<Q", MAGIC)
    return bytes(out + footer)


def rewrite_entry(index: Path, key: str, **fields: object) -> None:
    """Change fields of one BundleEntryProto of a real index (``shape=[...]`` sets its dims)."""
    entries = []
    for k, v in read_table(index):
        if k.decode() == key:
            entry = message("BundleEntryProto")
            entry.ParseFromString(v)
            for name, value in fields.items():
                if name == "shape":
                    del entry.shape.dim[:]
                    for size in value:  # type: ignore[attr-defined]
                        entry.shape.dim.add(size=size)
                else:
                    setattr(entry, name, value)
            v = entry.SerializeToString()
        entries.append((k, v))
    index.write_bytes(table(entries))


def rewrite_header(index: Path, **fields: object) -> None:
    entries = []
    for k, v in read_table(index):
        if k == b"":
            header = message("BundleHeaderProto")
            header.ParseFromString(v)
            for name, value in fields.items():
                setattr(header, name, value)
            v = header.SerializeToString()
        entries.append((k, v))
    index.write_bytes(table(entries))
