"""The recurrent layers: ``LSTM``, ``GRU``, ``SimpleRNN``, ``RNN`` of their cells, and ``Bidirectional`` of them.

One family in one folder (as Keras keeps it): ``layer.py`` reads them and knows their shapes and
parameters, ``cell.py`` is the NumPy forward pass, ``onnx_node.py`` and ``onnx_weights.py`` the fused
ONNX node, ``layouts.py`` the npz/JSON tensors; ``rnn.py`` reads ``keras.layers.RNN`` of a cell into the
same op, ``stacked.py`` a ``StackedRNNCells`` into one op per cell.
"""

from converter.layers.recurrent.layer import RECURRENT_CLASSES, Bidirectional, Recurrent
from converter.layers.recurrent.rnn import read_rnn
from converter.layers.recurrent.stacked import Stacked

READERS = {
    **dict.fromkeys(RECURRENT_CLASSES, Recurrent.read),
    "Bidirectional": Bidirectional.read,
    "RNN": read_rnn,
}
OPS = (Recurrent, Bidirectional, Stacked)

__all__ = ["OPS", "READERS", "Bidirectional", "Recurrent", "Stacked"]
