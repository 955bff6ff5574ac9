"""The pooling layers in the standalone NumPy script (``pooling.py`` keeps the ops; this their script form),
computed as the NumPy runtime computes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from converter.layers.pycode import PyContext, PyResult

if TYPE_CHECKING:
    from converter.layers.pooling import GlobalAveragePooling1D, Pooling1D


def global_average_code(
    op: GlobalAveragePooling1D, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]
) -> PyResult:
    axis, keep = op.steps_axis, ", keepdims=True" if op.keepdims else ""
    if masks[0] is None:
        return [f"{outs[0]} = np.mean({xs[0]}, axis={axis}{keep}, dtype=np.float32)"], [None]
    # Keras 3 removes masked steps with where(mask, x, 0), Keras 2 multiplies by the mask (Inf*0 = NaN).
    kept = "np.where(keep, x, np.float32(0))" if g.keras_major == 3 else "x * weight"
    body = [
        f"keep = np.expand_dims(mask.astype(bool), {op.mask_axis})",
        "weight = keep.astype(np.float32)",
        'with np.errstate(invalid="ignore", divide="ignore"):  # no valid step: NaN, as in Keras',
        f"    y = ({kept}).sum(axis={axis}{keep}) / weight.sum(axis={axis}{keep})",
        "return y.astype(np.float32)",
    ]
    fn = g.function(g.node.name, "x, mask", "GlobalAveragePooling1D: the mean over the valid steps.", body)
    return [f"{outs[0]} = {fn}({xs[0]}, {masks[0]})"], [None]


def pooling_code(op: Pooling1D, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
    """Windows of pool_size steps every strides steps; SAME padding (the odd step at the end) takes no part."""
    k, s = op.pool_size, op.strides
    body = (
        ["x = np.swapaxes(x, 1, 2)  # channels_first: (batch, steps, channels)"]
        if op.data_format == "channels_first"
        else []
    )
    body.append("steps = x.shape[1]")
    if op.padding == "same":
        body += [f"length = -(-steps // {s})", f"before = max((length - 1) * {s} + {k} - steps, 0) // 2"]
    else:
        body += [f"length = (steps - {k}) // {s} + 1", "before = 0"]
    body += [
        f"index = (np.arange(length) * {s} - before)[:, None] + np.arange({k})  # (windows, steps in each)",
        "valid = ((index >= 0) & (index < steps))[None, :, :, None]  # padding takes no part",
        "windows = x[:, np.clip(index, 0, steps - 1), :]",
    ]
    if op.op_type == "max_pooling1d":
        body.append("y = np.where(valid, windows, -np.inf).max(axis=2).astype(np.float32)")
    else:
        body.append("y = (np.where(valid, windows, np.float32(0)).sum(axis=2) / valid.sum(axis=2).astype(np.float32))")
        body.append("y = y.astype(np.float32)")
    body.append("return np.swapaxes(y, 1, 2)" if op.data_format == "channels_first" else "return y")
    doc = f"{g.node.keras_class}(pool_size={k}, strides={s}, padding={op.padding!r})."
    fn = g.function(g.node.name, "x", doc, body)
    return [f"{outs[0]} = {fn}({xs[0]})"], [None]
