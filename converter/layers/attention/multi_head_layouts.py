"""The npz/JSON tensors of ``MultiHeadAttention`` in each layout.

- ``keras``: Keras' own variables, ``mha/query/kernel`` (features, heads, key_dim), ``mha/query/bias``
  (heads, key_dim), ``key``, ``value`` alike, ``mha/attention_output/kernel`` (heads, value_dim, out).
- ``onnx``: the matrices the ONNX graph multiplies by, heads flattened: ``mha/query/W`` (features,
  heads*key_dim), ``mha/query/b`` (heads*key_dim,), ..., ``mha/attention_output/W`` (heads*value_dim, out).
- ``pytorch``: ``nn.MultiheadAttention(embed_dim, num_heads, kdim=, vdim=, bias=, batch_first=True)``'s
  state dict, where it computes the same: ``in_proj_weight`` (3E, E) when key and value have E features
  too, else ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``; ``in_proj_bias``, ``out_proj.*``.
  It needs heads*key_dim == E (the query's features), value_dim == key_dim and an output of E features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from converter.layers.base import LAYOUT_SEP, Array, LayoutTensor

if TYPE_CHECKING:
    from converter.layers.attention.multi_head import MultiHeadAttention

PROJECTIONS = ("query", "key", "value", "attention_output")
_MEANING = {
    "query": "query projection",
    "key": "key projection",
    "value": "value projection",
    "attention_output": "output projection of the concatenated heads",
}


def _kernel_shapes(op: MultiHeadAttention) -> dict[str, tuple[int, ...]]:
    dq, dk, dv, out = op.dims
    n, kd, vd = op.num_heads, op.key_dim, op.value_dim
    return {"query": (dq, n, kd), "key": (dk, n, kd), "value": (dv, n, vd), "attention_output": (n, vd, out)}


def _bias_shapes(op: MultiHeadAttention) -> dict[str, tuple[int, ...]]:
    n, kd, vd = op.num_heads, op.key_dim, op.value_dim
    return {"query": (n, kd), "key": (n, kd), "value": (n, vd), "attention_output": (op.dims[3],)}


def keras_shapes(op: MultiHeadAttention, which: str) -> dict[str, tuple[int, ...]]:
    """The shapes of projection ``which``'s kernel (and bias) as Keras keeps them."""
    kernel = {"kernel": _kernel_shapes(op)[which]}
    return kernel | ({"bias": _bias_shapes(op)[which]} if op.use_bias else {})


def shell(op: MultiHeadAttention) -> dict[str, Array]:
    """Weights of the right shapes holding nothing (for the keys and shapes a layout needs)."""
    zero = np.float32(0)
    result = {}
    for which in PROJECTIONS:
        result[f"{which}/kernel"] = np.broadcast_to(zero, _kernel_shapes(op)[which])
        if op.use_bias:
            result[f"{which}/bias"] = np.broadcast_to(zero, _bias_shapes(op)[which])
    return result


def torch_refusal(op: MultiHeadAttention) -> str | None:
    """Why ``nn.MultiheadAttention`` cannot hold the layer exactly (None: it can)."""
    dq, _, _, out = op.dims
    if op.num_heads * op.key_dim != dq:
        return (
            f"PyTorch's nn.MultiheadAttention needs num_heads*key_dim ({op.num_heads}*{op.key_dim}) to equal the "
            f"query's {dq} features (its embed_dim); use the keras or onnx layout."
        )
    if op.value_dim != op.key_dim:
        return (
            f"PyTorch's nn.MultiheadAttention needs value_dim ({op.value_dim}) equal to key_dim ({op.key_dim}); "
            "use the keras or onnx layout."
        )
    if out != dq:
        return (
            f"PyTorch's nn.MultiheadAttention outputs embed_dim ({dq}) features, this layer {out} (output_shape); "
            "use the keras or onnx layout."
        )
    return None


def _matrix(op: MultiHeadAttention, which: str) -> Array:
    w = op.weights[f"{which}/kernel"]
    return w.reshape(-1, w.shape[-1]) if which == "attention_output" else w.reshape(w.shape[0], -1)


