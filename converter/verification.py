"""Verification: run an export and the original on the same inputs and compare every output.

The original is Keras itself when it is installed and loads the file (``tf_keras`` for Keras 2 files),
otherwise the NumPy runtime on the weights as read (itself proven against Keras by the test suite). An
export runs from the written file: ONNX in onnxruntime, npz and JSON read back into the NumPy runtime.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter import ir

Array = np.ndarray
Outputs = dict[str, Array]
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
OPEN_TIME_STEPS = 7


@dataclass
class OutputCheck:
    name: str
    shape: list[int]
    max_abs_error: float
    max_rel_error: float
    passed: bool


@dataclass
class Report:
    """What one verification found; ``to_dict`` is valid against ``schemas/report.schema.json``."""

    model: str
    export: str
    export_format: str
    oracle: str | None
    atol: float
    rtol: float
    inputs: dict[str, list[int]]
    outputs: list[OutputCheck] = field(default_factory=list)
    note: str = ""
    layers: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.outputs)

    @property
    def worst_abs_error(self) -> float:
        return max((c.max_abs_error for c in self.outputs), default=0.0)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinite errors (a missing output) are written as the string "inf"."""
        doc = {**asdict(self), "passed": self.passed, "worst_abs_error": self.worst_abs_error}
        doc["exit_code"], doc["error"] = self.exit_code, None
        for check in doc["outputs"]:
            for key in ("max_abs_error", "max_rel_error"):
                check[key] = check[key] if np.isfinite(check[key]) else "inf"
        if not np.isfinite(doc["worst_abs_error"]):
            doc["worst_abs_error"] = "inf"
        return doc


def masked_inputs(model: ir.Model) -> dict[str, float]:
    """Model inputs that feed a mask (Masking, Embedding(mask_zero), a NotEqual op), with the masked value."""
    producers = {node.name: node for node in model.nodes}

    def source(ref: ir.TensorRef) -> str | None:
        while ref.node in producers:  # follow identities back to a model input
            node = producers[ref.node]
            if not isinstance(node.layer, ir.Identity):
                return None
            ref = node.inputs[0]
        return ref.node

    found: dict[str, float] = {}
    for node in model.nodes:
        layer = node.layer
        value = (
            layer.mask_value
            if isinstance(layer, ir.Masking)
            else layer.value
            if isinstance(layer, ir.NotEqual)
            else 0.0
            if isinstance(layer, ir.Embedding) and layer.mask_zero
            else None
        )
        name = source(node.inputs[0]) if value is not None else None
        if name is not None:
            found[name] = value  # type: ignore[assignment]
    return found


def _mask_pattern(batch: int, steps: int) -> Array:
    """Valid steps per sample: pre-padding, post-padding and holes, as real data has them."""
    keep = np.ones((batch, steps), bool)
    for sample in range(batch):
        kind = sample % 3
        if kind == 0:
            keep[sample, : min(2, steps - 1)] = False  # pre-padded, as pad_sequences makes it
        elif kind == 1:
            keep[sample, max(1, steps - 2) :] = False  # post-padded
        else:
            keep[sample, 1:steps:2] = False  # holes
    return keep


def sample_inputs(model: ir.Model, seed: int = 0, batch: int = 3) -> dict[str, Array]:
    """Seeded random inputs for verification; masked steps in several places when the model masks."""
    rng = np.random.default_rng(seed)
    masked = masked_inputs(model)
    embedding_sizes = {
        ref.node: node.layer.input_dim
        for node in model.nodes
        if isinstance(node.layer, ir.Embedding)
        for ref in node.inputs
    }
    feeds = {}
    for spec in model.inputs:
        size = spec.batch_size or batch
        shape = [size, *(OPEN_TIME_STEPS if d is None else d for d in spec.shape)]
        if spec.name in embedding_sizes:
            x: Array = rng.integers(1, embedding_sizes[spec.name], size=shape).astype(
                np.int64 if spec.dtype != "float32" else np.float32
            )
        else:
            x = rng.normal(size=shape).astype(np.float32)
        if spec.name in masked and x.ndim >= 2:
            keep = _mask_pattern(size, shape[1])
            x[~keep] = masked[spec.name]
        feeds[spec.name] = x
    return feeds


