"""The public API: ``load`` a model (Keras file or an lstm-convert export) and ``predict`` with it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from converter import ir
from converter.runtime import Runtime
from converter.runtime.graph import as_feeds

Array = np.ndarray


class LoadedModel:
    """A model read into lstm-convert's description, runnable with the NumPy runtime.

    Attributes:
        ir: the model description (``converter.ir.Model``): ``ir.inputs``, ``ir.nodes`` (one per layer call,
            each with its ``layer`` op holding options and named weights), ``ir.outputs``.
        path: the file it was read from.
        input_names, output_names: the Keras input and (unique) output names, in order.

    >>> import converter
    >>> model = converter.load("fixtures/keras3/tutorial.keras")
    >>> model.predict(np.ones((2, 4, 3), np.float32)).shape
    (2, 1)
    """

    def __init__(self, model: ir.Model, path: Path) -> None:
        self.ir = model
        self.path = path
        self._runtime = Runtime(model)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.ir.inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self.ir.output_names)

    def predict(self, inputs: Array | Sequence[Array] | Mapping[str, Array]) -> Array | list[Array]:
        """Like Keras' ``model.predict``: one array for a one-output model, else a list in output order."""
        outputs = self.predict_dict(inputs)
        values = list(outputs.values())
        return values[0] if len(values) == 1 else values

    def predict_dict(self, inputs: Array | Sequence[Array] | Mapping[str, Array]) -> dict[str, Array]:
        """The outputs keyed by their (unique) output names, in the model's output order."""
        feeds = as_feeds(self.ir, inputs, str(self.path))
        outputs, _ = self._runtime.run(feeds)
        return dict(zip(self.ir.output_names, outputs, strict=True))

    def trace(self, inputs: Array | Sequence[Array] | Mapping[str, Array]) -> dict[str, Array]:
        """Every recurrent layer's per-step gate activations and states for ``inputs``.

        Keys are ``<layer>/<name>`` (``<layer>/forward/<name>`` in a Bidirectional): LSTM ``i f c_tilde o c h``,
        GRU ``z r h_tilde h``, SimpleRNN ``h``; each (batch, time, units), in the input's time order. At a
        masked step, which Keras skips, the gates are NaN and the states are those carried over it. Like
        ``predict``, it advances stateful layers' states.

        >>> import converter
        >>> trace = converter.load("fixtures/keras3/tutorial.keras").trace(np.ones((2, 4, 3), np.float32))
        >>> sorted(trace), trace["lstm/f"].shape
        (['lstm/c', 'lstm/c_tilde', 'lstm/f', 'lstm/h', 'lstm/i', 'lstm/o'], (2, 4, 5))
        """
        feeds = as_feeds(self.ir, inputs, str(self.path))
        found: dict[str, Array] = {}
        self._runtime.run(feeds, trace=found)
        return found

    def reset_states(self) -> None:
        """Zero the states that stateful layers carry from call to call."""
        self._runtime.reset_states()


def load(
    path: str | Path,
    config: str | Path | None = None,
    *,
    allow_nonfinite: bool = False,
    max_weights_gb: float | None = None,
) -> LoadedModel:
    """Read a Keras model file without TensorFlow.

    ``path`` is a ``.keras`` archive, a legacy ``.h5`` (Keras 2 or 3), a ``.weights.h5`` with
    ``config`` naming the ``model.to_json()`` file, a TensorFlow SavedModel folder written by Keras 2,
    a TF checkpoint prefix (``ckpt/m``) with ``config``, or an npz/JSON export written by lstm-convert.
    A SavedModel's stateful layers start from the states it saved, as in Keras.
    Weights holding NaN or Inf are refused unless ``allow_nonfinite``; a Keras file whose weights declare
    more than ``max_weights_gb`` GiB (default 8) is refused before anything is read.

    >>> import converter
    >>> converter.load("fixtures/keras2/tutorial.h5").output_names
    ['dense']
    """
    from converter.files import file_kind

    path = Path(path)
    kind = file_kind(path)
    if kind in ("npz", "json"):
        from converter.check import read_tensor_export

        model, _ = read_tensor_export(path, kind)
        return LoadedModel(model, path)
    if kind == "onnx":
        from converter.errors import BadModelFile

        raise BadModelFile(f"{path}: an ONNX file runs in onnxruntime; load the Keras model or an npz/JSON export.")
    from converter.keras import read_model, saved_states

    loaded = LoadedModel(read_model(path, config, allow_nonfinite, max_weights_gb), path)
    # Like Keras reloading a SavedModel: stateful layers continue from the states it saved;
    # reset_states() zeroes them.
    loaded._runtime.states.update(saved_states(path, config))
    return loaded


def inspect(path: str | Path, config: str | Path | None = None, *, max_weights_gb: float | None = None) -> dict:
    """The gate-level summary document of a Keras model file (see ``schemas/inspect.schema.json``).

    >>> import converter
    >>> converter.inspect("fixtures/keras3/tutorial.keras")["layers"][0]["formula"]
    '4*(3*5 + 5*5 + 5) = 180'
    """
    from converter.summary import summarize

    return summarize(load(path, config, max_weights_gb=max_weights_gb).ir)
