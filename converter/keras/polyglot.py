"""Refuse files that are both an HDF5 file and a zip archive.

The two formats are found from opposite ends: HDF5 looks for its signature at offset 0, 512, 1024,
2048, ... (the space before it is a "user block"), zip for its end-of-central-directory record near
the end of the file, whatever comes before. So one file can be both, a legacy ``.h5`` of one model and
a ``.keras`` of another: lstm-convert would read one while Keras (which decides by name and content)
runs the other. Such a file is refused. The one legitimate overlap is a ``.keras`` whose stored
(uncompressed) ``model.weights.h5`` happens to begin at such an offset: the signature found there is
the member's own, and it is not counted.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from converter.errors import BadModelFile

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length


def hdf5_offsets(fh: BinaryIO) -> list[int]:
    """The offsets where an HDF5 library would find a superblock signature (0, 512, 1024, ...)."""
    fh.seek(0, 2)
    size = fh.tell()
    found, offset = [], 0
    while offset + len(_HDF5_MAGIC) <= size:
        fh.seek(offset)
        if fh.read(len(_HDF5_MAGIC)) == _HDF5_MAGIC:
            found.append(offset)
        offset = 512 if offset == 0 else offset * 2
    return found


def _stored_member_starts(zf: zipfile.ZipFile, fh: BinaryIO) -> set[int]:
    """Where the data of each uncompressed member begins (read from its local header)."""
    starts = set()
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            continue
        fh.seek(info.header_offset)
        header = fh.read(_LOCAL_HEADER.size)
        if len(header) == _LOCAL_HEADER.size:
            _, name_len, extra_len = _LOCAL_HEADER.unpack(header)
            starts.add(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    return starts


def _is_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def refuse_polyglot(path: Path, zf: zipfile.ZipFile | None) -> None:
    """Raise ``BadModelFile`` if ``path`` is both HDF5 and zip. ``zf``: the file opened as a zip, or None
    when it was recognised as HDF5."""
    with path.open("rb") as fh:
        if zf is None:
            if _is_zip(path):
                raise _refusal(path)
            return
        inner = _stored_member_starts(zf, fh)
        if any(offset not in inner for offset in hdf5_offsets(fh)):
            raise _refusal(path)


def _refusal(path: Path) -> BadModelFile:
    return BadModelFile(
        f"{path}: the file is both an HDF5 file and a zip archive (a polyglot), so which model it holds depends "
        "on the reader; refusing it. Re-save the model with Keras."
    )
