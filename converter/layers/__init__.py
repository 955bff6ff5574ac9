"""Every Keras layer lstm-convert converts: one module (or, for a big family, one folder) per layer family.

Each module holds everything about its layers side by side, as ``Op`` subclasses (see ``base.py``): the
reader from (config, weights), output shape and mask rule, parameter formula, NumPy forward pass, ONNX
form, npz/JSON tensors. It ends with two names the registry below collects:

- ``READERS``: Keras class name -> reader ``(config, arrays, ReadContext) -> Op``;
- ``OPS``: the op classes it defines (their ``op_type`` names the op in npz/JSON descriptions);
- optionally ``CALL_TENSORS``: Keras class name -> the names of the tensor arguments its call takes, in
  order (``("query", "value", "key", "attention_mask")``): the model reader maps positional and keyword
  tensors of a call onto them and the op learns which it got (``ReadContext.call_inputs``).

Adding a layer is adding a module here (and its fixtures in ``fixtures/specs/``): nothing else changes.
The registry finds every module of this package by itself.

>>> "LSTM" in READERS and OP_TYPES["recurrent"].__name__ == "Recurrent"
True
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from converter.layers.base import NamedArray, Op, ReadContext

Reader = Callable[[dict[str, Any], list[NamedArray], ReadContext], Op]
_NOT_FAMILIES = {"base", "reading"}  # the interface, not layer families


def _collect() -> tuple[dict[str, Reader], dict[str, type[Op]], dict[str, str], dict[str, tuple[str, ...]]]:
    readers: dict[str, Reader] = {}
    op_types: dict[str, type[Op]] = {}
    family: dict[str, str] = {}
    call_tensors: dict[str, tuple[str, ...]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _NOT_FAMILIES:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for class_name, reader in getattr(module, "READERS", {}).items():
            if class_name in readers:
                raise RuntimeError(f"Keras class {class_name} is read by {family[class_name]} and {info.name}")
            readers[class_name], family[class_name] = reader, info.name
        for op in getattr(module, "OPS", ()):
            if op.op_type in op_types:
                raise RuntimeError(f"op type {op.op_type!r} is defined twice")
            op_types[op.op_type] = op
        call_tensors |= getattr(module, "CALL_TENSORS", {})
    return readers, op_types, family, call_tensors


#: Keras class name -> reader; the op type name -> op class; Keras class name -> the module that reads it;
#: Keras class name -> its call's tensor arguments (for layers called on several named tensors).
READERS, OP_TYPES, FAMILY, CALL_TENSORS = _collect()
#: Keras 3 op layers (saved by functional models for mask computations): not layers a user writes.
OP_LAYERS = ("NotEqual", "Any", "ConvertToTensor")


def supported_classes() -> list[str]:
    """The Keras layer classes lstm-convert converts, for messages and the README's table."""
    return sorted(["InputLayer", *(c for c in READERS if c not in OP_LAYERS)])


__all__ = ["CALL_TENSORS", "FAMILY", "OP_LAYERS", "OP_TYPES", "READERS", "Op", "supported_classes"]
