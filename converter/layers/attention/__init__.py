"""The attention layers: ``Attention``, ``AdditiveAttention`` (``dense.py``) and ``MultiHeadAttention``
(``multi_head.py``, its npz/JSON tensors in ``multi_head_layouts.py``); masks, the causal mask and Keras'
masked softmax in ``common.py``.

They are called on several tensors: ``Attention()([query, value, key])``, ``MultiHeadAttention()(query,
value, key=..., attention_mask=...)``; ``CALL_TENSORS`` names them in order, and the model reader hands
each op the ones a call passed.
"""

from converter.layers.attention.dense import DenseAttention
from converter.layers.attention.multi_head import CALL_TENSORS as _MHA_TENSORS
from converter.layers.attention.multi_head import MultiHeadAttention

READERS = {
    "Attention": DenseAttention.read,
    "AdditiveAttention": DenseAttention.read,
    "MultiHeadAttention": MultiHeadAttention.read,
}
OPS = (DenseAttention, MultiHeadAttention)
CALL_TENSORS = {"Attention": ("query", "value", "key"), "AdditiveAttention": ("query", "value", "key"), **_MHA_TENSORS}

__all__ = ["CALL_TENSORS", "OPS", "READERS", "DenseAttention", "MultiHeadAttention"]
