"""Run a written ``.onnx`` file the way verification and tests need it: in onnxruntime, OpenVINO or onnx's
ReferenceEvaluator, one session for several calls, state inputs fed zeros unless given.

>>> runner = Runner.open(Path("model.onnx"))  # doctest: +SKIP
>>> first = runner.run({"input_layer": x})  # doctest: +SKIP
>>> second = runner.run({"input_layer": x, **runner.next_states(first)})  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import BadOptions

RUNTIMES = ("onnxruntime", "openvino", "reference")


def session(path: Path, threads: int = 2, lean: bool = False):
    """An onnxruntime CPU session. ``lean`` turns weight prepacking off: onnxruntime otherwise keeps a second,
    repacked copy of every recurrent kernel, 1 GB more for an 8192-unit LSTM (results differ in rounding only)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if lean:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class GraphInput:
    name: str
    int64: bool
    dims: tuple[int | str, ...]  # a fixed size or a symbolic name


def graph_signature(path: Path) -> tuple[list[GraphInput], list[str], dict[str, str]]:
    """The inputs, the output names and the Keras name of each output (from ``metadata_props``)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    fed = {init.name for init in proto.graph.initializer}
    inputs = [
        GraphInput(
            i.name,
            i.type.tensor_type.elem_type == onnx.TensorProto.INT64,
            tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in i.type.tensor_type.shape.dim),
        )
        for i in proto.graph.input
        if i.name not in fed
    ]
    props = {p.key: p.value for p in proto.metadata_props}
    keras = json.loads(props.get("keras_outputs", "{}"))  # Keras name -> graph name
    return inputs, [o.name for o in proto.graph.output], {g: k for k, g in keras.items()}


def is_state_input(name: str) -> bool:
    """``lstm/h0``, ``bidirectional/forward/c0``: the inputs lstm-convert adds for states."""
    return "/" in name and name.rsplit("/", 1)[1] in ("h0", "c0")


class Runner:
    """One open model in one runtime; ``run`` may be called any number of times on the same session."""

    def __init__(self, path: Path, runtime: str, lean: bool = False) -> None:
        if runtime not in RUNTIMES:
            raise BadOptions(f"--runtime {runtime!r}: choose {', '.join(RUNTIMES)}.")
        self.path, self.runtime = path, runtime
        self.inputs, self.outputs, self.keras_names = graph_signature(path)
        self._impl: Any = _open(path, runtime, lean)

    @classmethod
    def open(cls, path: Path, runtime: str = "onnxruntime", lean: bool = False) -> Runner:
        return cls(path, runtime, lean)

    @property
    def state_inputs(self) -> list[str]:
        return [i.name for i in self.inputs if is_state_input(i.name)]

    def feeds(self, given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``given`` cast to the declared types; state inputs not given are zeros of (batch, units)."""
        batch = next((a.shape[0] for n, a in given.items() if not is_state_input(n) and a.ndim), 1)
        arrays = {}
        for spec in self.inputs:
            if spec.name in given:
                arrays[spec.name] = np.asarray(given[spec.name]).astype(
                    np.int64 if spec.int64 else np.float32, copy=False
                )
            elif is_state_input(spec.name):
                shape = tuple(batch if isinstance(d, str) or k == 0 else d for k, d in enumerate(spec.dims))
                arrays[spec.name] = np.zeros(shape, np.float32)
        return arrays

    def run(self, given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """All outputs by graph name (``lstm/h`` for states)."""
        arrays = self.feeds(given)
        if self.runtime == "onnxruntime":
            return dict(zip(self.outputs, self._impl.run(self.outputs, arrays), strict=True))
        if self.runtime == "reference":
            return dict(zip(self.outputs, self._impl.run(self.outputs, arrays), strict=True))
        result = self._impl(arrays)
        wanted = set(self.outputs)
        got = {}
        for port, value in result.items():  # a port may carry several tensor names: take the graph output's
            for name in port.get_names() & wanted or {port.get_any_name()}:
                got[name] = np.asarray(value)
        return got

    def next_states(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The next call's state inputs (``lstm/h0``) from this call's final states (``lstm/h``)."""
        return {name: outputs[name[:-1]] for name in self.state_inputs if name[:-1] in outputs}

    def keras_named(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs under their Keras names where they have one (``lstm/h`` of return_state: ``lstm_1``)."""
        return {self.keras_names.get(name, name): value for name, value in outputs.items()}


def _open(path: Path, runtime: str, lean: bool) -> Any:
    if runtime == "onnxruntime":
        return session(path, lean=lean)
    if runtime == "reference":
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(str(path))
    try:
        import openvino as ov
    except ImportError:
        raise BadOptions("--runtime openvino: OpenVINO is not installed (pip install openvino).") from None
    core = ov.Core()
    # f32 explicitly: on a bf16-capable CPU OpenVINO's default precision is bf16 (errors up to 2e-2).
    return core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def run_onnx(
    path: Path, feeds: dict[str, np.ndarray], states: dict[str, np.ndarray] | None = None, lean: bool = False
) -> dict[str, np.ndarray]:
    """Outputs of one onnxruntime call, by Keras name where they have one (states by graph name).
    Only the model's inputs need be fed (plus ``states``); state inputs not fed are zeros."""
    runner = Runner.open(path, lean=lean)
    return runner.keras_named(runner.run({**feeds, **(states or {})}))
