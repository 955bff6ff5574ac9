"""Where a layer's weights lie in each Keras HDF5 layout: exact paths, never substring matches.

Both stores answer one question, ``arrays(name, class_name, key)``: the layer's weight arrays in
Keras' own order (``layer.get_weights()``: kernel, recurrent kernel, bias; forward direction first).

- Legacy ``.h5`` (Keras 2 and Keras 3): ``model_weights/<layer name>`` lists its datasets in the group
  attribute ``weight_names``.
- ``.keras`` / ``.weights.h5``: ``layers/<key>/.../vars/<0, 1, ...>`` where ``key`` is the snake_case class
  name with a counter (``lstm``, ``lstm_1``), not the layer's own name.
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
#: Layer classes that keep an integer weight: Normalization's sample count (``adapt`` bookkeeping).
_INTEGER_WEIGHTS = frozenset({"Normalization"})


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


def _read_dataset(path: Path, dataset: object, where: str, integers: bool = False) -> np.ndarray:
    if not isinstance(dataset, h5py.Dataset):
        raise BadModelFile(f"{path}: {where} is not a weight array.")
    try:
        array = dataset[()]
    except (OSError, ValueError, TypeError) as exc:
        raise BadModelFile(f"{path}: cannot read weights {where} ({exc}); the file may be truncated.") from None
    if integers and isinstance(array, np.integer):  # a 0-d dataset reads as a NumPy scalar
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
            ints = class_name in _INTEGER_WEIGHTS
            return [(n, _read_dataset(self.path, group.get(n), f"{name}/{n}", ints)) for n in names]
        except (OSError, KeyError, ValueError) as exc:
            raise BadModelFile(f"{self.path}: cannot read the weights of layer '{name}' ({exc}).") from None


class PositionalWeights:
    """Weights of a Keras 3 ``model.weights.h5``: positional ``layers/<key>/.../vars/<n>`` datasets."""

    def __init__(self, h5: h5py.File, path: Path) -> None:
        self.h5 = h5
        self.path = path
        self.used: set[str] = set()

    def check_all_used(self) -> None:
        try:
            layers = self.h5.get("layers", {})
            unused = [f"layers/{k}" for k in layers if k not in self.used and _count_datasets(layers[k])]
        except (OSError, KeyError, ValueError) as exc:
            raise BadModelFile(f"{self.path}: cannot list the weight groups ({exc}).") from None
        if unused:
            raise _unused_error(self.path, unused)

    def arrays(self, name: str, class_name: str, key: str) -> list[NamedArray]:
        self.used.add(key)
        where = f"layers/{key}"
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
