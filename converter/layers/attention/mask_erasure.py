"""Keras 3 ``MultiHeadAttention`` removes the Keras masks of its query, value and key tensors when it runs
(its call does ``set_keras_mask(t, None)`` on them), but not while the model is built.

Recurrent layers after it compute with the masks Keras recorded while building (their ``mask=`` call
arguments), which this converter's mask propagation reproduces. The attention layers read the masks the
tensors carry when the model runs, so one that reads an erased mask (directly, or through a merge whose
run-time mask then differs) computes with masks that depend on Keras' run order. Such models are refused.
"""

from __future__ import annotations

from pathlib import Path

from converter import ir
from converter.errors import UnsupportedLayer

_READERS = ("attention", "multi_head_attention")  # op types that read masks when the model runs


def _ancestors(nodes: list[ir.Node]) -> dict[str, set[str]]:
    """Every node's transitive producers (model inputs included), in one pass over the node order."""
    found: dict[str, set[str]] = {}
    for node in nodes:
        deps = {r.node for r in (*node.inputs, *node.initial_state, *([node.mask] if node.mask else []))}
        found[node.name] = set(deps).union(*(found.get(d, set()) for d in deps))
    return found


def check_mask_erasure(nodes: list[ir.Node], keras_major: int, path: Path) -> None:
    """Refuse a Keras 3 model where an attention layer would read a mask another one erased."""
    if keras_major != 3:
        return
    erasing = [n for n in nodes if n.layer.op_type == "multi_head_attention"]
    if not erasing:
        return
    ancestors = _ancestors(nodes)
    names = {n.name for n in nodes}
    sources = {n.name for n in nodes if n.layer.masked_input_value() is not None or n.mask is not None}
    readers = [n for n in nodes if n.layer.op_type in _READERS]
    for node in erasing:
        for ref, role in zip(node.inputs, node.layer.inputs, strict=False):  # type: ignore[attr-defined]
            if role == "attention_mask" or ref.node not in names or not ({ref.node} | ancestors[ref.node]) & sources:
                continue  # not erased, or no mask can reach this tensor
            later = [
                other
                for other in nodes
                if other is not node and ref in other.inputs and other.name not in ancestors[node.name]
            ]
            for other in later:
                hit = next((r for r in readers if r is other or other.name in ancestors[r.name]), None)
                if hit is not None:
                    raise UnsupportedLayer(
                        f"{path}: layer '{hit.name}' ({hit.keras_class}) reads the mask of '{ref.node}' after "
                        f"layer '{node.name}' (MultiHeadAttention) has run, which in Keras 3 removes that mask "
                        "in an order of Keras' own; give each attention layer its own copy of the masked tensor "
                        "(a separate Masking layer)."
                    )
