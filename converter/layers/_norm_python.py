"""BatchNormalization and LayerNormalization in the standalone NumPy script, in Keras' float32 order of
operations as ``normalization.py`` computes them (``inv = rsqrt(var + eps) * gamma``, then
``y = x * inv + (beta - mean * inv)``; tf.keras' fused layer-norm kernel where it takes it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from converter.layers.pycode import PyContext, PyResult, number

if TYPE_CHECKING:
    from converter.layers.normalization import BatchNormalization, LayerNormalization


def _along(names: list[str], axes: list[int], param_shape: tuple[int, ...], ndim: int) -> list[str]:
    """Reshape the parameters to broadcast where the normalised axes are not just the last one."""
    if len(param_shape) == ndim or axes == [ndim - 1]:
        return []
    shape = [1] * ndim
    for a, d in zip(axes, param_shape, strict=True):
        shape[a] = d
    return [f"{name} = {name}.reshape({tuple(shape)})" for name in names]


def batch_norm_code(
    op: BatchNormalization, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]
) -> PyResult:
    ndim = len(g.shapes[0]) + 1
    axes = sorted(a % ndim for a in op.axis)
    body = [
        f"{k} = {g.weight(k, op.weights[k])}"
        for k in ("gamma", "beta", "moving_mean", "moving_variance")
        if k in op.weights
    ]
    inv = f"np.float32(1) / np.sqrt(moving_variance + np.float32({number(op.epsilon)}))"
    body.append(f"inv = {inv}{' * gamma' if op.scale else ''}")
    body.append(f"shift = {'beta - moving_mean * inv' if op.center else '-(moving_mean * inv)'}")
    body += _along(["inv", "shift"], axes, op.param_shape, ndim)
    body.append("return (x * inv + shift).astype(np.float32)")
    fn = g.function(
        g.node.name, "x", f"BatchNormalization(epsilon={op.epsilon}) at inference: the moving statistics.", body
    )
    return [f"{outs[0]} = {fn}({xs[0]})"], [masks[0]]


def layer_norm_code(
    op: LayerNormalization, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]
) -> PyResult:
    ndim = len(g.shapes[0]) + 1
    axes = sorted(a % ndim for a in op.axis)
    names = [k for k in ("gamma", "beta") if k in op.weights]
    body = [f"{k} = {g.weight(k, op.weights[k])}" for k in names]
    body += _along(names, axes, op.param_shape, ndim)
    axis = tuple(axes)
    body += [
        f"mean = x.mean(axis={axis}, keepdims=True, dtype=np.float32)",
        f"var = np.square(x - mean).mean(axis={axis}, keepdims=True, dtype=np.float32)",
        f"inv = np.float32(1) / np.sqrt(var + np.float32({number(op.epsilon)}))",
    ]
    if op.rms_scaling:
        body.append("y = x * inv" + (" * gamma" if op.scale else ""))
    elif op.fused(ndim, g.keras_major):  # tf.keras' fused kernel
        body.append("y = (x - mean) * inv" + (" * gamma" if op.scale else "") + (" + beta" if op.center else ""))
    else:
        body.append("inv = inv * gamma" if op.scale else "inv = inv")
        body.append("y = x * inv + " + ("(beta - mean * inv)" if op.center else "-(mean * inv)"))
    body.append("return y.astype(np.float32)")
    fn = g.function(g.node.name, "x", f"LayerNormalization(axis={list(op.axis)}, epsilon={op.epsilon}).", body)
    return [f"{outs[0]} = {fn}({xs[0]})"], [masks[0]]
