"""What the attention layers share: their call options, the causal mask, and Keras' masked softmax.

Keras hides masked scores from the softmax in two ways, and the two differ on a row where every score
is masked (a fully padded query, a causal row with only padded keys):

- ``subtract``: ``scores - 1e9`` at masked places (``Attention``/``AdditiveAttention`` of both versions,
  Keras 2 ``MultiHeadAttention`` adding ``(1 - mask) * -1e9``: the same float32 sums). A fully masked row
  keeps the float32 rounding of ``score - 1e9`` (a multiple of 64), so it is computed as exactly that.
- ``replace``: masked scores replaced by a large negative (Keras 3 ``MultiHeadAttention``, Keras 2 with
  ``softmax_robust_masking``): a fully masked row gets equal weights. Which large negative does not matter
  (-1e9 or -0.7 * float32 max: exp underflows to 0 either way, and equal values give equal weights).
  Keras 3's ``Softmax`` layer path (``return_attention_scores`` or ``dropout`` > 0) also zeroes the
  weights at masked places afterwards (``zero_masked``), so a fully masked row attends to nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from converter.layers.base import BOOL, FLOAT, Array, Mask, ReadContext

if TYPE_CHECKING:
    from converter.export.onnx_builder import Builder

LARGE = np.float32(1e9)
_OPTIONS = ("use_causal_mask", "return_attention_scores", "training")


def call_flags(ctx: ReadContext, config_causal: bool = False) -> tuple[bool, bool]:
    """``use_causal_mask`` and ``return_attention_scores`` of the call (Keras records both with the call,
    Keras 2's deprecated ``causal`` config field counts as ``use_causal_mask``)."""
    unknown = sorted(set(ctx.call_options) - set(_OPTIONS))
    if unknown:
        raise ctx.unsupported(
            f"the call argument(s) {', '.join(unknown)} are not supported; supported: {', '.join(_OPTIONS)}."
        )
    values = []
    for key in _OPTIONS:
        value = ctx.call_options.get(key)
        if value is not None and not isinstance(value, bool):
            raise ctx.bad(f"the call argument {key} is {value!r}, not true or false.")
        values.append(bool(value))
    causal, scores, training = values
    if training:
        raise ctx.unsupported("it is called with training=True (dropout at inference); save it without.")
    return causal or config_causal, scores


def causal_mask(tq: int, tv: int) -> Array:
    """Keras' lower-triangular mask (Tq, Tv): query step i sees key steps j <= i."""
    return np.arange(tq)[:, None] >= np.arange(tv)[None, :]


def band_mask(tq: int, tv: int, window: int) -> Array:
    """Keras 3 ``sliding_window``: |i - j| < window."""
    return np.abs(np.arange(tq)[:, None] - np.arange(tv)[None, :]) < window


def both(a: Mask, b: Mask) -> Mask:
    if a is None:
        return b
    return a if b is None else a & b


def softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32, copy=False)


def masked_softmax(scores: Array, keep: Mask, mode: str, zero_masked: bool = False) -> Array:
    """Softmax over the last axis with Keras' masking (``keep`` broadcasts against ``scores``)."""
    if keep is None:
        return softmax(scores)
    hidden = scores - LARGE if mode == "subtract" else np.broadcast_to(-LARGE, scores.shape)
    weights = softmax(np.where(keep, scores, hidden).astype(np.float32))
    return np.where(keep, weights, np.float32(0)) if zero_masked else weights


# --- PyTorch source --------------------------------------------------------------------------------------

#: The generated file's ``masked_softmax`` (``subtract``: masked scores become score - 1e9, else -1e9).
TORCH_MASKED_SOFTMAX = '''def _masked_softmax(scores, keep, subtract=True, zero_masked=False):
    """Softmax over the last axis hiding the scores where keep is false, as Keras does: score - 1e9
    (subtract) or -1e9 in their place; with zero_masked the weights there are zeroed afterwards."""
    if keep is None:
        return torch.softmax(scores, dim=-1)
    hidden = scores - 1e9 if subtract else torch.full_like(scores, -1e9)
    weights = torch.softmax(torch.where(keep, scores, hidden), dim=-1)
    return torch.where(keep, weights, 0.0) if zero_masked else weights
'''


def torch_causal(q: str, v: str) -> str:
    """Keras' causal mask (Tq, Tv) in PyTorch source: query step i sees key steps j <= i."""
    return f"torch.ones({q}.shape[1], {v}.shape[1], dtype=torch.bool, device={q}.device).tril()"


# --- ONNX -----------------------------------------------------------------------------------------------


def onnx_steps(b: Builder, x: str, p: str) -> str:
    """The time length of a (batch, time, ...) tensor as a 0-D int64."""
    shape = b.op("Shape", [x], f"{p}/shape")
    return b.op("Gather", [shape, b.scalar(1, np.int64)], f"{p}/steps", axis=0)


def onnx_positions(b: Builder, q: str, v: str, p: str) -> tuple[str, str]:
    """Query step numbers as a column (Tq, 1) and key step numbers as a row (Tv,)."""
    one, zero = b.scalar(1, np.int64), b.scalar(0, np.int64)
    rows = b.op("Range", [zero, onnx_steps(b, q, f"{p}/q"), one], f"{p}/rows")
    cols = b.op("Range", [zero, onnx_steps(b, v, f"{p}/v"), one], f"{p}/cols")
    return b.unsqueeze(rows, [1], f"{p}/row_column"), cols


def onnx_causal(b: Builder, q: str, v: str, p: str) -> str:
    rows, cols = onnx_positions(b, q, v, f"{p}/causal")
    return b.op("GreaterOrEqual", [rows, cols], f"{p}/causal")


def onnx_band(b: Builder, q: str, v: str, window: int, p: str) -> str:
    rows, cols = onnx_positions(b, q, v, f"{p}/band")
    distance = b.op("Abs", [b.op("Sub", [rows, cols], f"{p}/band/offset")], f"{p}/band/distance")
    return b.op("Less", [distance, b.scalar(window, np.int64)], f"{p}/band")


def onnx_both(b: Builder, a: str | None, c: str | None, name: str) -> str | None:
    if a is None:
        return c
    return a if c is None else b.op("And", [a, c], name)


def onnx_masked_softmax(b: Builder, scores: str, keep: str | None, mode: str, zero_masked: bool, p: str) -> str:
    """``masked_softmax`` in ONNX ops: Where + Softmax (single axis, the last)."""
    if keep is None:
        return b.op("Softmax", [scores], f"{p}/softmax", axis=-1)
    if mode == "subtract":
        hidden = b.op("Sub", [scores, b.scalar(float(LARGE))], f"{p}/hidden")
    else:
        hidden = b.scalar(-float(LARGE))
    weights = b.op("Softmax", [b.op("Where", [keep, scores, hidden], f"{p}/masked")], f"{p}/softmax", axis=-1)
    if zero_masked:
        weights = b.op("Where", [keep, weights, b.scalar(0.0)], f"{p}/weights")
    return weights


def onnx_bool(b: Builder, name: str, elem_type: int, p: str) -> str:
    """A tensor as booleans (Keras casts a given attention_mask: nonzero is true)."""
    if elem_type == BOOL:
        return name
    if elem_type != FLOAT:
        name = b.op("Cast", [name], f"{p}/as_float", to=FLOAT)
    return b.op("Not", [b.op("Equal", [name, b.scalar(0.0)], f"{p}/is_zero")], f"{p}/as_bool")
