"""The public API: ``load`` a model (Keras file or an lstm-convert export) and ``predict`` with it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from converter import ir
from converter.errors import BadInputs
from converter.runtime import Runtime
from converter.runtime.graph import as_feeds
from converter.states import States, flat_states, nested_states, parse_states

Array = np.ndarray


class LoadedModel:
    """A model read into lstm-convert's description, runnable with the NumPy runtime.

    Attributes:
        ir: the model description (``converter.ir.Model``): ``ir.inputs``, ``ir.nodes`` (one per layer call,
            each with its ``layer`` op holding options and named weights), ``ir.outputs``.
        path: the file it was read from.
        input_names, output_names: the Keras input and (unique) output names, in order.
        states: every recurrent layer's final states after the last call (see ``set_states``).

    >>> import converter
    >>> model = converter.load("fixtures/keras3/tutorial.keras")
    >>> model.predict(np.ones((2, 4, 3), np.float32)).shape
    (2, 1)
    >>> sorted(model.states["lstm"]), model.states["lstm"]["h"].shape
    (['c', 'h'], (2, 5))
    """

    def __init__(self, model: ir.Model, path: Path) -> None:
        self.ir = model
        self.path = path
        self._runtime = Runtime(model)
        self._last: States = {}  # the final states of the last call
        self._next: States = {}  # set_states: where the next call starts

    @property
    def states(self) -> dict[str, dict]:
        """The final states of every recurrent layer after the last call, by layer and state name:
        ``{"lstm": {"h": h, "c": c}, "bi": {"forward": {"h": ..}, "backward": {"h": ..}}}`` (empty before
        the first call). ``converter.states.flat_states`` gives the ONNX names (``lstm/h``)."""
        return {k: _copy(v) for k, v in nested_states(self.ir, self._last).items()}

    @property
    def states_by_name(self) -> dict[str, Array]:
        """``states`` flat, by the ONNX graph's output names: ``{"lstm/h": h, "lstm/c": c, "bi/forward/h": ..}``.
        Feeding them back under the input names (``lstm/h0``) streams the next chunk, here or in ONNX."""
        return {k: np.array(v) for k, v in flat_states(self.ir, self._last).items()}

    def set_states(self, states: Mapping) -> None:
        """Start the next call from ``states`` (nested like ``states``, or flat by ONNX name: ``lstm/h``
        or ``lstm/h0``); layers not named start as usual (zeros, or a stateful layer's carried states).
        A stateful layer carries on from there; others start from zeros again on later calls.

        Raises ``BadInputs`` (one line, naming the layer and both shapes) for a state that does not fit.
        """
        self._next = {**self._next, **parse_states(self.ir, states, None, str(self.path))}

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.ir.inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self.ir.output_names)

    def predict(
        self, inputs: Array | Sequence[Array] | Mapping[str, Array], initial_states: Mapping | None = None
    ) -> Array | list[Array]:
        """Like Keras' ``model.predict``: one array for a one-output model, else a list in output order.

        ``initial_states`` (the forms of ``set_states``) start this call's recurrent layers from them; the
        final states are then in ``states``. One streaming loop:

        >>> import converter
        >>> model = converter.load("fixtures/keras3/open_time.keras")  # LSTM -> GRU, any length
        >>> x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
        >>> whole = model.predict(x)
        >>> _ = model.predict(x[:, :4])
        >>> streamed = model.predict(x[:, 4:], initial_states=model.states)
        >>> bool(np.abs(whole - streamed).max() < 1e-6)
        True
        """
        outputs = self.predict_dict(inputs, initial_states)
        values = list(outputs.values())
        return values[0] if len(values) == 1 else values

    def predict_dict(
        self, inputs: Array | Sequence[Array] | Mapping[str, Array], initial_states: Mapping | None = None
    ) -> dict[str, Array]:
        """The outputs keyed by their (unique) output names, in the model's output order."""
        feeds = as_feeds(self.ir, inputs, str(self.path))
        outputs, finals = self._runtime.run(feeds, initial_states=self._start(feeds, initial_states) or None)
        self._next, self._last = {}, finals
        return dict(zip(self.ir.output_names, outputs, strict=True))

    def _start(self, feeds: Mapping[str, Array], initial_states: Mapping | None) -> dict:
        """The states this call starts from: ``set_states``' and then ``initial_states``, checked."""
        batch = next(iter(feeds.values())).shape[0] if feeds else None
        start = dict(self._next)
        if initial_states is not None:
            start |= parse_states(self.ir, initial_states, batch, str(self.path))
        for node, directions in start.items():  # set_states could not know the batch: check it here
            for direction, arrays in directions.items():
                if arrays and batch is not None and arrays[0].shape[0] != batch:
                    label = f"{node}/{direction}" if direction else node
                    raise BadInputs(
                        f"{self.path}: the states of layer '{label}' have shape {arrays[0].shape}, but this call's "
                        f"inputs need ({batch}, {arrays[0].shape[1]}) (batch, units)."
                    )
        return start

    def trace(
        self, inputs: Array | Sequence[Array] | Mapping[str, Array], initial_states: Mapping | None = None
    ) -> dict[str, Array]:
        """Every recurrent layer's per-step gate activations and states for ``inputs``.

        Keys are ``<layer>/<name>`` (``<layer>/forward/<name>`` in a Bidirectional): LSTM ``i f c_tilde o c h``,
        GRU ``z r h_tilde h``, SimpleRNN ``h``; each (batch, time, units), in the input's time order. At a
        masked step, which Keras skips, the gates are NaN and the states are those carried over it. Like
        ``predict``, it starts from ``initial_states`` (see ``predict``) and advances stateful layers' states.

        >>> import converter
        >>> trace = converter.load("fixtures/keras3/tutorial.keras").trace(np.ones((2, 4, 3), np.float32))
        >>> sorted(trace), trace["lstm/f"].shape
        (['lstm/c', 'lstm/c_tilde', 'lstm/f', 'lstm/h', 'lstm/i', 'lstm/o'], (2, 4, 5))
        """
        feeds = as_feeds(self.ir, inputs, str(self.path))
        found: dict[str, Array] = {}
        start = self._start(feeds, initial_states)
        _, self._last = self._runtime.run(feeds, initial_states=start or None, trace=found)
        self._next = {}
        return found

    def reset_states(self) -> None:
        """Zero the states that stateful layers carry from call to call (and forget ``set_states``)."""
        self._runtime.reset_states()
        self._next, self._last = {}, {}


def _copy(value: dict) -> dict:
    return {k: _copy(v) if isinstance(v, dict) else np.array(v) for k, v in value.items()}


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
