"""Safe file output and input arrays: writes are atomic, nothing is clobbered without ``force``.

An output is written to a temporary file in the target's folder and renamed into place only when the
caller's block finishes without error, so a failed or interrupted run (Ctrl-C and SIGTERM included) leaves
the target as it was and no temporary file behind; what a killed run leaves is swept by the next one.
"""

from __future__ import annotations

import errno
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from converter.errors import BadInputs, BadModelFile, BadOptions, OutputExists, WriteFailed
from converter.scratch import scratch_folder


def check_target(path: Path, force: bool) -> None:
    """Refuse a target whose folder is missing, that is a folder, or that exists without ``force``."""
    if not path.parent.is_dir():
        raise BadOptions(f"{path}: the folder {path.parent} does not exist; create it first.")
    if path.is_dir():
        raise BadOptions(f"{path}: is a folder; name a file to write.")
    if path.exists() and not force:
        raise OutputExists(f"{path}: already exists; pass --force (force=True in Python) to overwrite it.")


@contextmanager
def atomic_outputs(paths: list[Path], force: bool) -> Iterator[list[Path]]:
    """Yield temporary paths (same names, in a hidden folder beside the targets); move them into place
    when the block succeeds. Several files (an ONNX model and its external data) land together.

    An ``OSError`` while writing (a read-only folder, a full disk, a file-size limit) becomes one
    ``WriteFailed`` naming the target; the temporaries are removed and the targets stay as they were.
    Stale temporaries left in the folder by killed runs are removed first (see ``converter.scratch``).

    >>> with atomic_outputs([Path("/tmp/lc-doctest.txt")], force=True) as (tmp,):
    ...     _ = tmp.write_text("done")
    >>> Path("/tmp/lc-doctest.txt").read_text()
    'done'
    """
    for path in paths:
        check_target(path, force)
    folder = paths[0].parent
    with writing(paths[0]), scratch_folder(folder) as tmp:
        # An exception (KeyboardInterrupt too) propagates from the yield; the folder is then removed.
        temps = [tmp / path.name for path in paths]
        yield temps
        for path in paths:  # checked again: another process may have written the target meanwhile
            if path.exists() and not force:
                raise OutputExists(f"{path}: appeared while converting; pass --force to overwrite it.")
        for temp, path in zip(temps, paths, strict=True):
            if temp.exists():
                os.chmod(temp, 0o644)
                os.replace(temp, path)


def config_beside(path: Path) -> Path | None:
    """``NAME.json`` beside ``NAME.weights.h5``: the architecture ``model.to_json()`` wrote. Every command
    pairs them the same way when no ``--config`` is given."""
    if not path.name.endswith(".weights.h5"):
        return None
    config = path.with_name(path.name.removesuffix(".weights.h5") + ".json")
    return config if config.is_file() else None


_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or write to another disk",
    errno.EDQUOT: "the disk quota is used up; free some space or write to another disk",
    errno.EFBIG: "the file-size limit (ulimit -f) is smaller than the export; raise it or write elsewhere",
    errno.EACCES: "the folder is not writable; choose another -o folder",
    errno.EPERM: "the folder is not writable; choose another -o folder",
    errno.EROFS: "the folder is on a read-only file system; choose another -o folder",
}