def tensors(op: MultiHeadAttention, name: str, layout: str) -> list[LayoutTensor]:
    w = op.weights
    if layout == "keras":
        result = []
        for which in PROJECTIONS:
            shape = _kernel_shapes(op)[which]
            meaning = f"{_MEANING[which]} kernel {shape}"
            result.append(LayoutTensor(f"{name}/{which}/kernel", shape, meaning, lambda k=f"{which}/kernel": w[k]))
            if op.use_bias:
                shape = _bias_shapes(op)[which]
                meaning = f"{_MEANING[which]} bias {shape}"
                result.append(LayoutTensor(f"{name}/{which}/bias", shape, meaning, lambda k=f"{which}/bias": w[k]))
        return result
    if layout == "onnx":
        result = []
        for which in PROJECTIONS:
            kernel, bias = _kernel_shapes(op)[which], _bias_shapes(op)[which]
            shape = (
                (kernel[0] * kernel[1], kernel[2])
                if which == "attention_output"
                else (kernel[0], kernel[1] * kernel[2])
            )
            meaning = f"{_MEANING[which]}, heads flattened: x @ W + b"
            result.append(LayoutTensor(f"{name}/{which}/W", shape, meaning, lambda which=which: _matrix(op, which)))
            if op.use_bias:
                size = int(np.prod(bias))
                result.append(
                    LayoutTensor(
                        f"{name}/{which}/b",
                        (size,),
                        f"{_MEANING[which]} bias",
                        lambda k=f"{which}/bias": w[k].reshape(-1),
                    )
                )
        return result
    return _torch_tensors(op, name)


def _torch_tensors(op: MultiHeadAttention, name: str) -> list[LayoutTensor]:
    dq, dk, dv, _ = op.dims
    w = op.weights
    result = []
    if dk == dq and dv == dq:
        meaning = "in_proj_weight (3E x E): [query; key; value] projections, each (out x in)"
        build = lambda: np.concatenate([_matrix(op, p).T for p in PROJECTIONS[:3]])  # noqa: E731
        result.append(LayoutTensor(f"{name}.in_proj_weight", (3 * dq, dq), meaning, build))
    else:
        for which, short, dim in (("query", "q", dq), ("key", "k", dk), ("value", "v", dv)):
            meaning = f"{short}_proj_weight (E x {which} features)"
            result.append(
                LayoutTensor(f"{name}.{short}_proj_weight", (dq, dim), meaning, lambda p=which: _matrix(op, p).T)
            )
    if op.use_bias:
        build = lambda: np.concatenate([w[f"{p}/bias"].reshape(-1) for p in PROJECTIONS[:3]])  # noqa: E731
        result.append(LayoutTensor(f"{name}.in_proj_bias", (3 * dq,), "in_proj_bias: [query; key; value]", build))
    meaning = "out_proj.weight (E x E): output projection (out x in)"
    result.append(LayoutTensor(f"{name}.out_proj.weight", (dq, dq), meaning, lambda: _matrix(op, "attention_output").T))
    if op.use_bias:
        result.append(LayoutTensor(f"{name}.out_proj.bias", (dq,), "out_proj.bias", lambda: w["attention_output/bias"]))
    return result


def weights_from(op: MultiHeadAttention, name: str, layout: str, got: Mapping[str, Array]) -> dict[str, Array]:
    """The op's weights from a layout's arrays (keys and shapes already checked against ``tensors``)."""
    kernels, biases = _kernel_shapes(op), _bias_shapes(op)
    result: dict[str, Array] = {}
    sep = LAYOUT_SEP[layout]
    for which in PROJECTIONS:
        if layout == "keras":
            result[f"{which}/kernel"] = got[f"{name}/{which}/kernel"]
            if op.use_bias:
                result[f"{which}/bias"] = got[f"{name}/{which}/bias"]
        elif layout == "onnx":
            result[f"{which}/kernel"] = got[f"{name}{sep}{which}/W"].reshape(kernels[which])
            if op.use_bias:
                result[f"{which}/bias"] = got[f"{name}{sep}{which}/b"].reshape(biases[which])
    if layout != "pytorch":
        return result
    dq, dk, dv, _ = op.dims
    if dk == dq and dv == dq:
        q, k, v = np.split(got[f"{name}.in_proj_weight"], 3)
    else:
        q, k, v = (got[f"{name}.{s}_proj_weight"] for s in "qkv")
    for which, matrix in zip(PROJECTIONS[:3], (q, k, v), strict=True):
        result[f"{which}/kernel"] = np.ascontiguousarray(matrix.T).reshape(kernels[which])
    result["attention_output/kernel"] = np.ascontiguousarray(got[f"{name}.out_proj.weight"].T).reshape(
        kernels["attention_output"]
    )
    if op.use_bias:
        for which, bias in zip(PROJECTIONS[:3], np.split(got[f"{name}.in_proj_bias"], 3), strict=True):
            result[f"{which}/bias"] = bias.reshape(biases[which])
        result["attention_output/bias"] = got[f"{name}.out_proj.bias"]
    return result
