"""CRC-32C (Castagnoli), as LevelDB tables and TensorFlow tensor bundles checksum their bytes.

No package on this machine computes it, and a byte-at-a-time Python loop runs at ~5 MB/s, too slow for
the weights of a big model. So the data is cut into K equal chunks whose registers advance together,
one NumPy table lookup per byte position for all chunks at once, and the chunk results are folded into
one CRC with the linear map "advance the register over L zero bytes" (CRC is linear over GF(2)):
``state(A + B) = zeros_L(state(A)) ^ raw(B)``. The short tail runs byte by byte.
"""

from __future__ import annotations

from functools import cache

import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8
#: below this many bytes the plain loop is faster than setting up the vectorised pass
_SMALL = 1 << 13


@cache
def _table() -> np.ndarray:
    table = np.zeros(256, np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
        table[byte] = crc
    return table


def _loop(state: int, data: bytes | memoryview) -> int:
    table = _table().tolist()
    for byte in bytes(data):
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


@cache
def _zeros_operator(length: int) -> tuple[list[int], ...]:
    """Byte tables of the linear map that advances a register over ``length`` zero bytes."""
    table = _table()
    basis = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    for _ in range(length):
        basis = table[basis & 0xFF] ^ (basis >> np.uint32(8))
    columns = [int(v) for v in basis]  # image of bit i
    tables = []
    for shift in (0, 8, 16, 24):
        part = []
        for byte in range(256):
            value = 0
            for bit in range(8):
                if byte >> bit & 1:
                    value ^= columns[shift + bit]
            part.append(value)
        tables.append(part)
    return tuple(tables)


def _apply(tables: tuple[list[int], ...], state: int) -> int:
    t0, t1, t2, t3 = tables
    return t0[state & 0xFF] ^ t1[state >> 8 & 0xFF] ^ t2[state >> 16 & 0xFF] ^ t3[state >> 24]


def crc32c(data: bytes | memoryview) -> int:
    """The CRC-32C of ``data``.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    view = memoryview(data).cast("B")
    n = len(view)
    if n < _SMALL:
        return _loop(0xFFFFFFFF, view) ^ 0xFFFFFFFF
    length = max(256, int(np.sqrt(n)) // 64 * 64)  # ~sqrt(n) steps over ~sqrt(n) chunks
    chunks = n // length
    body = np.frombuffer(view[: chunks * length], np.uint8).reshape(chunks, length).T.copy()
    table = _table()
    raw = np.zeros(chunks, np.uint32)
    eight = np.uint32(8)
    for row in body:  # one byte position of every chunk
        raw = table[(raw ^ row) & 0xFF] ^ (raw >> eight)
    tables = _zeros_operator(length)
    state = 0xFFFFFFFF
    for value in raw.tolist():
        state = _apply(tables, state) ^ value
    return _loop(state, view[chunks * length :]) ^ 0xFFFFFFFF


def unmask(masked: int) -> int:
    """LevelDB and TensorFlow store ``rot17(crc) + 0xa282ead8``; this undoes it."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def mask(crc: int) -> int:
    """The stored (masked) form of ``crc``."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF
