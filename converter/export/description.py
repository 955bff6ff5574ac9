"""The model description: an IR model's architecture as a JSON-able dict (no weights), and back.

The description lists inputs, outputs and every node with all the options the IR keeps, plus, for each node,
the tensors it owns in the chosen layout (key, shape, dtype, meaning). ``undescribe`` rebuilds an equal
``ir.Model`` from a description and the tensors. npz and JSON exports both carry it
(schema: ``schemas/model.schema.json``).

>>> import converter
>>> model = converter.load("fixtures/keras3/tutorial.keras").ir
>>> doc = describe(model, "keras")
>>> doc["nodes"][0]["tensors"][1]  # doctest: +NORMALIZE_WHITESPACE
{'key': 'lstm/W_f', 'shape': [3, 5], 'dtype': 'float32',
 'meaning': 'input kernel of the forget gate (input_dim x units)'}
>>> from converter.export.layouts import to_layout
>>> undescribe(doc, to_layout(model, "keras")).node("lstm").layer.units
5
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from converter import ir
from converter.activations import supported_activations
from converter.errors import BadInputs, BadModelFile
from converter.export.layouts import expected_tensors, load_layer, model_tensors
from converter.gates import GATE_ORDER
from converter.layers import OP_TYPES

FORMAT, FORMAT_VERSION = "lstm-convert", 1
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
TEST_DTYPES = ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool")


@dataclass
class TestVector:
    """Inputs (by model input name) and the outputs the model gives for them (by output name)."""

    __test__ = False  # not a pytest test class
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def describe(model: ir.Model, layout: str) -> dict[str, Any]:
    """The description of ``model`` with its weights in ``layout``; raises ``UnsupportedLayer`` where the
    layout cannot hold a layer (see the module docstring for an example)."""
    tensors = model_tensors(model, layout)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layout": layout,
        "name": model.name,
        "source": {"file": model.source, "keras_version": model.keras_version},
        "gate_order": {kind: list(GATE_ORDER[layout][kind]) for kind in ("lstm", "gru")},
        "inputs": [
            {"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "batch_size": s.batch_size} for s in model.inputs
        ],
        "outputs": [
            {"name": name, "node": ref.node, "index": ref.index}
            for name, ref in zip(model.output_names, model.outputs, strict=True)
        ],
        "nodes": [
            {
                "name": node.name,
                "class": node.keras_class,
                "type": node.layer.op_type,
                "inputs": [_ref(r) for r in node.inputs],
                "initial_state": [_ref(r) for r in node.initial_state],
                "mask": None if node.mask is None else _ref(node.mask),
                "weights_of": node.weights_of,
                "receives_mask": node.receives_mask,
                "config": node.layer.config(),
                "tensors": [
                    {"key": t.key, "shape": list(t.shape), "dtype": "float32", "meaning": t.meaning}
                    for t in tensors[node.name]
                ],
            }
            for node in model.nodes
        ],
    }


def undescribe(doc: Mapping[str, Any], tensors: Mapping[str, np.ndarray], where: str = "model description") -> ir.Model:
    """Rebuild the ``ir.Model`` that ``describe`` described, with weights from ``tensors`` (keys as listed).

    Raises ``BadModelFile`` (message starting with ``where``) for a document that breaks the schema, refers
    to unknown nodes or activations, or whose tensors are missing or misshaped.
    """
    check_format(doc, where)
    validate(doc, "model.schema.json", where)
    major = 2 if doc["source"]["keras_version"].startswith("2") else 3
    known = {spec["name"] for spec in doc["inputs"]}
    nodes = []
    for entry in doc["nodes"]:
        name = entry["name"]
        if name in known:
            raise BadModelFile(f"{where}: the name '{name}' is used twice (nodes and inputs need unique names).")
        mask = entry["mask"]
        for ref in [*entry["inputs"], *entry["initial_state"], *([mask] if mask else [])]:
            if ref["node"] not in known:
                raise BadModelFile(f"{where}: node '{name}' reads '{ref['node']}', which is no earlier node or input.")
        layer = _layer(entry["type"], entry["config"], f"{where}: node '{name}'")
        _check_activations(layer, major, f"{where}: node '{name}'")
        node = ir.Node(
            name,
            entry["class"],
            layer,
            tuple(_tensor_ref(r) for r in entry["inputs"]),
            tuple(_tensor_ref(r) for r in entry["initial_state"]),
            None if mask is None else _tensor_ref(mask),
            receives_mask=entry.get("receives_mask", True),
        )
        shared = entry.get("weights_of")
        if shared is not None:  # a later call of a shared layer: the layer of an earlier node, as it is
            owner = next((n for n in nodes if n.name == shared and n.weights_of is None), None)
            if owner is None or type(owner.layer) is not type(layer):
                raise BadModelFile(f"{where}: node '{name}' shares the weights of '{shared}', no earlier such node.")
            node = replace(node, layer=owner.layer, weights_of=shared)
        _check_listed(node, entry["tensors"], doc["layout"], tensors, where)
        if shared is None:
            node = replace(node, layer=load_layer(node, doc["layout"], tensors, where))
        nodes.append(node)
        known.add(name)
    for out in doc["outputs"]:
        if out["node"] not in known:
            raise BadModelFile(f"{where}: output '{out['name']}' is node '{out['node']}', which does not exist.")
    return ir.Model(
        name=doc["name"],
        inputs=tuple(ir.InputSpec(s["name"], tuple(s["shape"]), s["dtype"], s["batch_size"]) for s in doc["inputs"]),
        nodes=tuple(nodes),
        outputs=tuple(ir.TensorRef(o["node"], o["index"]) for o in doc["outputs"]),
        output_names=tuple(o["name"] for o in doc["outputs"]),
        keras_version=doc["source"]["keras_version"],
        source=doc["source"]["file"],
    )


def check_format(doc: Any, where: str) -> None:
    """A clear message for documents that are not descriptions at all, or of a newer format version."""
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise BadModelFile(f'{where}: this is not an lstm-convert model description (no "format": "{FORMAT}").')
    if doc.get("format_version") != FORMAT_VERSION:
        raise BadModelFile(
            f"{where}: format_version {doc.get('format_version')!r}; this lstm-convert reads version {FORMAT_VERSION}."
        )


@cache
def validator(schema_file: str) -> Draft202012Validator:
    """A Draft 2020-12 validator for one of lstm-convert's schemas (they may $ref each other by file name)."""
    resources = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.schema.json"))]
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in resources if "$id" in s)
    return Draft202012Validator(json.loads((SCHEMAS / schema_file).read_text()), registry=registry)


