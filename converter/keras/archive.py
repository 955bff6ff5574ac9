"""Which form a Keras file is, and opening it: config JSON, Keras version and a weight store.

The forms, told apart by content, never by file name:

- Keras 3 ``.keras``: a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5``.
- legacy HDF5 ``.h5`` (Keras 2, or Keras 3's ``model.save("x.h5")``): root attribute ``model_config``.
- weights-only HDF5 (Keras 3 ``.weights.h5``, or Keras 2 ``save_weights`` to h5): needs the
  architecture from a ``model.to_json()`` file (``--config``).
- a TensorFlow SavedModel folder written by Keras 2 (``saved_model.pb`` inside; the folder or its
  ``saved_model.pb`` may be given), and a TF checkpoint prefix (``ckpt/m`` with ``m.index`` beside it,
  or ``m.index`` itself) with ``--config``: see ``converter.keras.savedmodel``.
"""

from __future__ import annotations

import io
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from converter.errors import BadModelFile, BadOptions
from converter.keras.hdf5_safety import check_hdf5
from converter.keras.limits import MAX_JSON_BYTES, max_weight_bytes, parse_json, short, too_big
from converter.keras.polyglot import hdf5_offsets, refuse_polyglot
from converter.keras.versions import apply_version_rules
from converter.keras.weights import LegacyWeights, PositionalWeights, WeightStore

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
#: Room for HDF5's own structures in a weights file beyond the bytes of its arrays.
_HDF5_OVERHEAD = 64 * 1024 * 1024
#: Refuse a member whose size claims are out of proportion with its compressed size (a zip bomb).
MAX_COMPRESSION_RATIO = 200


@dataclass
class OpenedFile:
    """An opened Keras model: its config, its Keras version, and where its weights are."""

    path: Path
    form: str
    config: dict[str, Any]
    keras_version: str
    weights: WeightStore
    #: states of stateful layers saved with the model (SavedModels only): layer -> direction -> [h, (c)]
    states: dict[str, dict[str, list[Any]]] = field(default_factory=dict)


def _check_member(path: Path, info: zipfile.ZipInfo, limit: int | None) -> None:
    if info.filename.startswith(("/", "\\")) or ".." in Path(info.filename).parts:
        raise BadModelFile(f"{path}: zip member {short(info.filename)} has an unsafe name; refusing the archive.")
    if limit is not None and info.file_size > limit:
        raise BadModelFile(f"{path}: {info.filename} claims {info.file_size} bytes, more than a Keras config holds.")
    if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
        raise BadModelFile(
            f"{path}: {info.filename} inflates {info.file_size // info.compress_size}x; refusing a likely zip bomb."
        )


def _read_member(zf: zipfile.ZipFile, path: Path, name: str, limit: int) -> bytes:
    info = zf.getinfo(name)
    _check_member(path, info, limit)
    with zf.open(info) as member:
        data = member.read(limit + 1)  # never inflate more than the limit, whatever the header says
    if len(data) > limit:
        raise BadModelFile(f"{path}: {name} inflates past {limit} bytes; refusing it.")
    return data


def _check_members(zf: zipfile.ZipFile, path: Path) -> set[str]:
    """Refuse unsafe and duplicate member names: with two ``config.json`` one reader may take the first
    and another (Keras) the last."""
    names: set[str] = set()
    for info in zf.infolist():
        _check_member(path, info, None)
        if info.filename in names:
            raise BadModelFile(
                f"{path}: the archive holds two members named {short(info.filename)}; which one is the model "
                "is ambiguous, so the archive is refused. Re-save the model with Keras."
            )
        names.add(info.filename)
    return names


def _open_weights_member(zf: zipfile.ZipFile, path: Path, stack: ExitStack, max_bytes: float) -> h5py.File:
    info = zf.getinfo("model.weights.h5")
    if info.file_size > max_bytes + _HDF5_OVERHEAD:
        raise too_big(path, "model.weights.h5", info.file_size, max_bytes)
    if info.compress_type == zipfile.ZIP_STORED:
        stream: Any = stack.enter_context(zf.open(info))  # seekable without inflating: read in place
    else:
        stream = io.BytesIO(_read_member(zf, path, "model.weights.h5", info.file_size))
    return stack.enter_context(h5py.File(stream, "r"))


