"""Where a layer's weights lie in each Keras HDF5 layout: exact paths, never substring matches.

Both stores answer one question, ``arrays(name, class_name, key, config)``: the layer's weight arrays in
Keras' own order (``layer.get_weights()``: kernel, recurrent kernel, bias; forward direction first).

- Legacy ``.h5`` (Keras 2 and Keras 3): ``model_weights/<layer name>`` lists its datasets in the group
  attribute ``weight_names``.
- ``.keras`` / ``.weights.h5``: ``layers/<key>/.../vars/<0, 1, ...>`` where ``key`` is the snake_case class
  name with a counter (``lstm``, ``lstm_1``), not the layer's own name.
- tf.keras 2.12's ``save_format="keras_v3"`` and ``.weights.h5``: the same below a root group
  ``_layer_checkpoint_dependencies``, whose counters differ: Keras 2.12 walked the model's
  ``_layer_checkpoint_dependencies`` dict, which lists a layer with weights twice (as
  ``layer_with_weights-<n>`` and ``layer-<i>``), so the second one of a class with weights is ``lstm_2``,
  the third ``lstm_4``, while classes without weights count on ``masking``, ``masking_1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from converter.errors import BadModelFile

NamedArray = tuple[str, np.ndarray]

#: Where each layer class keeps its variable groups inside ``layers/<key>`` of a ``.keras`` file.
_VAR_GROUPS: dict[str, tuple[str, ...]] = {
    "LSTM": ("cell/vars",),
    "GRU": ("cell/vars",),
    "SimpleRNN": ("cell/vars",),
    "Bidirectional": ("forward_layer/cell/vars", "backward_layer/cell/vars"),
    "TimeDistributed": ("layer/vars",),
    "RNN": ("cell/vars",),
    # get_weights() order: query, key, value, output (kernel then bias each), as legacy weight_names list them
    "MultiHeadAttention": ("query_dense/vars", "key_dense/vars", "value_dense/vars", "output_dense/vars"),
}
#: Layer classes that keep an integer weight: Normalization's sample count (``adapt`` bookkeeping).
_INTEGER_WEIGHTS = frozenset({"Normalization"})


def _var_groups(class_name: str, config: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The variable groups of a layer, in weight order. An RNN of ``StackedRNNCells`` keeps each cell under
    ``cell/cells/<key>``, the key named as Keras names the items of a list: snake_case class name + counter
    (``lstm_cell``, ``lstm_cell_1``, ``gru_cell``), so the config gives their order."""
    inner = (config or {}).get("layer")
    if class_name == "Bidirectional" and isinstance(inner, dict) and inner.get("class_name") == "RNN":
        groups = _var_groups("RNN", inner.get("config"))  # Keras builds the backward RNN from the same config
        return tuple(f"{side}/{g}" for side in ("forward_layer", "backward_layer") for g in groups)
    cell = (config or {}).get("cell") if class_name == "RNN" else None
    if isinstance(cell, dict) and cell.get("class_name") == "StackedRNNCells":
        from converter.keras.config import to_snake_case

        entries = (cell.get("config") or {}).get("cells") or []
        used: dict[str, int] = {}
        groups = []
        for entry in entries:
            base = to_snake_case(str(entry.get("class_name", ""))) if isinstance(entry, dict) else ""
            used[base] = used.get(base, -1) + 1
            groups.append(f"cell/cells/{base}_{used[base]}/vars" if used[base] else f"cell/cells/{base}/vars")
        return tuple(groups)
    return _VAR_GROUPS.get(class_name, ("vars",))


class WeightStore(Protocol):
    def arrays(
        self, name: str, class_name: str, key: str, config: Mapping[str, Any] | None = None
    ) -> list[NamedArray]: ...

    def check_all_used(self) -> None:
        """Raise if the file holds weights for a layer the config does not have."""
        ...


def _unused_error(path: Path, unused: list[str]) -> BadModelFile:
    return BadModelFile(
        f"{path}: the file holds weights for {', '.join(repr(u) for u in unused)}, which the config does not have; "
        "the weights and the config do not belong together."
    )


