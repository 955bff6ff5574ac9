"""Checks on an npz/JSON export given as input, made before anything it declares is allocated or parsed deeply.

An export read back (``predict``, ``verify``, ``converter.load``) may come from anywhere, so nothing it
claims is trusted: an npy header's shape must be backed by the bytes in its zip member (a header declaring
terabytes over 60 bytes is refused before NumPy allocates), JSON text is scanned for its nesting depth before
it is parsed (Python's parser recurses), declared shapes must be plausible, and an embedded test vector must
fit the model it comes with. Every refusal is a one-line ``BadModelFile`` naming the file and the entry.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from converter import ir
from converter.errors import BadInputs, BadModelFile

#: An lstm-convert document is 7 levels deep; anything past this is damaged or hostile.
MAX_DEPTH = 64
#: The largest axis an export may declare (also what ONNX and most runtimes index with).
MAX_DIM = 2**31 - 1
MAX_NDIM = 32
#: A compressed npz member may inflate this many times (float weights compress ~1.1x) and, in all, this much.
MAX_COMPRESSION_RATIO = 200
MAX_INFLATED_BYTES = 8 * 2**30

_KEEP = '"\\/bfnrtu[]{}'  # quotes, brackets, and every character that can follow a backslash in JSON
_DROP = {code: None for code in range(128) if chr(code) not in _KEEP}
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_CHUNK = 1 << 24


def check_depth(text: str, where: str, what: str = "the document") -> None:
    """Refuse JSON text nested deeper than ``MAX_DEPTH`` (before ``json.loads`` recurses into it).

    Numbers are dropped first (``str.translate`` at memory speed), then strings, so brackets inside names
    count for nothing; what is left is only brackets, counted in NumPy.
    """
    skeleton = _STRING.sub("", text.translate(_DROP))
    codes = np.frombuffer(skeleton.encode("utf-8", "surrogatepass"), np.uint8)
    depth = 0
    for start in range(0, codes.size, _CHUNK):
        chunk = codes[start : start + _CHUNK]
        step = (chunk == ord("[")).astype(np.int8) + (chunk == ord("{")) - (chunk == ord("]")) - (chunk == ord("}"))
        levels = depth + np.cumsum(step, dtype=np.int64)
        if levels.size and levels.max() > MAX_DEPTH:
            raise BadModelFile(
                f"{where}: {what} is nested more than {MAX_DEPTH} levels deep; "
                "no lstm-convert export is (the file is damaged or crafted)."
            )
        depth = int(levels[-1]) if levels.size else depth


def check_npz(path: str | os.PathLike[str], where: str) -> None:
    """Refuse an npz whose members are not plain ``.npy`` arrays backed by their own bytes.

    Each npy header is read from its zip member (a few hundred bytes, inflating nothing else); the
    declared ``shape x itemsize`` must be exactly what the member holds, and the members must fit in the
    file. Unreadable archives are left to ``np.load`` to report.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return
    with archive:
        on_disk = Path(path).stat().st_size
        infos = archive.infolist()
        names = [info.filename for info in infos]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise BadModelFile(f"{where}: the archive holds {twice[0]!r} twice; refusing an ambiguous file.")
        if sum(info.compress_size for info in infos) > on_disk:
            raise BadModelFile(f"{where}: its members claim more bytes than the file has (damaged or crafted).")
        inflated = 0
        for info in infos:
            _check_member(archive, info, on_disk, where)
            if info.compress_type != zipfile.ZIP_STORED:
                inflated += info.file_size
        if inflated > MAX_INFLATED_BYTES:
            raise BadModelFile(f"{where}: its compressed members inflate to {_size(inflated)}; refusing it.")


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, on_disk: int, where: str) -> None:
    name = info.filename
    if not name.endswith(".npy"):
        raise BadModelFile(f"{where}: member {name!r} is not an .npy array; an lstm-convert npz holds nothing else.")
    key = name.removesuffix(".npy")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise BadModelFile(f"{where}: entry '{key}' claims {info.file_size} bytes but stores {info.compress_size}.")
    if info.compress_type != zipfile.ZIP_STORED and (
        info.compress_size == 0 or info.file_size / info.compress_size > MAX_COMPRESSION_RATIO
    ):
        raise BadModelFile(f"{where}: entry '{key}' inflates {info.file_size} bytes from {info.compress_size}.")
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"npy format version {version[0]}.{version[1]}")
            header = member.tell()
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile) as e:
        raise BadModelFile(f"{where}: entry '{key}' is not a plain .npy array ({e}).") from None
    if dtype.hasobject:
        raise BadModelFile(f"{where}: entry '{key}' holds Python objects; lstm-convert never unpickles anything.")
    declared = math.prod(shape) * dtype.itemsize
    if header + declared != info.file_size:
        raise BadModelFile(
            f"{where}: entry '{key}' declares {dtype} {tuple(shape)} ({_size(declared)}) but holds "
            f"{_size(max(info.file_size - header, 0))} (damaged or crafted)."
        )


