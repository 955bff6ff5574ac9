"""UnitNormalization, RMSNormalization and Normalization in the standalone NumPy script, computed as
``scaling.py`` computes them (float32 throughout; Keras 2 and 3 differ in how UnitNormalization clips)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from converter.layers.base import known
from converter.layers.pycode import PyContext, PyResult, number

if TYPE_CHECKING:
    from converter.layers.dot import Dot
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
    l2 = l2_normalize_helper(g, UNIT_EPSILON)
    return [f"{outs[0]} = {l2}({xs[0]}.astype(np.float32), {axes})  # x over its L2 norm"], [masks[0]]


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


def l2_normalize_helper(g: PyContext, epsilon: float) -> str:
    """The script's ``l2_normalize(x, axes)`` as the file's Keras version computes it (``scaling.l2_normalize``)."""
    from converter.layers.scaling import UNIT_EPSILON

    rsqrt = g.helper(RSQRT)
    if g.keras_major == 2:
        inv = f"{rsqrt}(np.maximum(square_sum, np.float32({number(UNIT_EPSILON)})))"
    else:
        inv = f"np.minimum({rsqrt}(square_sum), np.float32({number(1.0 / epsilon)}))"
    name = "l2_normalize" if epsilon == UNIT_EPSILON else "l2_normalize_dot"
    return g.helper(
        f"def {name}(x, axes):\n"
        "    square_sum = np.sum(np.square(x), axis=axes, keepdims=True, dtype=np.float32)\n"
        f"    return (x * {inv}).astype(np.float32)"
    )


def dot_code(op: Dot, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
    from converter.layers.scaling import KERAS_EPSILON

    i, j = op.resolved(len(g.shapes[0]) + 1, len(g.shapes[1]) + 1)
    body = ["x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)"]
    if op.normalize:
        l2 = l2_normalize_helper(g, KERAS_EPSILON)
        body.append(f"x, y = {l2}(x, ({i},)), {l2}(y, ({j},))  # normalize=True: cosine similarity")
    body += [
        f"x, y = np.moveaxis(x, {i}, -1), np.moveaxis(y, {j}, 1)  # (batch, ..., K) and (batch, K, ...)",
        "rest_x, rest_y = x.shape[1:-1], y.shape[2:]",
        "flat = np.matmul(x.reshape(x.shape[0], -1, x.shape[-1]), y.reshape(y.shape[0], y.shape[1], -1))",
        "out = flat.reshape((x.shape[0], *rest_x, *rest_y) if rest_x or rest_y else (x.shape[0], 1))",
        "return out.astype(np.float32)",
    ]
    fn = g.function(g.node.name, "x, y", f"Dot(axes={list(op.axes)}): sums of products over the axes.", body)
    return [f"{outs[0]} = {fn}({xs[0]}, {xs[1]})"], [None]