def _open_keras_zip(path: Path, stack: ExitStack, config_path: Path | None, max_bytes: float) -> OpenedFile:
    try:
        zf = stack.enter_context(zipfile.ZipFile(path))
        names = _check_members(zf, path)
        for required in ("config.json", "model.weights.h5"):
            if required not in names:
                raise BadModelFile(
                    f"{path}: this zip has no {required}, so it is not a complete Keras .keras archive; "
                    "re-save the model with model.save('model.keras')."
                )
        refuse_polyglot(path, zf)
        config = parse_json(_read_member(zf, path, "config.json", MAX_JSON_BYTES), "config.json", path)
        metadata: dict[str, Any] = {}
        if "metadata.json" in names:
            metadata = parse_json(_read_member(zf, path, "metadata.json", MAX_JSON_BYTES), "metadata.json", path)
        if config_path is not None:
            raise BadOptions(f"{path}: a .keras archive carries its own config; --config is for .weights.h5 files.")
        h5 = _open_weights_member(zf, path, stack, max_bytes)
        check_hdf5(h5, f"{path}: model.weights.h5", "/layers", max_bytes)
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as exc:
        raise BadModelFile(f"{path}: the .keras archive is damaged or truncated ({short(str(exc), 120)}).") from None
    version = str(metadata.get("keras_version", "3")) if isinstance(metadata, dict) else "3"
    return OpenedFile(path, "keras", config, version, PositionalWeights(h5, path))


def _load_config_file(config_path: Path) -> dict[str, Any]:
    try:
        size = config_path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise BadModelFile(f"{config_path}: {size} bytes is too large for a model config.")
        text = config_path.read_bytes()
    except OSError as exc:
        raise BadModelFile(f"{config_path}: cannot read the config file ({exc.strerror}).") from None
    config = parse_json(text, "the config file", config_path)
    if not isinstance(config, dict):
        raise BadModelFile(f"{config_path}: expected a model.to_json() document (a JSON object).")
    return config


def _attr_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _root_attr(h5: h5py.File, name: str, path: Path) -> Any:
    """One root attribute, refused past the JSON limit before it is read (never ``dict(h5.attrs)``)."""
    if name not in h5.attrs:
        return None
    if h5.attrs.get_id(name).get_storage_size() > MAX_JSON_BYTES:
        raise BadModelFile(f"{path}: the {name} attribute is larger than a Keras config; refusing it.")
    return h5.attrs[name]


def _open_hdf5(path: Path, stack: ExitStack, config_path: Path | None, max_bytes: float) -> OpenedFile:
    refuse_polyglot(path, None)
    try:
        h5 = stack.enter_context(h5py.File(path, "r"))
        model_config = _root_attr(h5, "model_config", path)
        keras_version = _root_attr(h5, "keras_version", path)
        legacy_weights_only = "layer_names" in h5.attrs or "model_weights" in h5
    except (OSError, ValueError, KeyError) as exc:
        raise BadModelFile(f"{path}: the HDF5 file is damaged or truncated ({short(str(exc), 120)}).") from None
    if model_config is not None and config_path is not None:
        raise BadOptions(f"{path}: this .h5 file carries its own config; --config is for .weights.h5 files.")
    if model_config is not None:
        config = parse_json(_attr_text(model_config), "the model_config attribute", path)
        version = _attr_text(keras_version if keras_version is not None else "2")
        config = apply_version_rules(config, version) if isinstance(config, dict) else config
        if not isinstance(h5.get("model_weights", getlink=True), h5py.HardLink):
            raise BadModelFile(f"{path}: the file has a model config but no model_weights group.")
        check_hdf5(h5, str(path), "/model_weights", max_bytes)
        return OpenedFile(path, "h5", config, version, LegacyWeights(h5["model_weights"], path))
    if config_path is None:
        raise BadModelFile(
            f"{path}: this HDF5 file holds weights only; pass the architecture saved by model.to_json() "
            "with --config FILE."
        )
    config = _load_config_file(config_path)
    if legacy_weights_only:  # Keras 2 save_weights (or a full legacy file)
        nested = isinstance(h5.get("model_weights", getlink=True), h5py.HardLink)
        check_hdf5(h5, str(path), "/model_weights" if nested else "/", max_bytes)
        root = h5["model_weights"] if nested else h5
        default = config.get("keras_version", "2") if isinstance(config, dict) else "2"
        version = _attr_text(keras_version if keras_version is not None else default)
        config = apply_version_rules(config, version) if isinstance(config, dict) else config
        return OpenedFile(path, "h5", config, version, LegacyWeights(root, path))
    check_hdf5(h5, str(path), "/layers", max_bytes)
    version = str(config.get("keras_version", "3"))
    return OpenedFile(path, "weights", config, version, PositionalWeights(h5, path))


