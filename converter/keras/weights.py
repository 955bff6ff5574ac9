"""Where a layer's weights lie in each Keras HDF5 layout: exact paths, never substring matches.

Both stores answer one question, ``arrays(name, class_name, key)``: the layer's weight arrays in
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

from pathlib import Path
from typing import Protocol

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
}


class WeightStore(Protocol):
    def arrays(self, name: str, class_name: str, key: str) -> list[NamedArray]: ...

    def check_all_used(self) -> None:
        """Raise if the file holds weights for a layer the config does not have."""
        ...


def _unused_error(path: Path, unused: list[str]) -> BadModelFile:
    return BadModelFile(
        f"{path}: the file holds weights for {', '.join(repr(u) for u in unused)}, which the config does not have; "
        "the weights and the config do not belong together."
    )


def _read_dataset(path: Path, dataset: object, where: str) -> np.ndarray:
    if not isinstance(dataset, h5py.Dataset):
        raise BadModelFile(f"{path}: {where} is not a weight array.")
    try:
        array = dataset[()]
    except (OSError, ValueError, TypeError) as exc:
        raise BadModelFile(f"{path}: cannot read weights {where} ({exc}); the file may be truncated.") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
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
        self.datasets: set[str] = set()  # full HDF5 paths of the datasets already read

    def check_all_used(self) -> None:
        try:
            unused = [k for k in self.root if k not in self.used and self.root[k].attrs.get("weight_names", []).size]
        except (OSError, KeyError, ValueError, AttributeError) as exc:
            raise BadModelFile(f"{self.path}: cannot list the weight groups ({exc}).") from None
        if unused:
            raise _unused_error(self.path, unused)

    def arrays(self, name: str, class_name: str, key: str) -> list[NamedArray]:
        self.used.add(name)
        try:
            if name not in self.root:
                return []
            group = self.root[name]
            names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
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
                result.append((n, _read_dataset(self.path, dataset, f"{name}/{n}")))
            return result
        except (OSError, KeyError, ValueError) as exc:
            raise BadModelFile(f"{self.path}: cannot read the weights of layer '{name}' ({exc}).") from None


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
            layers = self.h5.get(self.root, {})
            unused = [f"{self.root}/{k}" for k in layers if k not in self.used and _count_datasets(layers[k])]
        except (OSError, KeyError, ValueError) as exc:
            raise BadModelFile(f"{self.path}: cannot list the weight groups ({exc}).") from None
        if unused:
            raise _unused_error(self.path, unused)

    def arrays(self, name: str, class_name: str, key: str) -> list[NamedArray]:
        key = self._key(key, class_name)
        self.used.add(key)
        where = f"{self.root}/{key}"
        try:
            if where not in self.h5:
                return []
            group = self.h5[where]
            result: list[NamedArray] = []
            for sub in _VAR_GROUPS.get(class_name, ("vars",)):
                if sub not in group:
                    continue
                vars_group = group[sub]
                order = sorted(vars_group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
                result += [
                    (f"{where}/{sub}/{k}", _read_dataset(self.path, vars_group[k], f"{where}/{sub}/{k}")) for k in order
                ]
            if _count_datasets(group) != len(result):
                raise BadModelFile(
                    f"{self.path}: layer '{name}' ({class_name}) has weight arrays under {where} that a {class_name} "
                    "does not have; the file does not match its config."
                )
            return result
        except (OSError, KeyError, ValueError) as exc:
            raise BadModelFile(f"{self.path}: cannot read the weights of layer '{name}' ({exc}).") from None
