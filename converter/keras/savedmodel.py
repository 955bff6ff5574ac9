"""Keras models in TensorFlow's forms: SavedModel folders and TF checkpoints, read without TensorFlow.

- A SavedModel written by Keras 2 (tf.keras 2.5-2.15 ``model.save("dir")``, tf_keras
  ``save_format="tf"``) has ``saved_model.pb`` (the TensorFlow graph, never read), ``keras_metadata.pb``
  (Keras' ``SavedMetadata``: one JSON document per saved object, the root's holding ``model_config``)
  and ``variables/variables.{index,data-*}``, a tensor bundle keyed ``variables/<n>/...``.
- A TF checkpoint (``model.save_weights("ckpt/m")``) is ``m.index`` + ``m.data-*``, keyed by object path
  (``layer_with_weights-0/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE``); the architecture comes from
  ``model.to_json()`` (``--config``).

In both, the bundle's object graph (``converter.keras.objects``) says which tensor is which weight.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from converter.errors import BadModelFile
from converter.keras.bundle import Bundle, confined

MAX_METADATA_BYTES = 64 * 1024 * 1024


def is_savedmodel(folder: Path) -> bool:
    """A SavedModel folder: ``saved_model.pb`` (or ``.pbtxt``) inside, told by structure, not by name."""
    return folder.is_dir() and ((folder / "saved_model.pb").is_file() or (folder / "saved_model.pbtxt").is_file())


def checkpoint_prefix(path: Path) -> Path | None:
    """The bundle prefix ``path`` stands for: ``ckpt/m`` itself, ``ckpt/m.index``, or a folder whose
    ``checkpoint`` file names it; None if ``path`` is none of these."""
    if path.is_dir():
        state = path / "checkpoint"
        if not state.is_file():
            return None
        state = confined(state, path, "'checkpoint' file")
        if state.stat().st_size > 1 << 20:
            raise BadModelFile(f"{state}: too large for a TF 'checkpoint' file; refusing it.")
        for line in state.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model_checkpoint_path":
                name = value.strip().strip('"')
                return confined(path / name, path, "checkpoint named in its 'checkpoint' file") if name else None
        return None
    if path.name.endswith(".index") and path.is_file():
        return path.with_name(path.name.removesuffix(".index"))
    if not path.exists() and Path(f"{path}.index").is_file():
        return path
    return None


def plain(value: Any) -> Any:
    """Keras' SavedModel metadata JSON -> ``to_json()`` JSON: ``__tuple__`` and ``TensorShape`` dicts
    become lists, ``shared_object_id`` keys go."""
    if isinstance(value, dict):
        if value.get("class_name") in ("__tuple__", "TensorShape") and set(value) == {"class_name", "items"}:
            return [plain(item) for item in value["items"]] if isinstance(value["items"], list) else None
        return {k: plain(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def read_metadata(folder: Path) -> tuple[dict[str, Any], str, dict[str, str]]:
    """The model config, the Keras version, and each top-level layer's object path, from
    ``keras_metadata.pb``."""
    path = folder / "keras_metadata.pb"
    if not path.is_file():
        raise BadModelFile(
            f"{folder}: a TensorFlow SavedModel with no keras_metadata.pb, so not one Keras wrote (a bare "
            "tf.function or tf.Module, Keras 3's model.export, or a TF < 2.5 Keras SavedModel): it holds no "
            "layer config to convert. Save the Keras model itself (model.save('m.keras') or 'm.h5'), or "
            "convert the graph with tf2onnx, which needs TensorFlow."
        )
    real = confined(path, folder, "keras_metadata.pb")
    size = real.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise BadModelFile(f"{path}: {size} bytes is too large for Keras metadata; refusing it.")
    from converter.keras.protos import message

    metadata = message("SavedMetadata")
    try:
        metadata.ParseFromString(real.read_bytes())
    except Exception as exc:  # protobuf's DecodeError
        raise BadModelFile(f"{path}: not a Keras SavedMetadata file; it is damaged ({exc}).") from None
    root: dict[str, Any] | None = None
    layers: dict[str, str] = {}
    for node in metadata.nodes:
        parts = str(node.node_path).split(".")
        if parts[0] != "root" or len(parts) > 2:
            continue  # a layer inside a layer: found through its parent
        try:
            doc = json.loads(node.metadata)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadModelFile(f"{path}: the metadata of {node.node_path} is not JSON ({exc}).") from None
        if not isinstance(doc, dict):
            raise BadModelFile(f"{path}: the metadata of {node.node_path} is not a JSON object.")
        if len(parts) == 1:
            root = doc
        elif isinstance(doc.get("name"), str):
            layers.setdefault(doc["name"], parts[1])
    if root is None:
        raise BadModelFile(f"{path}: has no metadata for the model itself (node 'root').")
    config = root.get("model_config") or {"class_name": root.get("class_name"), "config": root.get("config")}
    version = str(root.get("keras_version") or "2")
    return plain(config), version, layers


def savedmodel_bundle(folder: Path) -> Bundle:
    variables = folder / "variables"
    confined(variables, folder, "variables folder")
    if not (variables / "variables.index").is_file():
        raise BadModelFile(f"{folder}: the SavedModel has no variables/variables.index; it is incomplete.")
    return Bundle(variables / "variables", folder)


def config_layer_paths(config: dict[str, Any]) -> dict[str, str]:
    """Each layer's object path in a checkpoint, from the config: ``layer-<i>`` with ``i`` its place in
    ``model.layers`` (a Sequential model's InputLayer is not one of them, a functional model's is)."""
    cfg = config.get("config")
    entries = cfg.get("layers") if isinstance(cfg, dict) else None
    if not isinstance(entries, list):
        return {}
    sequential = config.get("class_name") == "Sequential"
    result, index = {}, 0
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if sequential and entry.get("class_name") == "InputLayer":
            continue
        inner = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        name = entry.get("name", inner.get("name"))
        if isinstance(name, str):
            result.setdefault(name, f"layer-{index}")
        index += 1
    return result


def layer_configs(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Layer name -> (class name, layer config) of a model config's top-level layers."""
    cfg = config.get("config")
    entries = cfg.get("layers") if isinstance(cfg, dict) else None
    result: dict[str, tuple[str, dict[str, Any]]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
            name = entry.get("name", entry["config"].get("name"))
            if isinstance(name, str):
                result[name] = (str(entry.get("class_name")), entry["config"])
    return result
