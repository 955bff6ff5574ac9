"""UnitNormalization, RMSNormalization and Normalization in the standalone NumPy script, computed as
``scaling.py`` computes them (float32 throughout; Keras 2 and 3 differ in how UnitNormalization clips)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from converter.layers.base import known
from converter.layers.pycode import PyContext, PyResult, number

if TYPE_CHECKING:
    from converter.layers.scaling import Normalization, RMSNormalization, UnitNormalization

RSQRT = """def rsqrt(x):
    with np.errstate(divide="ignore"):  # 1 / sqrt(0) is inf, as in Keras
        return (np.float32(1) / np.sqrt(x)).astype(np.float32)"""


def unit_norm_code(
    op: UnitNormalization, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]
) -> PyResult:
    from converter.layers.scaling import UNIT_EPSILON

    ndim = len(g.shapes[0]) + 1
    axes = tuple(sorted({a % ndim for a in op.axis}))
    rsqrt = g.helper(RSQRT)
    body = [f"square_sum = np.sum(np.square(x), axis={axes}, keepdims=True, dtype=np.float32)"]
    if g.keras_major == 2:
        body.append(
            f"return (x * {rsqrt}(np.maximum(square_sum, np.float32({number(UNIT_EPSILON)})))).astype(np.float32)"
        )
    else:
        body.append(
            f"return (x * np.minimum({rsqrt}(square_sum), np.float32({number(1.0 / UNIT_EPSILON)}))).astype(np.float32)"
        )
    fn = g.function(g.node.name, "x", f"UnitNormalization(axis={list(op.axis)}): x over its L2 norm.", body)
    return [f"{outs[0]} = {fn}({xs[0]})"], [masks[0]]


def rms_norm_code(
    op: RMSNormalization, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]
) -> PyResult:
    ndim = len(g.shapes[0]) + 1
    axes = tuple(sorted({a % ndim for a in op.axis}))
    rsqrt = g.helper(RSQRT)
    body = [
        f"scale = {g.weight('scale', op.weights['scale'])}",
        f"mean_square = np.square(x).mean(axis={axes}, keepdims=True, dtype=np.float32)",
        f"inv = {rsqrt}(mean_square + np.float32({number(op.epsilon)}))",
        "return (x * inv * scale).astype(np.float32)",
    ]
    fn = g.function(g.node.name, "x", f"RMSNormalization(axis={list(op.axis)}, epsilon={op.epsilon}).", body)
    return [f"{outs[0]} = {fn}({xs[0]})"], [None]  # the mask is dropped, as Keras does


def normalization_code(
    op: Normalization, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]
) -> PyResult:
    shape = (1, *g.shapes[0])
    if not all(known(shape[k]) for k in op._kept(len(shape))):
        raise g.unsupported("no standalone-Python form for Normalization over an axis of open size yet.")
    mean, denom = op.constants(shape)
    body = [
        f"mean = {g.weight('mean', mean)}",
        f"denominator = {g.weight('denominator', denom)}  # max(sqrt(variance), 1e-7)",
    ]
    body.append(
        "return (mean + x * denominator).astype(np.float32)"
        if op.invert
        else "return ((x - mean) / denominator).astype(np.float32)"
    )
    doc = "Normalization" + (" (invert=True)" if op.invert else "") + ": fixed mean and variance per position."
    fn = g.function(g.node.name, "x", doc, body)
    return [f"{outs[0]} = {fn}({xs[0]})"], [masks[0]]