@contextmanager
def writing(target: Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``target`` into a one-line ``WriteFailed``."""
    existed = target.exists()
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = _HINTS.get(exc.errno or 0, "check the folder and the disk")
        kept = f"the existing {target.name} is untouched" if existed else "nothing was written"
        raise WriteFailed(f"{target}: cannot write it ({reason}): {hint}; {kept}.") from None


def _tf_form(path: Path) -> bool:
    """A TensorFlow form, told by structure: a SavedModel folder (or its ``saved_model.pb``), a TF
    checkpoint prefix, its ``.index``, or a folder with a ``checkpoint`` file."""
    from converter.keras.archive import tf_form

    try:
        return tf_form(path) is not None
    except BadModelFile:
        return True  # a checkpoint whose 'checkpoint' file points elsewhere: the reader says so


def _onnx_structure(path: Path, limit: int = 64) -> bool:
    """An ONNX ModelProto at top level: ``ir_version`` (field 1), a ``graph`` (field 7), and no field
    outside ModelProto's. A SavedModel's ``saved_model.pb`` also starts with field 1, but has fields 1-2."""
    allowed = {1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 25}
    seen: set[int] = set()
    size = path.stat().st_size
    with path.open("rb") as fh:
        for _ in range(limit):
            if fh.tell() >= size:
                break
            tag = _read_varint(fh)
            if tag is None or tag >> 3 not in allowed or tag & 7 not in (0, 2):
                return False
            number, wire = tag >> 3, tag & 7
            seen.add(number)
            value = _read_varint(fh)
            if value is None:
                return False
            if wire == 2:
                fh.seek(value, os.SEEK_CUR)
    return {1, 7} <= seen


def _read_varint(fh: BinaryIO) -> int | None:
    result = 0
    for shift in range(0, 70, 7):
        byte = fh.read(1)
        if not byte:
            return None
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
    return None


def file_kind(path: Path) -> str:
    """What a file is, from its content: ``keras`` (a .keras zip, an HDF5 model/weights file, or a
    TensorFlow SavedModel or checkpoint written by Keras), ``keras-config`` (a ``model.to_json()`` file),
    an lstm-convert export (``npz``, ``json``, ``onnx``), or ``unknown``."""
    if _tf_form(path):
        return "keras"
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise BadModelFile(f"{path}: no such file.") from None
    except IsADirectoryError:
        return "unknown"
    except OSError as exc:
        raise BadModelFile(f"{path}: cannot read it ({exc.strerror}).") from None
    if head.startswith(b"\x89HDF"):
        return "keras"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except (zipfile.BadZipFile, OSError):
            return "keras"  # a damaged archive: let the Keras reader say what is wrong with it
        return "npz" if "__model__.npy" in names else "keras"
    if head.lstrip()[:1] == b"{":
        with path.open("rb") as fh:  # an export names its format near the top; a Keras config does not
            return "json" if b'"lstm-convert"' in fh.read(4096) else "keras-config"
    if head[:1] == b"\x08" and _onnx_structure(path):  # ModelProto: field 1 ir_version, field 7 graph
        return "onnx"
    if path.suffix == ".onnx":
        return "onnx"  # let the ONNX reader say what is wrong with it
    return "unknown"


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` (by key) or ``.npy`` (key ``""``), never unpickling anything."""
    try:
        with path.open("rb") as fh:
            head = fh.read(6)
        if head.startswith(b"\x93NUMPY"):
            return {"": np.load(path, allow_pickle=False)}
        if not head.startswith(b"PK"):
            raise BadInputs(
                f"{path}: not an .npz or .npy file; inputs are an .npz keyed by input name (np.savez) or one "
                ".npy array (np.save)."
            )
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise BadInputs(f"{path}: no such file.") from None
    except (OSError, ValueError) as exc:
        raise BadInputs(f"{path}: not a readable .npz or .npy file of plain arrays ({exc}).") from None


def inputs_by_name(arrays: dict[str, np.ndarray], names: list[str], path: Path) -> dict[str, np.ndarray]:
    """Match an inputs file to the model inputs: by Keras input name, or the single array of a one-input model."""
    if len(names) == 1 and len(arrays) == 1:
        return {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise BadInputs(
            f"{path}: holds arrays {sorted(arrays)}, but the model's inputs are {names}; "
            f"key each array by its input name (missing: {', '.join(missing)})."
        )
    extra = sorted(set(arrays) - set(names))
    if extra:
        raise BadInputs(f"{path}: holds arrays {extra} that are not model inputs ({', '.join(names)}).")
    return {n: arrays[n] for n in names}
