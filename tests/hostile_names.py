"""A model whose every layer, output and model name carries a hostile suffix, for the generators' tests."""

from __future__ import annotations

from dataclasses import replace

from converter import ir

#: Ends a comment, a docstring and a string literal, then tries to run code.
CODE = 'x\n__import__("pathlib").Path("PWNED").touch()\n"""\\'
#: Ends an HTML attribute and element, then tries to run script.
MARKUP = "<script>window.PWNED=1</script>\"'><img src=x onerror=alert(1)>"


def renamed(model: ir.Model, suffix: str, **changes: object) -> ir.Model:
    """``model`` with ``suffix`` after every node and output name, and as its name (plus ``changes``)."""
    names = {n.name: f"{n.name}{suffix}" for n in model.nodes}

    def ref(r: ir.TensorRef) -> ir.TensorRef:
        return ir.TensorRef(names.get(r.node, r.node), r.index)

    nodes = tuple(replace(n, name=names[n.name], inputs=tuple(ref(r) for r in n.inputs)) for n in model.nodes)
    return replace(
        model,
        name=suffix,
        nodes=nodes,
        outputs=tuple(ref(r) for r in model.outputs),
        output_names=tuple(f"{n}{suffix}" for n in model.output_names),
        **changes,
    )
