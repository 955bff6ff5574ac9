"""Convolutions in the standalone NumPy script: one ``conv`` helper (the grouped convolution of
``_spatial.conv``, Keras' valid/same/causal padding, float64 sums as the runtime does) and one function
per layer around it (``conv.py`` keeps the op)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from converter.layers.pycode import PyContext, PyResult

if TYPE_CHECKING:
    from converter.layers.conv import Conv
    from converter.layers.conv2d import GlobalPool2D, Pool2D

WINDOWS = '''def windows(x, taps, strides, dilations, padding, fill=0.0):
    """Every window of channels-last x (batch, *spatial, channels), padded with fill as Keras pads
    (valid, same or causal): shape (batch, *out, channels, *taps)."""
    rank = len(taps)
    effective = [(k - 1) * d + 1 for k, d in zip(taps, dilations)]  # the window with its holes
    pads = []
    for n, e, s in zip(x.shape[1:-1], effective, strides):
        if padding == "valid":
            pads.append((0, 0))
        elif padding == "causal":
            pads.append((e - 1, 0))
        else:  # same: TensorFlow puts the odd padding step at the end
            total = max((-(-n // s) - 1) * s + e - n, 0)
            pads.append((total // 2, total - total // 2))
    x = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(x, effective, axis=tuple(range(1, rank + 1)))
    steps = [slice(None, None, s) for s in strides]
    return view[(slice(None), *steps, slice(None), *(slice(None, None, d) for d in dilations))]'''

CONV = '''def conv(x, kernel, groups, strides, dilations, padding):
    """A grouped convolution of channels-last x with a Keras kernel (*taps, channels / groups, filters)."""
    rank = kernel.ndim - 2
    taps = kernel.shape[:rank]
    win = windows(x, taps, strides, dilations, padding)  # (batch, *out, channels, *taps)
    batch, out = win.shape[0], win.shape[1 : 1 + rank]
    per_group, filters = kernel.shape[rank], kernel.shape[rank + 1]
    w = np.moveaxis(kernel.reshape(*taps, per_group, groups, filters // groups).astype(np.float64), rank + 1, rank)
    rows = batch * int(np.prod(out))
    y = np.zeros((groups, rows, filters // groups))
    for tap in np.ndindex(*taps):  # one product per kernel tap, each group one matmul
        part = win[(..., *tap)].reshape(rows, groups, per_group).astype(np.float64)
        y += np.matmul(part.transpose(1, 0, 2), w[tap])
    return y.transpose(1, 0, 2).reshape(batch, *out, filters)'''


def conv_code(op: Conv, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
    g.helper(WINDOWS)
    helper = g.helper(CONV)
    names = ["kernel"] if op.kind == "conv" else ["depthwise_kernel"]
    names += ["pointwise_kernel"] if op.kind == "separable" else []
    names += ["bias"] if op.use_bias else []
    body = [f"{n} = {g.weight(n, op.weights[n])}" for n in names]
    if op.channels_first:
        body.append("x = np.moveaxis(x, 1, -1)  # channels_first: Keras convolves channels-last")
    kernel = "kernel"
    if op.kind != "conv":  # depthwise: one group per input channel
        shape = (*op.kernel_size, 1, op.in_channels * op.depth_multiplier)
        body.append(f"kernel = depthwise_kernel.reshape({shape})  # output channel c*m + j reads input c")
    args = f"{op.conv_groups}, {op.strides}, {op.dilation_rate}, {op.padding!r}"
    body.append(f"y = {helper}(x.astype(np.float32), {kernel}, {args})")
    if op.kind == "separable":
        ones = (1,) * op.rank
        body.append(f"y = {helper}(y, pointwise_kernel, 1, {ones}, {ones}, 'valid')  # the 1x1 pointwise step")
    if op.use_bias:
        body.append("y = y + bias")
    body.append("y = y.astype(np.float32)")
    if op.channels_first:
        body.append("y = np.ascontiguousarray(np.moveaxis(y, -1, 1))")
    body.append(f"return np.asarray({g.apply(op.activation, 'y')}, np.float32)")
    doc = f"{g.node.keras_class}(filters={op.filters}, kernel_size={op.kernel_size}, padding={op.padding!r})."
    fn = g.function(g.node.name, "x", doc, body)
    return [f"{outs[0]} = {fn}({xs[0]})"], [None]  # Keras' convolutions drop the mask


def pool2d_code(op: Pool2D, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
    win = g.helper(WINDOWS)
    body = ["x = np.moveaxis(x, 1, -1)  # channels_first: pooled channels-last"] if op.channels_first else []
    args = f"{op.pool_size}, {op.strides}, (1, 1), {op.padding!r}"
    if op.mode == "max":
        body.append(f"y = {win}(x.astype(np.float32), {args}, -np.inf).max(axis=(-2, -1))")
    else:  # the padding is left out of the count, as TensorFlow's average pooling does
        body.append(f"total = {win}(x.astype(np.float64), {args}).sum(axis=(-2, -1))")
        body.append(f"y = total / {win}(np.ones_like(x[:1, ..., :1]), {args}).sum(axis=(-2, -1))")
    body.append("y = y.astype(np.float32)")
    body.append("return np.ascontiguousarray(np.moveaxis(y, -1, 1))" if op.channels_first else "return y")
    doc = f"{g.node.keras_class}(pool_size={op.pool_size}, strides={op.strides}, padding={op.padding!r})."
    fn = g.function(g.node.name, "x", doc, body)
    return [f"{outs[0]} = {fn}({xs[0]})"], [None]


def global_pool2d_code(
    op: GlobalPool2D, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]
) -> PyResult:
    axes = (2, 3) if op.channels_first else (1, 2)
    reduce = "max" if op.mode == "max" else "mean"
    keep = ", keepdims=True" if op.keepdims else ""
    return [f"{outs[0]} = {xs[0]}.astype(np.float32).{reduce}(axis={axes}{keep})"], [None]
