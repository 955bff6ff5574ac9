"""The layer registry: every module registers cleanly, and the README's table lists every class it reads."""

from __future__ import annotations

import re

import pytest

from converter.layers import FAMILY, OP_LAYERS, OP_TYPES, READERS, supported_classes
from converter.layers.base import Op
from tests.fixture_index import ROOT


def readme_table_classes() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Supported layers and options", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for cell in first_cells for name in re.findall(r"`([A-Za-z0-9]+)", cell)}


def test_readme_table_lists_every_registered_class() -> None:
    missing = sorted(set(supported_classes()) - readme_table_classes())
    assert not missing, f"README's supported-layers table lacks {missing}"


def test_readme_table_lists_nothing_unregistered() -> None:
    extra = sorted(readme_table_classes() - set(supported_classes()))
    assert not extra, f"README's supported-layers table names classes no module reads: {extra}"


def test_op_layers_are_keras_3_internals() -> None:
    assert set(OP_LAYERS) <= set(READERS)
    assert not set(OP_LAYERS) & set(supported_classes())


@pytest.mark.parametrize("op_type", sorted(OP_TYPES))
def test_every_op_names_itself_and_lives_in_a_family(op_type: str) -> None:
    op = OP_TYPES[op_type]
    assert issubclass(op, Op) and op.op_type == op_type
    assert op.__module__.startswith("converter.layers.")


def test_every_reader_belongs_to_one_family_module() -> None:
    assert set(FAMILY) == set(READERS)
    assert all(family and "." not in family for family in FAMILY.values())
