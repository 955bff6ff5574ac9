"""``Attention`` (Luong: dot or concat scores) and ``AdditiveAttention`` (Bahdanau) over sequences.

``layer([query, value])`` or ``layer([query, value, key])`` (key defaults to value):
scores (batch, Tq, Tv) from query and key, a softmax over the value steps, the weighted sum of the values.
Masks (Keras 2 and 3 alike): a masked value step gets ``score - 1e9``, ``use_causal_mask`` hides the
key steps after each query step the same way, and a masked query step's output is zero. The output
carries the query's mask; the attention scores (``return_attention_scores``) carry none. A key mask is
ignored, as Keras ignores it. Dropout applies only in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from converter.layers.attention.common import (
    TORCH_MASKED_SOFTMAX,
    call_flags,
    causal_mask,
    masked_softmax,
    onnx_causal,
    onnx_masked_softmax,
    torch_causal,
)
from converter.layers.base import (
    LAYOUT_SEP,
    Array,
    LayoutTensor,
    Mask,
    NamedArray,
    OnnxContext,
    OnnxResult,
    OnnxTensor,
    Op,
    ReadContext,
    RunContext,
    Shape,
    ShapeMismatch,
    TorchContext,
    TorchResult,
    expect_arrays,
    flag,
    float32_only,
    known,
    torch_tensors,
)
from converter.layers.pycode import PyContext, PyResult

SCORES = ("dot", "concat", "additive")


@dataclass(frozen=True, eq=False)
class DenseAttention(Op):
    """``score``: ``dot`` (q.k), ``concat`` (Attention's sum(tanh(q + k))) or ``additive`` (AdditiveAttention)."""

    op_type: ClassVar[str] = "attention"
    score: str
    use_scale: bool
    use_causal_mask: bool
    return_attention_scores: bool
    has_key: bool  # called on [query, value, key]
    weights: dict[str, np.ndarray] = field(repr=False)

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> DenseAttention:
        float32_only(config, ctx)
        additive = ctx.class_name == "AdditiveAttention"
        score = "additive" if additive else config.get("score_mode", "dot")
        if not additive and score not in ("dot", "concat"):
            raise ctx.unsupported(f"score_mode {score!r} is not supported; supported: dot, concat.")
        use_scale = flag(config, "use_scale", additive)
        causal, scores = call_flags(ctx, flag(config, "causal"))
        if ctx.call_inputs not in (("query", "value"), ("query", "value", "key")):
            raise ctx.bad("it must be called on a list [query, value] or [query, value, key].")
        names = (["scale"] if use_scale else []) + (["concat_score_weight"] if score == "concat" else [])
        shapes: list[tuple[int, ...]] = [()] * len(names)
        if additive and use_scale:  # one scale per feature
            shapes[0] = tuple(arrays[0][1].shape[:1]) if arrays and arrays[0][1].ndim == 1 else (-1,)
        weights = dict(zip(names, expect_arrays(arrays, shapes, ctx), strict=True))
        return cls(score, use_scale, causal, scores, len(ctx.call_inputs) == 3, weights)

    # shapes and inspect ------------------------------------------------------------------------------
    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        if len(shapes) != 2 + self.has_key:
            raise ShapeMismatch(f"takes {2 + self.has_key} inputs, gets {len(shapes)}")
        if any(len(s) != 2 for s in shapes):
            raise ShapeMismatch(f"takes (batch, time, features) tensors, gets shapes {shapes}")
        q, v = shapes[0], shapes[1]
        k = shapes[2] if self.has_key else v
        if known(k[0]) and known(v[0]) and k[0] != v[0]:
            raise ShapeMismatch(f"its key has {k[0]} steps but its value {v[0]}")
        if known(q[1]) and known(k[1]) and q[1] != k[1]:
            raise ShapeMismatch(f"its query has {q[1]} features but its key {k[1]}")
        scale = self.weights.get("scale")
        if self.score == "additive" and scale is not None and known(q[1]) and scale.shape != (q[1],):
            raise ShapeMismatch(f"its scale has shape {scale.shape} for {q[1]} query features")
        return [(q[0], v[1])] + ([(q[0], v[0])] if self.return_attention_scores else [])

    def params(self) -> tuple[int, str]:
        sizes = [int(w.size) for w in self.weights.values()]
        total = sum(sizes)
        return total, f"{' + '.join(str(s) for s in sizes)} = {total}" if sizes else ""

    # NumPy -----------------------------------------------------------------------------------------------
    def scores(self, q: Array, k: Array) -> Array:
        scale = self.weights.get("scale")
        if self.score == "dot":
            s = q @ np.swapaxes(k, -1, -2)
            return s * scale if scale is not None else s
        summed = q[:, :, None, :] + k[:, None, :, :]
        if self.score == "additive":
            return np.sum((scale if scale is not None else np.float32(1)) * np.tanh(summed), axis=-1)
        if scale is not None:
            summed = scale * summed
        return self.weights["concat_score_weight"] * np.sum(np.tanh(summed), axis=-1)

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        q, v = (x.astype(np.float32, copy=False) for x in xs[:2])
        k = xs[2].astype(np.float32, copy=False) if self.has_key else v
        scores = self.scores(q, k).astype(np.float32, copy=False)
        keep = masks[1][:, None, :] if masks[1] is not None else None
        if self.use_causal_mask:
            causal = causal_mask(q.shape[1], v.shape[1])[None]
            keep = causal if keep is None else keep & causal
        weights = masked_softmax(scores, keep, "subtract")
        out = (weights @ v).astype(np.float32, copy=False)
        if masks[0] is not None:
            out = np.where(masks[0][..., None], out, np.float32(0))
        if self.return_attention_scores:
            return [out, weights], [masks[0], None]
        return [out], [masks[0]]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers.attention.python_code import dense_attention_code

        return dense_attention_code(self, g, outs, xs, masks)

    # ONNX ------------------------------------------------------------------------------------------------
    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p = g.b, g.p
        q, v = g.as_float(xs[0]), g.as_float(xs[1])
        k = g.as_float(xs[2]) if self.has_key else v
        scale = b.weight(f"{p}/scale", self.weights["scale"]) if "scale" in self.weights else None
        if self.score == "dot":
            scores = b.op("MatMul", [q, b.op("Transpose", [k], f"{p}/key_t", perm=[0, 2, 1])], f"{p}/dot")
            if scale is not None:
                scores = b.op("Mul", [scores, scale], f"{p}/scaled")
        else:
            summed = b.op("Add", [b.unsqueeze(q, [2], f"{p}/q4"), b.unsqueeze(k, [1], f"{p}/k4")], f"{p}/sum")
            if self.score == "concat" and scale is not None:
                summed = b.op("Mul", [summed, scale], f"{p}/scaled")
            terms = b.op("Tanh", [summed], f"{p}/tanh")
            if self.score == "additive" and scale is not None:
                terms = b.op("Mul", [terms, scale], f"{p}/scaled")
            scores = b.op("ReduceSum", [terms, b.i64(-1)], f"{p}/scores", keepdims=0)
            if self.score == "concat":
                weight = b.weight(f"{p}/concat_score_weight", self.weights["concat_score_weight"])
                scores = b.op("Mul", [scores, weight], f"{p}/weighted")
        keep = b.unsqueeze(masks[1], [1], f"{p}/value_mask") if masks[1] is not None else None
        if self.use_causal_mask:
            causal = onnx_causal(b, q, v, p)
            keep = causal if keep is None else b.op("And", [keep, causal], f"{p}/keep")
        weights = onnx_masked_softmax(b, scores, keep, "subtract", False, p)
        out = b.op("MatMul", [weights, v], f"{p}/attended")
        if masks[0] is not None:
            query_keep = b.unsqueeze(masks[0], [2], f"{p}/query_mask")
            out = b.op("Where", [query_keep, out, b.scalar(0.0)], f"{p}/out")
        if self.return_attention_scores:
            return [out, weights], [masks[0], None], [1, 1]
        return [out], [masks[0]], [1]

    # PyTorch source ----------------------------------------------------------------------------------
    def torch_module(self, g: TorchContext) -> str | None:
        shapes = {t.key.rsplit(".", 1)[1]: t.shape for t in self.layout_tensors("", "pytorch")}
        return torch_tensors(g, **shapes) if shapes else None

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """The scores, Keras' masked softmax (value mask and causal mask: score - 1e9), the weighted sum of
        the values, zeros at masked query steps."""
        q, v = xs[:2]
        k = xs[2] if self.has_key else v
        m = g.module
        scale = f"{m}.scale" if "scale" in self.weights else None
        if self.score == "dot":
            scores = f"torch.matmul({q}, {k}.transpose(1, 2))" + (f" * {scale}" if scale else "")
        else:
            summed = f"({q}.unsqueeze(2) + {k}.unsqueeze(1))"
            if self.score == "additive":
                scores = f"({scale + ' * ' if scale else ''}torch.tanh({summed})).sum(dim=-1)"
            else:
                inner = f"{scale} * {summed}" if scale else summed
                scores = f"{m}.concat_score_weight * torch.tanh({inner}).sum(dim=-1)"
        s, keep, weights = g.var("scores"), g.var("keep"), g.var("weights")
        lines = [f"{s} = {scores}"]
        parts = [f"{masks[1]}.unsqueeze(1)"] if masks[1] is not None else []
        parts += [torch_causal(q, v)] if self.use_causal_mask else []
        lines.append(f"{keep} = {' & '.join(parts) if parts else 'None'}  # the value steps each query step sees")
        lines.append(f"{weights} = {g.helper(TORCH_MASKED_SOFTMAX)}({s}, {keep})")
        out = f"torch.matmul({weights}, {v})"
        if masks[0] is not None:
            out = f"torch.where({masks[0]}.unsqueeze(-1), {out}, 0.0)  # zeros at masked query steps"
        lines.append(f"{outs[0]} = {out}")
        if self.return_attention_scores:
            lines.append(f"{outs[1]} = {weights}")
            return lines, [masks[0], None]
        return lines, [masks[0]]

    # npz / JSON ------------------------------------------------------------------------------------------
    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        sep = LAYOUT_SEP[layout]
        meaning = {
            "scale": "score scale: a scalar (Attention) or one per feature (AdditiveAttention)",
            "concat_score_weight": "concat score weight (scalar): scores = w * sum(tanh(scale * (q + k)))",
        }
        # A scalar goes out as a 1-element vector: npz/JSON exports hold no 0-d arrays.
        return [
            LayoutTensor(
                f"{name}{sep}{key}", tuple(w.shape) or (1,), meaning[key], lambda w=w: w.reshape(w.shape or (1,))
            )
            for key, w in self.weights.items()
        ]

    def expected_layout_tensors(self, name: str, layout: str, arrays: Mapping[str, Array]) -> list[LayoutTensor]:
        key = f"{name}{LAYOUT_SEP[layout]}scale"
        dim = int(np.shape(arrays[key])[0]) if key in arrays and np.ndim(arrays[key]) == 1 else 0
        shapes = {"scale": (dim,) if self.score == "additive" else ()}
        names = (["scale"] if self.use_scale else []) + (["concat_score_weight"] if self.score == "concat" else [])
        shell = {n: np.zeros(shapes.get(n, ()), np.float32) for n in names}
        return replace(self, weights=shell).layout_tensors(name, layout)

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> DenseAttention:
        sep = LAYOUT_SEP[layout]
        names = (["scale"] if self.use_scale else []) + (["concat_score_weight"] if self.score == "concat" else [])
        scalar = {"concat_score_weight": True, "scale": self.score != "additive"}
        weights = {n: got[f"{name}{sep}{n}"].reshape(() if scalar[n] else (-1,)) for n in names}
        return replace(self, weights=weights)
