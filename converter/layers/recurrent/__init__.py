"""The recurrent layers: ``LSTM``, ``GRU``, ``SimpleRNN`` and ``Bidirectional`` of them.

One family in one folder (as Keras keeps it): ``layer.py`` reads them and knows their shapes and
parameters, ``cell.py`` is the NumPy forward pass, ``onnx_node.py`` and ``onnx_weights.py`` the fused
ONNX node, ``layouts.py`` the npz/JSON tensors.
"""

from converter.layers.recurrent.layer import RECURRENT_CLASSES, Bidirectional, Recurrent

READERS = {**dict.fromkeys(RECURRENT_CLASSES, Recurrent.read), "Bidirectional": Bidirectional.read}
OPS = (Recurrent, Bidirectional)

__all__ = ["OPS", "READERS", "Bidirectional", "Recurrent"]