SAVEDMODEL_FILES = ("saved_model.pb", "saved_model.pbtxt", "keras_metadata.pb")


def savedmodel_folder(path: Path) -> Path | None:
    """The SavedModel folder ``path`` is or names (its ``saved_model.pb`` given), else None."""
    from converter.keras.savedmodel import is_savedmodel

    folder = path if path.is_dir() else path.parent if path.name in SAVEDMODEL_FILES else None
    return folder if folder is not None and is_savedmodel(folder) else None


def tf_form(path: Path) -> tuple[str, Path] | None:
    """``("savedmodel", folder)`` or ``("checkpoint", prefix)`` when ``path`` is one of TensorFlow's
    forms (a SavedModel folder or its ``saved_model.pb``; a checkpoint prefix, its ``.index``, or a
    folder with a ``checkpoint`` file), else None."""
    from converter.keras.savedmodel import checkpoint_prefix

    folder = savedmodel_folder(path)
    if folder is not None:
        return "savedmodel", folder
    prefix = checkpoint_prefix(path)
    return ("checkpoint", prefix) if prefix is not None else None


def _open_savedmodel(folder: Path, config_path: Path | None) -> OpenedFile:
    from converter.keras.objects import ObjectGraph
    from converter.keras.savedmodel import layer_configs, read_metadata, savedmodel_bundle
    from converter.keras.tracked import TrackedWeights

    if config_path is not None:
        raise BadOptions(f"{folder}: a SavedModel carries its own config; --config is for weights-only files.")
    config, version, layer_paths = read_metadata(folder)
    weights = TrackedWeights(ObjectGraph(savedmodel_bundle(folder)), layer_paths, layer_configs(config), folder)
    return OpenedFile(folder, "savedmodel", config, version, weights, weights.saved_states())


def _open_checkpoint(prefix: Path, config_path: Path | None) -> OpenedFile:
    from converter.keras.bundle import Bundle
    from converter.keras.objects import ObjectGraph
    from converter.keras.savedmodel import config_layer_paths, layer_configs
    from converter.keras.tracked import TrackedWeights

    if config_path is None:
        raise BadModelFile(
            f"{prefix}: a TF checkpoint holds weights only; pass the architecture saved by model.to_json() "
            "with --config FILE."
        )
    config = _load_config_file(config_path)
    graph = ObjectGraph(Bundle(prefix, prefix.parent))
    weights = TrackedWeights(graph, config_layer_paths(config), layer_configs(config), prefix)
    version = str(config.get("keras_version", "2"))
    return OpenedFile(prefix, "checkpoint", config, version, weights, weights.saved_states())


def open_model_file(
    path: Path, stack: ExitStack, config_path: Path | None = None, max_weights_gb: float | None = None
) -> OpenedFile:
    """Open ``path`` (and ``config_path``), registering what must be closed on ``stack``.

    Refuses, before any weight is read: data stored outside the file, weights declaring more than
    ``max_weights_gb`` GiB, files that are both an HDF5 file and a zip, and ambiguous archives.
    """
    path = Path(path)
    max_bytes = max_weight_bytes(max_weights_gb)
    form = tf_form(path)
    if form is not None:
        opener = _open_savedmodel if form[0] == "savedmodel" else _open_checkpoint
        return opener(form[1], config_path)
    if path.is_dir():
        raise BadModelFile(
            f"{path}: is a folder, but neither a TensorFlow SavedModel (no saved_model.pb) nor a TF checkpoint "
            "folder (no 'checkpoint' file); name the model file or the checkpoint prefix (ckpt/m)."
        )
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            hdf5 = bool(hdf5_offsets(fh))
    except FileNotFoundError:
        raise BadModelFile(f"{path}: no such file.") from None
    except OSError as exc:
        raise BadModelFile(f"{path}: cannot read it ({exc.strerror}).") from None
    if head.startswith(_ZIP_MAGIC):
        return _open_keras_zip(path, stack, config_path, max_bytes)
    if hdf5:
        return _open_hdf5(path, stack, config_path, max_bytes)
    if head.lstrip()[:1] in (b"{", b"["):
        raise BadModelFile(
            f"{path}: this is a JSON file; pass the weights file as MODEL and this architecture with --config."
        )
    if ".data-" in path.name:
        raise BadModelFile(
            f"{path}: is a data shard of a TF checkpoint; pass its prefix ({path.name.split('.data-')[0]}) instead."
        )
    raise BadModelFile(f"{path}: neither a Keras .keras archive (zip) nor an HDF5 .h5 file.")
