"""The few TensorFlow and Keras protobuf messages a SavedModel or TF checkpoint is read through.

The message classes are built at run time from descriptors written out here, field numbers as in
TensorFlow's ``tensor_bundle.proto``, ``tensor_shape.proto``, ``versions.proto`` and
``trackable_object_graph.proto`` and Keras' ``saved_metadata.proto``, so that neither TensorFlow nor
its generated ``_pb2`` modules are needed. Only the fields lstm-convert reads are declared; protobuf
skips the others. The messages live in a private pool under their own package name, so they never
clash with TensorFlow's registered ones when both are loaded in one process.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "lstm_convert.tf"
_F = descriptor_pb2.FieldDescriptorProto
#: message -> [(field name, number, type, label, message type or None)]
_MESSAGES: dict[str, list[tuple[str, int, int, int, str | None]]] = {
    "VersionDef": [
        ("producer", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
        ("min_consumer", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
    ],
    "Dim": [
        ("size", 1, _F.TYPE_INT64, _F.LABEL_OPTIONAL, None),
        ("name", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
    ],
    "TensorShapeProto": [
        ("dim", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Dim"),
        ("unknown_rank", 3, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
    ],
    "BundleHeaderProto": [
        ("num_shards", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
        ("endianness", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),  # an enum on the wire: 0 little, 1 big
        ("version", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "VersionDef"),
    ],
    "TensorSliceProto": [],  # only counted: a sliced (partitioned) variable is refused
    "BundleEntryProto": [
        ("dtype", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),  # tensorflow.DataType enum
        ("shape", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "TensorShapeProto"),
        ("shard_id", 3, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
        ("offset", 4, _F.TYPE_INT64, _F.LABEL_OPTIONAL, None),
        ("size", 5, _F.TYPE_INT64, _F.LABEL_OPTIONAL, None),
        ("crc32c", 6, _F.TYPE_FIXED32, _F.LABEL_OPTIONAL, None),
        ("slices", 7, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "TensorSliceProto"),
    ],
    "ObjectReference": [
        ("node_id", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
        ("local_name", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
    ],
    "SerializedTensor": [
        ("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("full_name", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("checkpoint_key", 3, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
    ],
    "TrackableObject": [
        ("children", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "ObjectReference"),
        ("attributes", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "SerializedTensor"),
    ],
    "TrackableObjectGraph": [
        ("nodes", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "TrackableObject"),
    ],
    # Keras' keras_metadata.pb (tf.keras 2.x, tf_keras): one JSON metadata string per saved object.
    "SavedObject": [
        ("node_id", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
        ("node_path", 3, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("identifier", 4, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("metadata", 5, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("version", 6, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "VersionDef"),
    ],
    "SavedMetadata": [
        ("nodes", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "SavedObject"),
    ],
}


@cache
def _classes() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="lstm_convert_tf.proto", package=_PACKAGE, syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name is not None:
                field.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    factory = None if get_class is not None else message_factory.MessageFactory(pool)
    result = {}
    for name in _MESSAGES:
        descriptor = pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")
        result[name] = get_class(descriptor) if get_class is not None else factory.GetPrototype(descriptor)  # type: ignore[union-attr]
    return result


def message(name: str) -> Any:
    """A new, empty message of type ``name`` (e.g. ``"BundleEntryProto"``); fill it with ``ParseFromString``."""
    return _classes()[name]()
