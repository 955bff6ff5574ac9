"""``import lstm_convert``: the documented public name of lstm-convert's Python API.

It is the ``converter`` package itself (the same module object), under a name no local ``converter.py``
shadows.

>>> import lstm_convert, converter
>>> lstm_convert is converter
True
"""

import sys

import converter

sys.modules[__name__] = converter
