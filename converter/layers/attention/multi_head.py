"""``MultiHeadAttention`` over sequences: ``mha(query, value, key=None, attention_mask=None)``.

Per head n: ``softmax(q_n k_n^T / sqrt(key_dim)) v_n`` with q_n, k_n, v_n the EinsumDense projections
(kernels (features, heads, key_dim) / (features, heads, value_dim), biases (heads, dim)); the heads'
outputs go through the output projection (heads, value_dim, output dim). The attention mask is the AND
of the query mask (B, Tq, 1), the value and key masks (B, 1, Tv), the causal mask and the given
``attention_mask`` (B, Tq, Tv), as both Keras versions combine them; how masked scores are hidden
differs per version (see ``common.py``). The output carries the query's mask.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from converter.errors import UnsupportedLayer
from converter.layers.attention import multi_head_layouts as layouts
from converter.layers.attention.common import (
    TORCH_MASKED_SOFTMAX,
    band_mask,
    both,
    call_flags,
    causal_mask,
    masked_softmax,
    onnx_band,
    onnx_bool,
    onnx_both,
    onnx_causal,
    onnx_masked_softmax,
    torch_causal,
)
from converter.layers.base import (
    TORCH_TENSORS,
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
    int_option,
    known,
    torch_number,
)

if TYPE_CHECKING:
    from converter import ir
    from converter.layers.pycode import PyContext, PyResult

PROJECTIONS = ("query", "key", "value", "attention_output")


@dataclass(frozen=True, eq=False)
class MultiHeadAttention(Op):
    op_type: ClassVar[str] = "multi_head_attention"
    num_heads: int
    key_dim: int
    value_dim: int
    use_bias: bool
    use_causal_mask: bool
    return_attention_scores: bool
    inputs: tuple[str, ...]  # the call's tensors: query, value (, key) (, attention_mask)
    dims: tuple[int, int, int, int]  # features of query, key, value; output features
    mask_mode: str  # "subtract" (Keras 2) or "replace" (Keras 3, Keras 2 softmax_robust_masking)
    zero_masked: bool  # Keras 3 with scores returned or dropout > 0: masked weights are zeroed
    sliding_window: int | None = None
    weights: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    @classmethod
    def read(cls, config: Mapping[str, Any], arrays: list[NamedArray], ctx: ReadContext) -> MultiHeadAttention:
        float32_only(config, ctx)
        heads, key_dim = int_option(config, "num_heads", ctx), int_option(config, "key_dim", ctx)
        value_dim = key_dim if config.get("value_dim") is None else int_option(config, "value_dim", ctx)
        if flag(config, "use_gate"):
            raise ctx.unsupported("use_gate=True is not supported; only the standard (ungated) attention converts.")
        axes = config.get("attention_axes")
        if axes not in (None, 1, -2, [1], [-2], (1,), (-2,)):
            raise ctx.unsupported(f"attention_axes {axes!r} is not supported; only attention over the time axis.")
        window = config.get("sliding_window")
        if window is not None:
            window = int_option(config, "sliding_window", ctx)
        dropout = config.get("dropout", 0.0)
        if not isinstance(dropout, int | float):
            raise ctx.bad(f"dropout {dropout!r} is not a number.")
        out_shape = config.get("output_shape")
        if isinstance(out_shape, list | tuple):
            if len(out_shape) != 1:
                raise ctx.unsupported(f"output_shape {out_shape!r} is not supported; only one output axis.")
            out_shape = out_shape[0]
        causal, scores = call_flags(ctx)
        names = ctx.call_inputs
        if names[:2] != ("query", "value"):
            raise ctx.bad("it must be called on a query and a value tensor.")
        use_bias = flag(config, "use_bias", True)
        per = 2 if use_bias else 1
        found = [a for _, a in arrays]
        if len(found) != 4 * per or any(found[k * per].ndim != 3 for k in range(3)):
            raise ctx.bad(f"the file holds {len(found)} weight arrays for it, but its config needs {4 * per}.")
        dq, dk, dv = (int(found[k * per].shape[0]) for k in range(3))
        out = dq if out_shape is None else int_option({"output_shape": out_shape}, "output_shape", ctx)
        shapes: list[tuple[int, ...]] = []
        for kernel, bias in (
            ((dq, heads, key_dim), (heads, key_dim)),
            ((dk, heads, key_dim), (heads, key_dim)),
            ((dv, heads, value_dim), (heads, value_dim)),
            ((heads, value_dim, out), (out,)),
        ):
            shapes += [kernel, bias] if use_bias else [kernel]
        checked = expect_arrays(arrays, shapes, ctx)
        keys = [f"{p}/{w}" for p in PROJECTIONS for w in (("kernel", "bias") if use_bias else ("kernel",))]
        mode = "replace" if ctx.keras_major == 3 or flag(config, "softmax_robust_masking") else "subtract"
        zero = ctx.keras_major == 3 and (scores or float(dropout) > 0)
        weights = dict(zip(keys, checked, strict=True))
        return cls(heads, key_dim, value_dim, use_bias, causal, scores, names, (dq, dk, dv, out), mode, zero, window,
                   weights)  # fmt: skip

    # shapes and inspect ------------------------------------------------------------------------------
    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        if len(shapes) != len(self.inputs):
            raise ShapeMismatch(f"takes {len(self.inputs)} inputs ({', '.join(self.inputs)}), gets {len(shapes)}")
        given = dict(zip(self.inputs, shapes, strict=True))
        q, v = given["query"], given["value"]
        k = given.get("key", v)
        if any(len(s) != 2 for s in (q, v, k)):
            raise ShapeMismatch(f"takes (batch, time, features) tensors, gets shapes {shapes}")
        for what, shape, dim in (("query", q, self.dims[0]), ("key", k, self.dims[1]), ("value", v, self.dims[2])):
            if known(shape[1]) and shape[1] != dim:
                raise ShapeMismatch(f"its {what} kernel expects {dim} features but it is fed shape {shape}")
        if known(k[0]) and known(v[0]) and k[0] != v[0]:
            raise ShapeMismatch(f"its key has {k[0]} steps but its value {v[0]}")
        m = given.get("attention_mask")
        wrong = m is not None and (
            len(m) != 2 or any(known(a) and known(b) and a != b for a, b in zip(m, q[:1] + v[:1], strict=True))
        )
        if wrong:
            raise ShapeMismatch(f"its attention_mask has shape {m}, but it needs (batch, {q[0]}, {v[0]})")
        return [(q[0], self.dims[3])] + ([(self.num_heads, q[0], v[0])] if self.return_attention_scores else [])

    def params(self) -> tuple[int, str]:
        terms = [f"{'*'.join(str(d) for d in w.shape)}" for w in self.weights.values()]
        total = sum(int(w.size) for w in self.weights.values())
        return total, f"{' + '.join(terms)} = {total}"

    def options(self) -> dict[str, Any]:
        keep = ("num_heads", "key_dim", "value_dim", "use_bias", "use_causal_mask", "return_attention_scores")
        return {**{k: getattr(self, k) for k in keep}, "inputs": list(self.inputs), "output_dim": self.dims[3]}

    # NumPy -----------------------------------------------------------------------------------------------
    def _project(self, x: Array, which: str) -> Array:
        w = self.weights[f"{which}/kernel"]
        y = np.einsum("btd,dnh->bnth", x.astype(np.float32, copy=False), w)  # (B, heads, T, dim)
        if self.use_bias:
            y = y + self.weights[f"{which}/bias"][None, :, None, :]
        return y.astype(np.float32, copy=False)

    def keep_mask(self, xs: list[Array], masks: list[Mask]) -> Mask:
        """The (B, Tq, Tv) mask of attended places (or a broadcastable part of it), None when all are."""
        at = {name: k for k, name in enumerate(self.inputs)}
        tq, tv = xs[0].shape[1], xs[1].shape[1]
        keep = masks[0][:, :, None] if masks[0] is not None else None
        for which in ("value", "key"):
            m = masks[at[which]] if which in at else None
            keep = both(keep, m[:, None, :] if m is not None else None)
        if self.use_causal_mask:
            keep = both(keep, causal_mask(tq, tv)[None])
        if self.sliding_window is not None:
            keep = both(keep, band_mask(tq, tv, self.sliding_window)[None])
        if "attention_mask" in at:
            keep = both(np.asarray(xs[at["attention_mask"]]).astype(bool), keep)
        return keep

    def call(self, xs: list[Array], masks: list[Mask], run: RunContext) -> tuple[list[Array], list[Mask]]:
        at = {name: k for k, name in enumerate(self.inputs)}
        q = self._project(xs[0], "query") * np.float32(1.0 / math.sqrt(float(self.key_dim)))
        k = self._project(xs[at.get("key", 1)], "key")
        v = self._project(xs[1], "value")
        keep = self.keep_mask(xs, masks)
        weights = masked_softmax(q @ np.swapaxes(k, -1, -2), None if keep is None else keep[:, None],
                                 self.mask_mode, self.zero_masked)  # fmt: skip
        heads = weights @ v  # (B, heads, Tq, value_dim)
        out = np.einsum("bnth,nho->bto", heads, self.weights["attention_output/kernel"])
        if self.use_bias:
            out = out + self.weights["attention_output/bias"]
        out = out.astype(np.float32, copy=False)
        if self.return_attention_scores:
            return [out, weights], [masks[0], None]
        return [out], [masks[0]]

    def python_code(self, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
        from converter.layers.attention.python_code import multi_head_code

        return multi_head_code(self, g, outs, xs, masks)

    # ONNX ------------------------------------------------------------------------------------------------
    def _onnx_project(self, g: OnnxContext, x: str, which: str, perm: list[int]) -> str:
        b, p = g.b, f"{g.p}/{which}"
        w = self.weights[f"{which}/kernel"]
        dim = w.shape[2]
        y = b.op("MatMul", [x, b.weight(f"{p}/W", w.reshape(w.shape[0], -1))], f"{p}/matmul")
        if self.use_bias:
            y = b.op("Add", [y, b.weight(f"{p}/b", self.weights[f"{which}/bias"].reshape(-1))], f"{p}/biased")
        y = b.op("Reshape", [y, b.i64(0, 0, self.num_heads, dim)], f"{p}/heads")
        return b.op("Transpose", [y], f"{p}/per_head", perm=perm)

    def to_onnx(self, g: OnnxContext, xs: list[OnnxTensor], masks: list[str | None]) -> OnnxResult:
        b, p = g.b, g.p
        at = {name: k for k, name in enumerate(self.inputs)}
        xq, xv = g.as_float(xs[0]), g.as_float(xs[1])
        xk = g.as_float(xs[at["key"]]) if "key" in at else xv
        q = self._onnx_project(g, xq, "query", [0, 2, 1, 3])
        q = b.op("Mul", [q, b.scalar(float(np.float32(1.0 / math.sqrt(float(self.key_dim)))))], f"{p}/q_scaled")
        k = self._onnx_project(g, xk, "key", [0, 2, 3, 1])  # (B, heads, key_dim, Tv)
        v = self._onnx_project(g, xv, "value", [0, 2, 1, 3])
        keep = b.unsqueeze(masks[0], [2], f"{p}/query_keep") if masks[0] is not None else None
        for which in ("value", "key"):
            m = masks[at[which]] if which in at else None
            if m is not None:
                keep = onnx_both(b, keep, b.unsqueeze(m, [1], f"{p}/{which}_keep"), f"{p}/keep_{which}")
        if self.use_causal_mask:
            causal = b.unsqueeze(onnx_causal(b, xq, xv, p), [0], f"{p}/causal3")
            keep = onnx_both(b, keep, causal, f"{p}/keep_causal")
        if self.sliding_window is not None:
            band = b.unsqueeze(onnx_band(b, xq, xv, self.sliding_window, p), [0], f"{p}/band3")
            keep = onnx_both(b, keep, band, f"{p}/keep_band")
        if "attention_mask" in at:
            given = xs[at["attention_mask"]]
            keep = onnx_both(b, onnx_bool(b, given.name, given.type, f"{p}/attention_mask"), keep, f"{p}/keep_given")
        keep4 = b.unsqueeze(keep, [1], f"{p}/keep_heads") if keep is not None else None
        scores = b.op("MatMul", [q, k], f"{p}/scores")
        weights = onnx_masked_softmax(b, scores, keep4, self.mask_mode, self.zero_masked, p)
        heads = b.op("Transpose", [b.op("MatMul", [weights, v], f"{p}/attended")], f"{p}/steps_first",
                     perm=[0, 2, 1, 3])  # fmt: skip
        flat = b.op("Reshape", [heads, b.i64(0, 0, self.num_heads * self.value_dim)], f"{p}/concat_heads")
        wo = self.weights["attention_output/kernel"]
        out = b.op("MatMul", [flat, b.weight(f"{p}/attention_output/W", wo.reshape(-1, wo.shape[-1]))], f"{p}/out")
        if self.use_bias:
            out = b.op("Add", [out, b.weight(f"{p}/attention_output/b", self.weights["attention_output/bias"])],
                       f"{p}/output")  # fmt: skip
        if self.return_attention_scores:
            return [out, weights], [masks[0], None], [1, 1]
        return [out], [masks[0]], [1]

    # PyTorch source ----------------------------------------------------------------------------------
    def check_torch_source(self, node: ir.Node) -> None:
        """Any shapes: where nn.MultiheadAttention cannot hold the weights, they are kept as Keras has them."""

    def _in_torch_module(self) -> bool:
        """The weights fit nn.MultiheadAttention (the pytorch layout); else Keras' own kernels are kept."""
        return layouts.torch_refusal(self) is None

    def torch_module(self, g: TorchContext) -> str | None:
        """nn.MultiheadAttention holding the weights where it can (forward computes with them as Keras does:
        its own masking differs on fully masked rows), else Keras' kernels (features, heads, dim) per projection."""
        dq, dk, dv, _ = self.dims
        if not self._in_torch_module():
            holder = g.helper(TORCH_TENSORS)
            parts = []
            for which in PROJECTIONS:
                shapes = layouts.keras_shapes(self, which)
                tensors = ", ".join(f"{k}={v}" for k, v in shapes.items())
                parts.append(f"{which!r}: {holder}({tensors})")
            return f"nn.ModuleDict({{{', '.join(parts)}}})"
        args = [str(dq), str(self.num_heads)] + ([] if self.use_bias else ["bias=False"])
        args += [f"kdim={dk}", f"vdim={dv}"] if (dk, dv) != (dq, dq) else []
        return f"nn.MultiheadAttention({', '.join([*args, 'batch_first=True'])})"

    def torch_weights(self, attribute: str) -> list[LayoutTensor]:
        if self._in_torch_module():
            return self.layout_tensors(attribute, "pytorch")
        return [replace(t, key=f"{attribute}{t.key.replace('/', '.')}") for t in layouts.tensors(self, "", "keras")]

    def _torch_projections(self, g: TorchContext, x: dict[str, str], names: list[str]) -> list[str]:
        """Lines projecting the query, key and value tensors ``x`` to (batch, heads, time, dim) as ``names``."""
        m, (dq, dk, dv, _) = g.module, self.dims
        lines = []
        if self._in_torch_module():
            w = [g.var(f"w_{s}") for s in "qkv"]
            bias = [g.var(f"b_{s}") for s in "qkv"] if self.use_bias else ["None"] * 3
            source = "in_proj_weight.chunk(3)" if (dk, dv) == (dq, dq) else None
            weights = f"{m}.{source}" if source else f"{m}.q_proj_weight, {m}.k_proj_weight, {m}.v_proj_weight"
            lines.append(f"{', '.join(w)} = {weights}")
            if self.use_bias:
                lines.append(f"{', '.join(bias)} = {m}.in_proj_bias.chunk(3)")
        for k, which in enumerate(("query", "key", "value")):
            dim = self.value_dim if which == "value" else self.key_dim
            if self._in_torch_module():
                flat = f"F.linear({x[which]}, {w[k]}, {bias[k]})"
                heads = f"{flat}.unflatten(-1, ({self.num_heads}, {dim})).transpose(1, 2)"
            else:
                heads = f'torch.einsum("btd,dnh->bnth", {x[which]}, {m}.{which}.kernel)'
                heads += f" + {m}.{which}.bias[:, None, :]" if self.use_bias else ""
            lines.append(f"{names[k]} = {heads}  # (batch, heads, time, {dim})")
        return lines

    def torch_forward(self, g: TorchContext, outs: list[str], xs: list[str], masks: list[str | None]) -> TorchResult:
        """Per-head projections, Keras' mask (query, value, key, causal, window, attention_mask) and masked
        softmax, the heads concatenated through the output projection."""
        at = {name: k for k, name in enumerate(self.inputs)}
        m, xq, xv = g.module, xs[0], xs[1]
        xk = xs[at["key"]] if "key" in at else xv
        q, k, v = g.var("q"), g.var("k"), g.var("v")
        lines = self._torch_projections(g, {"query": xq, "key": xk, "value": xv}, [q, k, v])
        scale = torch_number(float(np.float32(1.0 / math.sqrt(float(self.key_dim)))))
        lines.append(f"{q} = {q} * {scale}")
        parts = [f"{masks[0]}.unsqueeze(2)"] if masks[0] is not None else []
        for which in ("value", "key"):
            mask = masks[at[which]] if which in at else None
            parts += [f"{mask}.unsqueeze(1)"] if mask is not None else []
        parts += [f"{torch_causal(xq, xv)}[None]"] if self.use_causal_mask else []  # (1, Tq, Tv)
        if self.sliding_window is not None:
            steps = f"torch.arange({xq}.shape[1])[:, None] - torch.arange({xv}.shape[1])[None, :]"
            parts.append(f"(({steps}).abs() < {self.sliding_window})[None]")
        if "attention_mask" in at:
            parts.insert(0, f"({xs[at['attention_mask']]} != 0)")
        keep, weights = g.var("keep"), g.var("weights")
        lines.append(f"{keep} = {'(' + ' & '.join(parts) + ').unsqueeze(1)' if parts else 'None'}  # (B, 1, Tq, Tv)")
        options = ("" if self.mask_mode == "subtract" else ", subtract=False") + (
            ", zero_masked=True" if self.zero_masked else ""
        )
        scores = f"torch.matmul({q}, {k}.transpose(-1, -2))"
        lines.append(f"{weights} = {g.helper(TORCH_MASKED_SOFTMAX)}({scores}, {keep}{options})")
        if self._in_torch_module():
            attended = f"torch.matmul({weights}, {v}).transpose(1, 2).flatten(2)"
            lines.append(f"{outs[0]} = F.linear({attended}, {m}.out_proj.weight, {m}.out_proj.bias)")
        else:
            out = f'torch.einsum("bnth,nho->bto", torch.matmul({weights}, {v}), {m}.attention_output.kernel)'
            lines.append(f"{outs[0]} = {out}" + (f" + {m}.attention_output.bias" if self.use_bias else ""))
        if self.return_attention_scores:
            lines.append(f"{outs[1]} = {weights}")
            return lines, [masks[0], None]
        return lines, [masks[0]]

    # npz / JSON ------------------------------------------------------------------------------------------
    def layout_tensors(self, name: str, layout: str) -> list[LayoutTensor]:
        return layouts.tensors(self, name, layout)

    def check_layout(self, node: ir.Node, layout: str) -> None:
        if layout == "pytorch":
            reason = layouts.torch_refusal(self)
            if reason:
                raise UnsupportedLayer(f"layer '{node.name}' (MultiHeadAttention): {reason}")

    def expected_layout_tensors(self, name: str, layout: str, arrays: Mapping[str, Array]) -> list[LayoutTensor]:
        return layouts.tensors(replace(self, weights=layouts.shell(self)), name, layout)

    def from_layout(self, name: str, layout: str, got: Mapping[str, Array]) -> MultiHeadAttention:
        return replace(self, weights=layouts.weights_from(self, name, layout, got))


CALL_TENSORS = {"MultiHeadAttention": ("query", "value", "key", "attention_mask")}