def _read_dataset(path: Path, dataset: object, where: str, integers: bool = False) -> np.ndarray:
    if not isinstance(dataset, h5py.Dataset):
        raise BadModelFile(f"{path}: {where} is not a weight array.")
    if dataset.dtype.kind not in ("fiu" if integers else "f"):  # checked before reading: strings are never read
        raise BadModelFile(f"{path}: weights {where} are of type {dataset.dtype}, not floating point.")
    try:
        array = dataset[()]
    except (OSError, ValueError, TypeError) as exc:
        raise BadModelFile(f"{path}: cannot read weights {where} ({exc}); the file may be truncated.") from None
    if isinstance(array, np.generic):  # a 0-d dataset reads as a NumPy scalar
        array = np.asarray(array)
    if not isinstance(array, np.ndarray) or array.dtype.kind not in ("fiu" if integers else "f"):
        kind = getattr(array, "dtype", type(array))
        raise BadModelFile(f"{path}: weights {where} are of type {kind}, not floating point.")
    return array


def _count_datasets(group: h5py.Group) -> int:
    found: list[str] = []
    group.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return len(found)


class LegacyWeights:
    """Weights of a legacy HDF5 file, found through each layer group's ``weight_names`` attribute."""

    def __init__(self, root: h5py.Group, path: Path) -> None:
        self.root = root
        self.path = path
        self.used: set[str] = set()
        self.taken: dict[str, set[str]] = {}  # nested model group -> weight names its layers took
        self.datasets: set[str] = set()  # full HDF5 paths of the datasets already read

    def check_all_used(self) -> None:
        try:
            unused = [k for k in self.root if k not in self.used and self.root[k].attrs.get("weight_names", []).size]
            for top, taken in self.taken.items():  # a nested model's weights: each taken by one of its layers
                names = [
                    n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in self.root[top].attrs["weight_names"]
                ]
                unused += [f"{top}/{n}" for n in names if n not in taken]
        except (OSError, KeyError, ValueError, AttributeError) as exc:
            raise BadModelFile(f"{self.path}: cannot list the weight groups ({exc}).") from None
        if unused:
            raise _unused_error(self.path, unused)

    def arrays(self, name: str, class_name: str, key: str, config: Mapping[str, Any] | None = None) -> list[NamedArray]:
        """``name`` is the layer's name path: ``lstm``, or ``encoder/lstm`` inside a nested model, whose
        group ``encoder`` lists the weights of all its layers."""
        top, *inner = name.split("/")
        self.used.add(top)
        try:
            if top not in self.root:
                return []
            group = self.root[top]
            names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
            for n in names:
                if n.startswith("/"):  # a weight lies inside its layer's group, never elsewhere in the file
                    raise BadModelFile(f"{self.path}: layer '{name}' names the weight {n[:80]!r} outside its group.")
            if inner:
                names = [n for n in names if _belongs_to(n, [top, *inner])]
                taken = self.taken.setdefault(top, set())
                if taken & set(names):
                    raise BadModelFile(f"{self.path}: weights of '{name}' are claimed by two layers of '{top}'.")
                taken.update(names)
            ints = class_name in _INTEGER_WEIGHTS
            result = []
            for n in names:
                dataset = group.get(n)
                # Each weight from its own dataset, each dataset used once: a file whose weight_names list
                # one dataset twice (Keras 3.0's partial Bidirectional .h5) must not fill two weights with it.
                where = getattr(dataset, "name", None)
                if where is not None and where in self.datasets:
                    raise BadModelFile(
                        f"{self.path}: layer '{name}' lists the dataset {where} for two weights ({n}); the file "
                        "is incomplete or damaged (Keras 3.0 leaves such files when model.save fails): re-save it."
                    )
                if where is not None:
                    self.datasets.add(where)
                result.append((n, _read_dataset(self.path, dataset, f"{top}/{n}", ints)))
            return result
        except (OSError, KeyError, ValueError) as exc:
            raise BadModelFile(f"{self.path}: cannot read the weights of layer '{name}' ({exc}).") from None


