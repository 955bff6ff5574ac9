"""What convolution and pooling layers share: Keras' padding arithmetic, sliding windows in NumPy, the
channels-last <-> channels-first transposes of ONNX, and reading their tuple options.

Keras (TensorFlow) pads ``same`` so that the output has ``ceil(n / stride)`` steps, the extra padding step
going to the end, ``causal`` by ``dilation * (kernel - 1)`` steps at the start; ``valid`` not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from converter.errors import BadInputs
from converter.layers.base import Array, Dim, ReadContext, ShapeMismatch, known

if TYPE_CHECKING:
    from converter.export.onnx_builder import Builder
    from converter.layers.base import TorchContext

PADDINGS = ("valid", "same", "causal")


def int_tuple(config: Mapping[str, Any], key: str, rank: int, ctx: ReadContext, default: Any = None) -> tuple[int, ...]:
    """A Keras size option (``kernel_size``, ``strides``): one number or ``rank`` numbers, each >= 1."""
    value = config.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * rank
    if (
        not isinstance(value, list | tuple)
        or len(value) != rank
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ctx.bad(f"{key} is {value!r}, not {rank} whole number(s) >= 1.")
    return tuple(value)


def read_padding(config: Mapping[str, Any], ctx: ReadContext, allowed: tuple[str, ...]) -> str:
    padding = str(config.get("padding", "valid")).lower()
    if padding not in allowed:
        raise ctx.unsupported(f"padding {padding!r} is not supported; supported: {', '.join(allowed)}.")
    return padding


def read_data_format(config: Mapping[str, Any], ctx: ReadContext) -> str:
    fmt = config.get("data_format") or "channels_last"
    if fmt not in ("channels_last", "channels_first"):
        raise ctx.bad(f"data_format {fmt!r} is neither channels_last nor channels_first.")
    return str(fmt)


def pad_amounts(n: Dim, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int] | None:
    """Padding before and after one spatial axis of length ``n``; None where it depends on an unknown ``n``."""
    effective = (kernel - 1) * dilation + 1
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return effective - 1, 0
    if stride == 1:  # 'same' with stride 1 pads the same whatever the length
        return (effective - 1) // 2, effective - 1 - (effective - 1) // 2
    if not known(n):
        return None
    out = -(-n // stride)  # type: ignore[operator]
    total = max((out - 1) * stride + effective - n, 0)  # type: ignore[operator]
    return total // 2, total - total // 2


def out_length(n: Dim, kernel: int, stride: int, dilation: int, padding: str) -> Dim:
    """The output length of one spatial axis (None when unknown; a symbolic length kept when unchanged)."""
    effective = (kernel - 1) * dilation + 1
    if not known(n):
        return n if stride == 1 and padding in ("same", "causal") else None
    if padding in ("same", "causal"):
        return -(-n // stride)  # type: ignore[operator]
    if n < effective:  # type: ignore[operator]
        raise ShapeMismatch(f"its window of {effective} steps does not fit an axis of length {n}")
    return (n - effective) // stride + 1  # type: ignore[operator]


def spatial_in(shape: tuple[Dim, ...], channels_first: bool) -> tuple[tuple[Dim, ...], Dim]:
    """The spatial axes and the channel count of a shape without its batch axis."""
    return (shape[1:], shape[0]) if channels_first else (shape[:-1], shape[-1])


def spatial_out(spatial: tuple[Dim, ...], channels: Dim, channels_first: bool) -> tuple[Dim, ...]:
    return (channels, *spatial) if channels_first else (*spatial, channels)


# --- NumPy --------------------------------------------------------------------------------------------


def windows(
    x: Array,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    padding: str,
    fill: float,
    where: str = "layer",
) -> Array:
    """Every window of a channels-last ``x`` (N, *spatial, C), padded as Keras pads with ``fill``:
    shape (N, *out, C, *kernel)."""
    rank = len(kernel)
    pads = [pad_amounts(x.shape[1 + i], kernel[i], strides[i], dilations[i], padding) for i in range(rank)]
    x = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)  # type: ignore[list-item]
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    for n, e in zip(x.shape[1:-1], effective, strict=True):
        if n < e:  # only an input with open sizes can get here: the model's shapes were checked
            raise BadInputs(
                f"{where}: its window of {e} does not fit an axis of {n} (padding included); feed a larger input."
            )
    view = sliding_window_view(x, effective, axis=tuple(range(1, rank + 1)))
    index = (
        slice(None),
        *(slice(None, None, s) for s in strides),
        slice(None),
        *(slice(None, None, d) for d in dilations),
    )
    return view[index]


def conv(x: Array, kernel: Array, groups: int, strides, dilations, padding: str, where: str = "layer") -> Array:
    """A grouped convolution of channels-last ``x`` with a Keras kernel (*k, in/groups, out), in float64.

    One product per kernel tap over a view of the padded input: memory stays that of the output, never
    that of every window (a 3x3 convolution over frames would otherwise copy each input value nine times).
    """
    rank = kernel.ndim - 2
    taps = kernel.shape[:rank]
    win = windows(x, taps, strides, dilations, padding, 0.0, where)  # a view (N, *out, C, *k)
    n, out = win.shape[0], win.shape[1 : 1 + rank]
    per_group, filters = kernel.shape[rank], kernel.shape[rank + 1]
    # per tap: (groups, in/groups, out/groups), so that each group is one BLAS product
    w = kernel.reshape(*taps, per_group, groups, filters // groups).astype(np.float64)
    w = np.moveaxis(w, rank + 1, rank)
    rows = n * int(np.prod(out))
    y = np.zeros((groups, rows, filters // groups))
    for tap in np.ndindex(*taps):
        part = win[(..., *tap)].reshape(rows, groups, per_group).astype(np.float64)
        y += np.matmul(part.transpose(1, 0, 2), w[tap])
    return y.transpose(1, 0, 2).reshape(n, *out, filters)


def channels_last(x: Array, channels_first: bool) -> Array:
    return np.moveaxis(x, 1, -1) if channels_first else x


def back_to(x: Array, channels_first: bool) -> Array:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1) if channels_first else x)


# --- ONNX ---------------------------------------------------------------------------------------------


def to_first_perm(rank: int) -> list[int]:
    """(N, *spatial, C) -> (N, C, *spatial) for a tensor of ``rank`` axes."""
    return [0, rank - 1, *range(1, rank - 1)]


def to_last_perm(rank: int) -> list[int]:
    return [0, *range(2, rank), 1]


def onnx_padded(
    b: Builder,
    x: str,
    spatial: tuple[Dim, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    padding: str,
    p: str,
    fill: float = 0.0,
) -> tuple[str, dict[str, Any], str | None]:
    """A channels-first ``x`` padded as Keras pads it: the op's ``pads`` attribute (explicit, Keras' exact
    split) where every padded length is known; else a Pad node with pads computed from the lengths at run
    time (returned too, to pad something else alike). ONNX's ``auto_pad`` is deprecated, and its SAME_UPPER
    pads a negative amount where the stride exceeds the window, which onnxruntime rejects."""
    amounts = [pad_amounts(n, k, s, d, padding) for n, k, s, d in zip(spatial, kernel, strides, dilations, strict=True)]
    if all(a is not None for a in amounts):
        return x, {"pads": [a[0] for a in amounts] + [a[1] for a in amounts]}, None  # type: ignore[index]
    shape = b.op("Shape", [x], f"{p}/shape")
    before, after = [], []
    for i, (a, k, s, d) in enumerate(zip(amounts, kernel, strides, dilations, strict=True)):
        if a is not None:
            before.append(b.i64(a[0]))
            after.append(b.i64(a[1]))
            continue
        n = b.slice(shape, [2 + i], [3 + i], [0], f"{p}/length_{i}")  # 'same', stride > 1: TF's rule
        out = b.op("Div", [b.op("Add", [n, b.i64(s - 1)], f"{p}/round_up_{i}"), b.i64(s)], f"{p}/out_{i}")
        last = b.op("Mul", [b.op("Sub", [out, b.i64(1)], f"{p}/last_{i}"), b.i64(s)], f"{p}/reach_{i}")
        span = b.op("Add", [last, b.i64((k - 1) * d + 1)], f"{p}/span_{i}")
        total = b.op("Max", [b.op("Sub", [span, n], f"{p}/excess_{i}"), b.i64(0)], f"{p}/total_{i}")
        before.append(b.op("Div", [total, b.i64(2)], f"{p}/before_{i}"))
        after.append(b.op("Sub", [total, before[-1]], f"{p}/after_{i}"))
    pads = b.op("Concat", [b.i64(0, 0), *before, b.i64(0, 0), *after], f"{p}/pads", axis=0)
    return b.op("Pad", [x, pads, b.scalar(fill)], f"{p}/padded", mode="constant"), {}, pads


def onnx_channels_first(b: Builder, x: str, rank: int, channels_first: bool, p: str) -> str:
    return x if channels_first else b.transpose(x, to_first_perm(rank), f"{p}/channels_first")


def onnx_back(b: Builder, y: str, rank: int, channels_first: bool, p: str) -> str:
    return y if channels_first else b.transpose(y, to_last_perm(rank), f"{p}/channels_last")


# --- PyTorch source -----------------------------------------------------------------------------------

#: The generated file's TensorFlow SAME padding of an axis whose length is known only at run time.
TORCH_SAME_PADS = '''def _same_pads(n, kernel, stride, dilation=1):
    """TensorFlow's SAME padding of one axis of length n: (before, after), the odd step at the end."""
    total = max((-(-n // stride) - 1) * stride + (kernel - 1) * dilation + 1 - n, 0)
    return total // 2, total - total // 2
'''


def torch_pads(
    g: TorchContext,
    x: str,
    spatial: tuple[Dim, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    padding: str,
) -> str | None:
    """``F.pad``'s pads (the last axis first) padding the channels-first ``x`` as Keras does; None where
    Keras pads nothing. Constants where the lengths are known, else computed from ``x.shape``."""
    amounts = [pad_amounts(n, k, s, d, padding) for n, k, s, d in zip(spatial, kernel, strides, dilations, strict=True)]
    if all(a == (0, 0) for a in amounts):
        return None
    parts = []
    for i in reversed(range(len(amounts))):
        a = amounts[i]
        if a is None:
            helper = g.helper(TORCH_SAME_PADS)
            parts.append(f"*{helper}({x}.shape[{2 + i}], {kernel[i]}, {strides[i]}, {dilations[i]})")
        else:
            parts += [str(a[0]), str(a[1])]
    return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})"


def torch_channels_first(x: str, rank: int) -> str:
    """(N, *spatial, C) -> (N, C, *spatial) in PyTorch source, for a tensor of ``rank`` axes."""
    return f"{x}.permute({', '.join(map(str, to_first_perm(rank)))})"


def torch_channels_last(x: str, rank: int) -> str:
    return f"{x}.permute({', '.join(map(str, to_last_perm(rank)))})"