def validate(doc: Any, schema_file: str, where: str) -> None:
    """Raise ``BadModelFile`` naming the first offending place when ``doc`` breaks the schema."""
    error = best_match(validator(schema_file).iter_errors(doc))
    if error is None:
        return
    path = "/".join(str(p) for p in error.absolute_path) or "the top level"
    message = error.message if len(error.message) < 160 else error.message[:150] + " ..."
    raise BadModelFile(f"{where}: invalid lstm-convert document at {path}: {message}")


def make_test_vector(
    model: ir.Model,
    inputs: Mapping[str, np.ndarray] | None,
    outputs: Mapping[str, np.ndarray] | None,
    error: type[Exception] = BadInputs,
    where: str = "test vector",
) -> TestVector | None:
    """Check a test vector against the model's input and output names (both or neither must be given)."""
    if inputs is None and outputs is None:
        return None
    result = TestVector({}, {})
    for what, given, names in (("inputs", inputs, model_input_names(model)), ("outputs", outputs, model.output_names)):
        given = given or {}
        if sorted(given) != sorted(names):
            raise error(f"{where}: {what} are named {sorted(given)}, but the model's {what} are {list(names)}.")
        for name in names:
            array = np.asarray(given[name])
            if array.dtype.name not in TEST_DTYPES:
                raise error(f"{where}: {what[:-1]} '{name}' is {array.dtype}; use one of {', '.join(TEST_DTYPES)}.")
            getattr(result, what)[name] = array
    return result


def model_input_names(model: ir.Model) -> list[str]:
    return [spec.name for spec in model.inputs]


def _ref(ref: ir.TensorRef) -> dict[str, Any]:
    return {"node": ref.node, "index": ref.index}


def _tensor_ref(doc: Mapping[str, Any]) -> ir.TensorRef:
    return ir.TensorRef(doc["node"], doc["index"])


def _layer(type_name: str, config: Mapping[str, Any], where: str) -> ir.Layer:
    op = OP_TYPES.get(type_name)
    if op is None:
        raise BadModelFile(f"{where}: unknown layer type {type_name!r}; this lstm-convert knows {sorted(OP_TYPES)}.")
    try:
        return op.from_config(config)
    except (TypeError, KeyError, ValueError) as exc:
        raise BadModelFile(f"{where}: the config of a {type_name} layer does not fit ({exc}).") from None


def _check_activations(layer: ir.Layer, major: int, where: str) -> None:
    """Refuse activation names the runtime cannot compute, here rather than as a KeyError at run time."""
    known = supported_activations(major)
    for attr, name in layer.activations():
        if name not in known:
            raise BadModelFile(f"{where}: unknown {attr} {name!r} (known to Keras {major}: {', '.join(known)}).")


def _check_listed(
    node: ir.Node, listed: list[dict], layout: str, tensors: Mapping[str, np.ndarray], where: str
) -> None:
    """The description's tensor list for a node must be exactly what the layout gives that layer."""
    for entry in listed:
        if entry["key"] not in tensors:
            raise BadModelFile(f"{where}: tensor '{entry['key']}' of layer '{node.name}' is missing.")
    want = [(t.key, list(t.shape)) for t in expected_tensors(node, layout, tensors)]
    got = [(t["key"], t["shape"]) for t in listed]
    if sorted(k for k, _ in got) != sorted(k for k, _ in want):
        raise BadModelFile(
            f"{where}: node '{node.name}' lists tensors {[k for k, _ in got]}, but in the {layout} layout "
            f"it has {[k for k, _ in want]}."
        )
    for key, shape in got:
        expected = dict(want)[key]
        if shape != expected:
            raise BadModelFile(
                f"{where}: tensor '{key}' is described with shape {shape}; node '{node.name}' needs {expected}."
            )