def check_shape(shape: object, where: str, what: str) -> tuple[int, ...]:
    """A declared JSON tensor shape: a short list of non-negative axes no longer than ``MAX_DIM``."""
    if not isinstance(shape, list | tuple) or len(shape) > MAX_NDIM:
        raise BadModelFile(f"{where}: {what}: shape must be a list of at most {MAX_NDIM} axes.")
    for axis in shape:
        if type(axis) is not int or not 0 <= axis <= MAX_DIM:
            raise BadModelFile(f"{where}: {what}: shape {_shown(shape)} has an axis outside 0..{MAX_DIM}.")
    return tuple(shape)


def check_inputs(model: ir.Model, where: str) -> None:
    """The inputs a description declares: every fixed axis (and batch size) between 1 and ``MAX_DIM``."""
    for spec in model.inputs:
        axes = [a for a in (spec.batch_size, *spec.shape) if a is not None]
        if any(type(a) is not int or not 1 <= a <= MAX_DIM for a in axes):
            shown = _shown([spec.batch_size, *spec.shape])
            raise BadModelFile(f"{where}: input '{spec.name}' declares shape {shown}; each axis must be 1..{MAX_DIM}.")


def check_test_vector(
    model: ir.Model, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], where: str
) -> None:
    """An embedded test vector must be something the model can run: inputs of the declared shapes and
    numeric dtypes, one batch size throughout, floating-point outputs (their shapes are checked once run)."""
    from converter.runtime.graph import check_input

    batches = set()
    for spec in model.inputs:
        array = inputs[spec.name]
        try:
            check_input(spec, array, f"{where}: test vector")
        except BadInputs as e:
            raise BadModelFile(str(e)) from None
        if array.dtype.kind not in "fiu" or 0 in array.shape:
            raise BadModelFile(
                f"{where}: test input '{spec.name}' is {array.dtype} {array.shape}; it must be non-empty numbers."
            )
        batches.add(array.shape[0])
    for name, array in outputs.items():
        if array.dtype.kind != "f" or array.ndim == 0:
            raise BadModelFile(f"{where}: test output '{name}' is {array.dtype} {array.shape}; outputs are floats.")
        batches.add(array.shape[0])
    if len(batches) > 1:
        raise BadModelFile(f"{where}: the test vector mixes batch sizes {sorted(batches)}.")


def check_test_outputs(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], where: str) -> None:
    """Once the model has run on the test inputs: the recorded outputs must have the shapes it gives."""
    for name, want in expected.items():
        have = got.get(name)
        if have is not None and have.shape != want.shape:
            raise BadModelFile(
                f"{where}: test output '{name}' has shape {want.shape}, but the model gives {have.shape} "
                "for the test inputs (damaged or crafted)."
            )


def _shown(shape: object) -> str:
    text = str(list(shape)) if isinstance(shape, list | tuple) else repr(shape)
    return text if len(text) <= 80 else text[:77] + "..."


def _size(n: int) -> str:
    return f"{n} bytes" if n < 2**20 else f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"
