"""The attention layers in the standalone NumPy script, computed as ``dense.py`` and ``multi_head.py``
compute them (Keras' masked softmax of ``common.py``: masked scores pushed down by 1e9 or replaced)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from converter.layers.pycode import PyContext, PyResult, number

if TYPE_CHECKING:
    from converter.layers.attention.dense import DenseAttention
    from converter.layers.attention.multi_head import MultiHeadAttention

MASKED_SOFTMAX = '''def masked_softmax(scores, keep, mode, zero_masked=False):
    """Softmax over the last axis, masked as Keras masks: "subtract" pushes masked scores down by 1e9,
    "replace" replaces them by -1e9 (a fully masked row then gets equal weights); zero_masked zeroes
    the weights at masked places afterwards."""
    if keep is not None:
        large = np.float32(1e9)
        hidden = scores - large if mode == "subtract" else np.broadcast_to(-large, scores.shape)
        scores = np.where(keep, scores, hidden).astype(np.float32)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return np.where(keep, weights, np.float32(0)) if keep is not None and zero_masked else weights'''

CAUSAL = '''def causal_mask(tq, tv):
    """Query step i sees key steps j <= i."""
    return np.arange(tq)[:, None] >= np.arange(tv)[None, :]'''


def _keep(parts: list[str]) -> str:
    return " & ".join(parts) if parts else "None"


def dense_attention_code(
    op: DenseAttention, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]
) -> PyResult:
    softmax = g.helper(MASKED_SOFTMAX)
    args = ["query", "value", *(["key"] if op.has_key else [])]
    mask_args = [f"{a}_mask" for a, m in zip(args, masks, strict=True) if m is not None and a != "key"]
    body = [f"{a} = {a}.astype(np.float32)" for a in args]
    k = "key" if op.has_key else "value"
    body += [f"{n} = {g.weight(n, w)}" for n, w in op.weights.items()]
    scale = "scale" in op.weights
    if op.score == "dot":
        body.append(f"scores = query @ np.swapaxes({k}, -1, -2){' * scale' if scale else ''}")
    else:
        body.append(f"summed = query[:, :, None, :] + {k}[:, None, :, :]")
        if op.score == "additive":
            body.append(f"scores = np.sum({'scale' if scale else 'np.float32(1)'} * np.tanh(summed), axis=-1)")
        else:
            body += ["summed = scale * summed"] if scale else []
            body.append("scores = concat_score_weight * np.sum(np.tanh(summed), axis=-1)")
    body.append("scores = scores.astype(np.float32)")
    keep = ["value_mask[:, None, :]"] if masks[1] is not None else []
    if op.use_causal_mask:
        keep.append(f"{g.helper(CAUSAL)}(query.shape[1], value.shape[1])[None]")
    body.append(f"weights = {softmax}(scores, {_keep(keep)}, 'subtract')")
    body.append("out = (weights @ value).astype(np.float32)")
    if masks[0] is not None:
        body.append("out = np.where(query_mask[..., None], out, np.float32(0))  # masked queries give zeros")
    body.append("return out, weights")
    fn = g.function(g.node.name, ", ".join(args + mask_args), f"{g.node.keras_class} (score {op.score!r}).", body)
    call_masks = [m for a, m in zip(args, masks, strict=True) if m is not None and a != "key"]
    scores_out = outs[1] if op.return_attention_scores else "_"
    line = f"{outs[0]}, {scores_out} = {fn}({', '.join(xs + call_masks)})"
    return [line], [masks[0]] + [None] * (len(outs) - 1)


def multi_head_code(
    op: MultiHeadAttention, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]
) -> PyResult:
    softmax = g.helper(MASKED_SOFTMAX)
    names = list(op.inputs)
    masked = [n for n, m in zip(names, masks, strict=True) if m is not None and n != "attention_mask"]
    body = [f"{w.replace('/', '_')} = {g.weight(w, a)}" for w, a in op.weights.items()]
    key = "key" if "key" in names else "value"
    for which, src in (("q", "query"), ("k", key), ("v", "value")):
        part = {"q": "query", "k": "key", "v": "value"}[which]
        bias = f" + {part}_bias[None, :, None, :]" if op.use_bias else ""
        projected = f'np.einsum("btd,dnh->bnth", {src}.astype(np.float32), {part}_kernel){bias}'
        body.append(f"{which} = ({projected}).astype(np.float32)")
    inv_sqrt = number(float(np.float32(1.0 / math.sqrt(float(op.key_dim)))))
    body.append(f"q = q * np.float32({inv_sqrt})  # 1 / sqrt(key_dim)")
    keep = ["query_mask[:, :, None]"] if "query" in masked else []
    keep += [f"{w}_mask[:, None, :]" for w in ("value", "key") if w in masked]
    if op.use_causal_mask:
        keep.append(f"{g.helper(CAUSAL)}(query.shape[1], value.shape[1])[None]")
    if op.sliding_window is not None:
        distance = "np.abs(np.arange(query.shape[1])[:, None] - np.arange(value.shape[1])[None, :])"
        keep.append(f"({distance} < {op.sliding_window})[None]")
    if "attention_mask" in names:
        keep.insert(0, "np.asarray(attention_mask).astype(bool)")
    body.append(f"keep = {_keep(keep)}")
    body.append("# q, k, v: (batch, heads, steps, dim)")
    body.append("scores = q @ np.swapaxes(k, -1, -2)")
    mode = f"{op.mask_mode!r}, {op.zero_masked}"
    body.append(f"weights = {softmax}(scores, None if keep is None else keep[:, None], {mode})")
    body.append('out = np.einsum("bnth,nho->bto", weights @ v, attention_output_kernel)  # the heads joined')
    if op.use_bias:
        body.append("out = out + attention_output_bias")
    body.append("return out.astype(np.float32), weights")
    args = ", ".join(names + [f"{n}_mask" for n in masked])
    fn = g.function(g.node.name, args, f"MultiHeadAttention(num_heads={op.num_heads}, key_dim={op.key_dim}).", body)
    call_masks = [m for n, m in zip(names, masks, strict=True) if m is not None and n != "attention_mask"]
    scores_out = outs[1] if op.return_attention_scores else "_"
    line = f"{outs[0]}, {scores_out} = {fn}({', '.join(xs + call_masks)})"
    return [line], [masks[0]] + [None] * (len(outs) - 1)