def _belongs_to(weight_name: str, layer_path: list[str]) -> bool:
    """Whether a nested model's weight ``weight_name`` is the layer's at ``layer_path`` (model, ..., layer).

    Keras 2 writes ``lstm/lstm_cell/kernel:0`` (the layer's own name first), Keras 3 usually
    ``encoder/lstm/lstm_cell/kernel`` (containers first); path components are compared exactly.
    """
    parts = weight_name.split("/")
    containers, layer = layer_path[:-1], layer_path[-1]
    k = c = 0  # Keras 3 starts at some container (``inner/lstm/...`` for middle/inner/lstm), in path order
    while k < len(parts) - 1 and parts[k] in containers[c:] and parts[k] != layer:
        c = containers.index(parts[k], c) + 1
        k += 1
    return len(parts) > k + 1 and parts[k] == layer


KERAS_212_ROOT = "_layer_checkpoint_dependencies"


class PositionalWeights:
    """Weights of a Keras 3 ``model.weights.h5``: positional ``layers/<key>/.../vars/<n>`` datasets."""

    def __init__(self, h5: h5py.File, path: Path) -> None:
        self.h5 = h5
        self.path = path
        self.used: set[str] = set()
        self.root = KERAS_212_ROOT if KERAS_212_ROOT in h5 and "layers" not in h5 else "layers"

    def _key(self, key: str, class_name: str) -> str:
        """The group name of the layer Keras 3 would call ``key``, in this file's layout."""
        if self.root == "layers":
            return key
        from converter.keras.config import to_snake_case

        base = to_snake_case(class_name)
        suffix = key[len(base) + 1 :] if key.startswith(base + "_") else ""
        index = int(suffix) if suffix.isdigit() else 0
        first = self.h5[self.root].get(base)
        doubled = isinstance(first, h5py.Group) and _count_datasets(first) > 0  # a class with weights
        return key if index == 0 or not doubled else f"{base}_{2 * index}"

    def check_all_used(self) -> None:
        try:
            unused = self._unused(self.root, "")
        except (OSError, KeyError, ValueError) as exc:
            raise BadModelFile(f"{self.path}: cannot list the weight groups ({exc}).") from None
        if unused:
            raise _unused_error(self.path, unused)

    def _unused(self, where: str, prefix: str) -> list[str]:
        """Weight groups under ``where`` no layer read; a nested model's group (``layers/sequential``) is
        looked into: its own ``layers/`` hold its layers' groups."""
        found = []
        for k in self.h5.get(where, {}):
            key = f"{prefix}{k}"
            if key in self.used:
                continue
            if any(u.startswith(f"{key}/layers/") for u in self.used):
                found += self._unused(f"{where}/{k}/layers", f"{key}/layers/")
            elif _count_datasets(self.h5[f"{where}/{k}"]):
                found.append(f"{where}/{k}")
        return found

    def arrays(self, name: str, class_name: str, key: str, config: Mapping[str, Any] | None = None) -> list[NamedArray]:
        """``config``: the layer's config, which says where an RNN of stacked cells keeps each cell."""
        key = self._key(key, class_name)
        self.used.add(key)
        where = f"{self.root}/{key}"
        try:
            if where not in self.h5:
                return []
            group = self.h5[where]
            result: list[NamedArray] = []
            for sub in _var_groups(class_name, config):
                if sub not in group:
                    continue
                vars_group = group[sub]
                order = sorted(vars_group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
                ints = class_name in _INTEGER_WEIGHTS
                result += [
                    (f"{where}/{sub}/{k}", _read_dataset(self.path, vars_group[k], f"{where}/{sub}/{k}", ints))
                    for k in order
                ]
            if _count_datasets(group) != len(result):
                raise BadModelFile(
                    f"{self.path}: layer '{name}' ({class_name}) has weight arrays under {where} that a {class_name} "
                    "does not have; the file does not match its config."
                )
            return result
        except (OSError, KeyError, ValueError) as exc:
            raise BadModelFile(f"{self.path}: cannot read the weights of layer '{name}' ({exc}).") from None
