"""The merge layers in the standalone NumPy script (``merge.py`` keeps the ops; this their script form).

Keras' rules, as the NumPy runtime computes them: a lower-rank input gets axes inserted after the batch
axis; the output mask is None when no input has one (Keras 3: when one lacks it), else the inputs' masks
combined (Keras 2: all, Keras 3: any); Keras 3 also merges Multiply, Maximum and Minimum values by the
masks (a masked value counts as 1 in a product; another input's value stands in for it in an extremum).
"""

from __future__ import annotations

from converter.layers.pycode import PyContext, PyResult

SAME_RANK = '''def same_rank(xs):
    """Keras' merge: a lower-rank input gets axes inserted after the batch axis."""
    rank = max(x.ndim for x in xs)
    return [x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:]) for x in xs]'''

FULL_MASK = '''def full_mask(x, mask):
    """A mask spread over every element of x (all true where x has no mask), as Keras merges masks."""
    if mask is None:
        return np.ones(x.shape, bool)
    return np.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)'''

#: The value of each elementwise merge from its (same-rank) inputs ``xs``, without masks.
_PLAIN = {
    "add": "out = xs[0]\nfor x in xs[1:]:\n    out = out + x",
    "subtract": "out = xs[0] - xs[1]",
    "average": "out = xs[0]\nfor x in xs[1:]:\n    out = out + x\nout = out / np.float32(len(xs))",
    "multiply": "out = xs[0]\nfor x in xs[1:]:\n    out = out * x",
    "maximum": "out = xs[0]\nfor x in xs[1:]:\n    out = np.maximum(out, x)",
    "minimum": "out = xs[0]\nfor x in xs[1:]:\n    out = np.minimum(out, x)",
}

_MASKED = {  # Keras 3, some input masked: masks are the value masks (None, or mask[..., None])
    "multiply": """out, union = None, None
for x, m in zip(xs, masks):
    if m is not None:
        x = np.where(m, x, np.float32(1))  # a masked value counts as 1
        union = m if union is None else union | m
    out = x if out is None else out * x
if all(m is not None for m in masks):
    out = np.where(union, out, np.float32(0))  # masked in every input: 0""",
    "extremum": """out, out_mask = xs[0], masks[0]
for x, m in zip(xs[1:], masks[1:]):
    if m is not None:
        x = np.where(m, x, out)  # a masked value: the other's stands in
    if out_mask is not None:
        out = np.where(out_mask, out, x)
    out_mask = out_mask | m if m is not None and out_mask is not None else None
    out = OP(out, x)""",
}


def combined_mask(g: PyContext, masks: list[str | None]) -> tuple[list[str], str | None]:
    """The merge's output mask: None, one input's, or ``m1 & m2`` (Keras 2) / ``m1 | m2`` (Keras 3)."""
    present = [m for m in masks if m is not None]
    if not present or (g.keras_major == 3 and len(present) < len(masks)):
        return [], None
    if len(present) == 1:
        return [], present[0]
    mask = g.var("mask")
    return [f"{mask} = {(' & ' if g.keras_major == 2 else ' | ').join(present)}"], mask


def elementwise_code(op_type: str, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
    """``def add(*xs)``: the inputs to one rank, then the merge, pairwise in order."""
    g.helper(SAME_RANK)
    rank = max(len(s) for s in g.shapes)
    value_masks = [
        None if m is None or len(s) < rank else f"{m}[..., None]" for m, s in zip(masks, g.shapes, strict=True)
    ]
    masked = g.keras_major == 3 and any(value_masks) and op_type in ("multiply", "maximum", "minimum")
    if masked:
        source = _MASKED["multiply" if op_type == "multiply" else "extremum"]
        source = source.replace("OP", f"np.{op_type}")
    else:
        source = _PLAIN[op_type]
    body = ["xs = same_rank(list(xs))", *source.splitlines(), "return out.astype(np.float32)"]
    args = "xs, masks" if masked else "*xs"
    fn = g.function(g.node.name, args, f"{g.node.keras_class}: the inputs merged elementwise.", body)
    call = f"[{', '.join(xs)}], [{', '.join(m or 'None' for m in value_masks)}]" if masked else ", ".join(xs)
    lines, mask = combined_mask(g, masks)
    return [f"{outs[0]} = {fn}({call})", *lines], [mask]


def concatenate_code(axis: int, g: PyContext, outs: list[str], xs: list[str], masks: list[str | None]) -> PyResult:
    lines = [f"{outs[0]} = np.concatenate([{', '.join(xs)}], axis={axis})"]
    if all(m is None for m in masks):
        return lines, [None]
    full = g.helper(FULL_MASK)
    parts = ", ".join(f"{full}({x}, {m or 'None'})" for x, m in zip(xs, masks, strict=True))
    mask, rule = g.var("mask"), "all" if g.keras_major == 2 else "any"
    comment = "  # Keras 2 keeps a step where every input does" if g.keras_major == 2 else "  # Keras 3: where any does"
    lines.append(f"{mask} = np.concatenate([{parts}], axis={axis}).{rule}(axis=-1){comment}")
    return lines, [mask]
