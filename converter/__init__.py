"""lstm-convert: Keras LSTM, GRU and SimpleRNN models to ONNX, npz, JSON and PyTorch, without TensorFlow.

>>> import converter
>>> model = converter.load("fixtures/keras3/tutorial.keras")
>>> model.output_names
['dense']

The public functions are loaded on first use, so that ``import converter`` and ``lstm-convert --help``
stay fast (NumPy, h5py and onnx are imported only when a model is read or written).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from converter.errors import (
    BadInputs,
    BadModelFile,
    BadOptions,
    ConversionError,
    OutputExists,
    UnsupportedLayer,
    VerificationFailed,
    WriteFailed,
)

if TYPE_CHECKING:
    from converter.api import LoadedModel, inspect, load
    from converter.check import verify
    from converter.convert import to_json, to_npz, to_onnx, to_pytorch
    from converter.convert_python import to_python
    from converter.html_report import report
    from converter.verification import Report

__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY = {
    "load": "converter.api",
    "LoadedModel": "converter.api",
    "inspect": "converter.api",
    "to_onnx": "converter.convert",
    "to_npz": "converter.convert",
    "to_json": "converter.convert",
    "to_pytorch": "converter.convert",
    "to_python": "converter.convert_python",
    "verify": "converter.check",
    "Report": "converter.verification",
    "report": "converter.html_report",
}

__all__ = [
    "BadInputs",
    "BadModelFile",
    "BadOptions",
    "ConversionError",
    "LoadedModel",
    "OutputExists",
    "Report",
    "UnsupportedLayer",
    "VerificationFailed",
    "WriteFailed",
    "inspect",
    "load",
    "report",
    "to_json",
    "to_npz",
    "to_onnx",
    "to_python",
    "to_pytorch",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'converter' has no attribute {name!r}")