def compare(expected: Outputs, got: Outputs, atol: float, rtol: float) -> list[OutputCheck]:
    """Per output: max abs and max relative error; passes where |got - want| <= atol + rtol * |want|."""
    checks = []
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            shape = None if have is None else list(have.shape)
            checks.append(OutputCheck(name, list(want.shape), float("inf"), float("inf"), False))
            if shape is not None:
                checks[-1].name = f"{name} (shape {shape} != {list(want.shape)})"
            continue
        diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
        scale = np.abs(want.astype(np.float64))
        ok = bool(np.all(diff <= atol + rtol * scale)) and bool(np.all(np.isfinite(have)))
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float((diff / np.maximum(scale, 1e-12)).max()) if diff.size else 0.0
        checks.append(OutputCheck(name, list(want.shape), max_abs, max_rel, ok))
    return checks


def numpy_outputs(model: ir.Model, feeds: dict[str, Array]) -> Outputs:
    from converter.runtime import Runtime  # not needed by --no-verify conversions: imported when used

    outputs, _ = Runtime(model).run(feeds)
    return dict(zip(model.output_names, outputs, strict=True))


def _keras_module(keras_major: int) -> Any | None:
    name = "tf_keras" if keras_major == 2 else "keras"
    if importlib.util.find_spec(name) is None:
        return None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return importlib.import_module(name)


def keras_outputs(path: Path, config: Path | None, model: ir.Model, feeds: dict[str, Array]) -> tuple[Outputs, str]:
    """Run the original file in real Keras; the outputs and which Keras ran them.

    Raises if Keras is missing or cannot load the file.
    """
    keras = _keras_module(model.keras_major)
    if keras is None:
        raise ImportError("Keras is not installed")
    from converter.keras.archive import tf_form

    form = tf_form(path)
    source = form[1] if form is not None else path  # the SavedModel folder, the checkpoint prefix
    if config is not None:
        keras_model = keras.models.model_from_json(config.read_text())
        keras_model.load_weights(str(source))
    else:
        keras_model = keras.models.load_model(str(source), compile=False)  # safe_mode stays on in Keras 3
    if form is not None and form[0] == "savedmodel" and any(getattr(x, "stateful", False) for x in keras_model.layers):
        # Keras restores the states a SavedModel saved; exports and the NumPy runtime's checks start
        # from zeros (see converter.convert's note), so compare from zeros too.
        keras_model.reset_states()
    arrays = [feeds[spec.name] for spec in model.inputs]
    batch = len(arrays[0])
    result = keras_model.predict(arrays if len(arrays) > 1 else arrays[0], verbose=0, batch_size=batch)
    result = result if isinstance(result, list | tuple) else [result]
    outputs = {name: np.asarray(a, np.float32) for name, a in zip(model.output_names, result, strict=True)}
    return outputs, f"{keras.__name__} {keras.__version__}"


def version_rule_differs(model: ir.Model) -> str:
    """Why the installed Keras would compute this file differently from the Keras that wrote it, or ""."""
    repeats = [
        node.name
        for node in model.nodes
        if isinstance(node.layer, ir.Bidirectional)
        and node.layer.forward.return_sequences
        and not node.layer.forward.zero_output_for_mask
    ]
    if not repeats or not masked_inputs(model):
        return ""
    return (
        f"Keras {model.keras_version}, which wrote it, repeats the previous output at masked steps of "
        f"Bidirectional layer(s) {', '.join(repeats)}, where tf.keras and Keras >= 2.4 write zeros; "
        "the file's own rule is used"
    )


def original_outputs(
    path: Path, config: Path | None, model: ir.Model, feeds: dict[str, Array], oracle: str = "auto"
) -> tuple[Outputs, str]:
    """The original's outputs and the name of the oracle that computed them.

    With ``auto``, Keras is used when it is installed; if it cannot load or run the file (Keras 3 refuses
    its own legacy .h5 of some functional models), the NumPy runtime is, and the oracle's name says why.
    """
    why = ""
    differs = version_rule_differs(model)
    if differs and oracle == "keras":
        from converter.errors import BadOptions

        raise BadOptions(f"{path}: --oracle keras cannot check this file: {differs}; use --oracle numpy.")
    if differs:
        return numpy_outputs(model, feeds), f"numpy runtime (not Keras: {differs})"
    if oracle in ("auto", "keras"):
        try:
            return keras_outputs(path, config, model, feeds)
        except ImportError:
            why = ""  # no Keras here: the NumPy runtime is the oracle by design
        except Exception as exc:  # Keras failing on the file must not stop the conversion
            if oracle == "keras":
                from converter.errors import BadOptions

                raise BadOptions(f"{path}: --oracle keras, but Keras could not run the file ({exc}).") from None
            why = f" (Keras could not run the file: {type(exc).__name__})"
    return numpy_outputs(model, feeds), f"numpy runtime{why}"
