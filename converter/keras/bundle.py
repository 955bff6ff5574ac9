"""TensorFlow tensor bundles (TF checkpoints, a SavedModel's ``variables/``) read without TensorFlow.

A bundle with prefix ``P`` is ``P.index``, a table (``converter.keras.sstable``) whose key ``""`` holds
the ``BundleHeaderProto`` (shard count, byte order) and every other key a ``BundleEntryProto`` (dtype,
shape, shard, offset, size, masked CRC-32C), and the shards ``P.data-00000-of-0000N`` with the tensor
bytes. Every size is checked against the entry's shape and dtype and against the shard file's length
before anything is allocated, every tensor's CRC-32C is verified, and no file outside ``root`` (the
SavedModel or checkpoint folder, symlinks resolved) is opened.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import BadModelFile
from converter.keras.crc32c import crc32c, unmask
from converter.keras.sstable import read_table

#: tensorflow.DataType -> NumPy dtype (little-endian); DT_STRING (7) is read by ``strings``.
DTYPES: dict[int, str] = {
    1: "f4",
    2: "f8",
    3: "i4",
    4: "u1",
    5: "i2",
    6: "i1",
    9: "i8",
    10: "?",
    17: "u2",
    19: "f2",
    22: "u4",
    23: "u8",
}
DT_STRING = 7
_NAMES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128", 20: "resource", 21: "variant"}
MAX_SHARDS = 4096


def confined(path: Path, root: Path, what: str) -> Path:
    """``path`` resolved, refused unless it lies inside ``root`` (a symlink out of it is refused)."""
    real, top = path.resolve(), root.resolve()
    if real != top and top not in real.parents:
        raise BadModelFile(f"{path}: the {what} points outside {root} (to {real}); refusing to read it.")
    return real


class Bundle:
    """The tensors of one bundle, read on demand by key."""

    def __init__(self, prefix: Path, root: Path) -> None:
        from converter.keras.protos import message  # protobuf only when a bundle is read

        self.prefix = prefix
        self.root = root
        self.index = confined(Path(f"{prefix}.index"), root, "checkpoint index")
        if not self.index.is_file():
            raise BadModelFile(f"{prefix}.index: no such file; a TF checkpoint is its .index and .data-* files.")
        self.entries: dict[str, Any] = {}
        header = None
        for key, value in read_table(self.index):
            proto = message("BundleHeaderProto" if key == b"" else "BundleEntryProto")
            try:
                proto.ParseFromString(value)
                name = key.decode("utf-8")
            except Exception as exc:  # protobuf's DecodeError, or a key that is not UTF-8
                raise BadModelFile(f"{self.index}: entry {key[:60]!r} is damaged ({exc}).") from None
            if key == b"":
                header = proto
            else:
                self.entries[name] = proto
        if header is None:
            raise BadModelFile(f"{self.index}: has no bundle header; it is not a TensorFlow checkpoint index.")
        if not 1 <= header.num_shards <= MAX_SHARDS:
            raise BadModelFile(f"{self.index}: declares {header.num_shards} data shards; the index is damaged.")
        self.num_shards = header.num_shards
        self.order = ">" if header.endianness == 1 else "<"

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(d.size) for d in self.entries[key].shape.dim)

    def _shard(self, entry: Any, key: str) -> Path:
        if not 0 <= entry.shard_id < self.num_shards:
            raise BadModelFile(f"{self.index}: tensor {key!r} names shard {entry.shard_id} of {self.num_shards}.")
        name = f"{self.prefix.name}.data-{entry.shard_id:05d}-of-{self.num_shards:05d}"
        return confined(self.prefix.parent / name, self.root, "checkpoint data file")

    def _bytes(self, key: str, numeric: bool = True) -> bytearray:
        entry = self.entries.get(key)
        if entry is None:
            raise BadModelFile(f"{self.index}: holds no tensor {key!r}.")
        if len(entry.slices):
            raise BadModelFile(f"{self.index}: tensor {key!r} is a partitioned variable, which is not supported.")
        shard = self._shard(entry, key)
        try:
            length = shard.stat().st_size
            if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > length:
                raise BadModelFile(
                    f"{shard}: tensor {key!r} claims bytes {entry.offset}..{entry.offset + entry.size} of a "
                    f"{length}-byte file; the checkpoint is truncated or damaged."
                )
            data = bytearray(entry.size)  # sized from the entry, checked against the file above
            with shard.open("rb") as fh:
                fh.seek(entry.offset)
                got = fh.readinto(data)
        except FileNotFoundError:
            raise BadModelFile(f"{shard}: missing; the checkpoint's data file must sit beside its index.") from None
        except OSError as exc:
            raise BadModelFile(f"{shard}: cannot read it ({exc.strerror}).") from None
        if got != entry.size:
            raise BadModelFile(f"{shard}: ends inside tensor {key!r}; the file is truncated.")
        if numeric and crc32c(data) != unmask(entry.crc32c):
            raise BadModelFile(f"{shard}: tensor {key!r} fails its CRC-32C check; the checkpoint is damaged.")
        return data

    def array(self, key: str) -> np.ndarray:
        """A numeric tensor, its size checked against its shape before it is read."""
        entry = self.entries.get(key)
        if entry is None:
            raise BadModelFile(f"{self.index}: holds no tensor {key!r}.")
        code = DTYPES.get(entry.dtype)
        if code is None:
            kind = _NAMES.get(entry.dtype, f"DataType {entry.dtype}")
            raise BadModelFile(f"{self.index}: tensor {key!r} is of type {kind}, not a numeric array.")
        shape = self.shape(key)
        if any(d < 0 for d in shape):
            raise BadModelFile(f"{self.index}: tensor {key!r} has a negative dimension {shape}.")
        dtype = np.dtype(self.order + code)
        if math.prod(shape) * dtype.itemsize != entry.size:
            raise BadModelFile(
                f"{self.index}: tensor {key!r} of shape {shape} needs {math.prod(shape) * dtype.itemsize} bytes "
                f"but its entry says {entry.size}; the checkpoint is damaged."
            )
        array = np.frombuffer(self._bytes(key), dtype).reshape(shape)  # writable, no second copy
        return array if dtype.isnative else array.astype(dtype.newbyteorder("="))

    def strings(self, key: str) -> list[bytes]:
        """A string tensor: varint lengths, a masked CRC of the lengths, then the bytes."""
        entry = self.entries.get(key)
        if entry is None or entry.dtype != DT_STRING:
            raise BadModelFile(f"{self.index}: holds no string tensor {key!r}.")
        count = math.prod(self.shape(key))
        data = self._bytes(key, numeric=False)
        if count > len(data):
            raise BadModelFile(f"{self.index}: string tensor {key!r} claims {count} elements in {len(data)} bytes.")
        lengths, pos = [], 0
        try:
            for _ in range(count):
                value, shift = 0, 0
                while True:
                    byte = data[pos]
                    pos += 1
                    value |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                lengths.append(value)
            pos += 4  # the masked CRC of the lengths, covered by the tensor's CRC below
            if pos + sum(lengths) != len(data):
                raise IndexError
        except IndexError:
            raise BadModelFile(f"{self.index}: string tensor {key!r} is damaged.") from None
        # TensorFlow's CRC of a string tensor covers each length as uint32 (uint64 past 4 GiB), the
        # lengths' checksum, then the bytes: not the varints as stored.
        packed = b"".join(struct.pack("<I" if n <= 0xFFFFFFFF else "<Q", n) for n in lengths)
        if crc32c(packed + data[pos - 4 :]) != unmask(entry.crc32c):
            raise BadModelFile(f"{self.index}: string tensor {key!r} fails its CRC-32C check; it is damaged.")
        result = []
        for length in lengths:
            result.append(bytes(data[pos : pos + length]))
            pos += length
        return result
