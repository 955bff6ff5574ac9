"""Verification: run an export and the original on the same inputs and compare every output.

The original is Keras itself when it is installed and loads the file (``tf_keras`` for Keras 2 files),
otherwise the NumPy runtime on the weights as read (itself proven against Keras by the test suite). An
export runs from the written file: ONNX in onnxruntime, npz and JSON read back into the NumPy runtime.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter import ir
from converter.errors import BadInputs, ConversionError

Array = np.ndarray
Outputs = dict[str, Array]
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
OPEN_TIME_STEPS = 7
#: Seeded sample inputs larger than this are refused (a config may declare 10**9 time steps).
MAX_SAMPLE_BYTES = 1 << 30
#: The name Keras must see for each form the reader accepted: Keras picks its loader by the file name.
_ORACLE_NAMES = {"keras": "model.keras", "h5": "model.h5", "weights": "model.weights.h5"}


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
    #: Of ``seconds``, the time spent starting the oracle (importing Keras): paid once per run.
    oracle_seconds: float = 0.0
    #: ONNX: the graph inputs and outputs added for states (``lstm/h0``, ``lstm/h``), and the runtimes run.
    state_inputs: list[str] = field(default_factory=list)
    state_outputs: list[str] = field(default_factory=list)
    runtimes: list[str] = field(default_factory=list)

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
            if not node.layer.passes_through:
                return None
            ref = node.inputs[0]
        return ref.node

    found: dict[str, float] = {}
    for node in model.nodes:
        value = node.layer.masked_input_value()
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
        ref.node: node.layer.vocabulary() for node in model.nodes if node.layer.vocabulary() for ref in node.inputs
    }
    feeds = {}
    shapes = {
        spec.name: [spec.batch_size or batch, *(OPEN_TIME_STEPS if d is None else d for d in spec.shape)]
        for spec in model.inputs
    }
    needed = sum(8 * math.prod(shape) for shape in shapes.values())
    if needed > MAX_SAMPLE_BYTES:
        name, shape = max(shapes.items(), key=lambda item: math.prod(item[1]))
        raise BadInputs(
            f"{model.source}: input '{name}' declares shape {tuple(shape)}, {needed / 2**30:.1f} GiB of sample "
            "inputs for verification; pass your own smaller ones with --inputs, or --no-verify."
        )
    for spec in model.inputs:
        size = spec.batch_size or batch
        shape = shapes[spec.name]
        if spec.name in embedding_sizes:
            input_dim = embedding_sizes[spec.name]
            # ids 1..input_dim-1 (0 is the masked id of mask_zero); an Embedding of one id has only 0
            low = 1 if input_dim > 1 else 0
            x: Array = rng.integers(low, max(input_dim, low + 1), size=shape).astype(
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


def numpy_calls(model: ir.Model, feeds: dict[str, Array], calls: int) -> list[Outputs]:
    """``calls`` calls of the NumPy runtime on one runtime, so stateful layers carry their states like Keras."""
    from converter.runtime import Runtime

    runtime = Runtime(model)
    return [dict(zip(model.output_names, runtime.run(feeds)[0], strict=True)) for _ in range(calls)]


def keras_calls(
    path: Path,
    config: Path | None,
    model: ir.Model,
    feeds: dict[str, Array],
    max_weights_gb: float | None = None,
    calls: int = 1,
) -> tuple[list[Outputs], str, float]:
    """Run the original file in real Keras (one worker process per run, see ``converter.keras_oracle``)
    ``calls`` times on one loaded model (stateful layers carry their states from call to call): the outputs
    of each call, which Keras ran them, and the seconds this call spent starting Keras (0 once it runs).

    Keras deserialises everything in a file, so it only ever sees a private copy that the reader has
    accepted completely (every layer of the config, connected or not, and every HDF5 link), under the
    name of the form the reader found, loaded with ``safe_mode`` on and ``compile=False``.
    Raises ``ImportError`` if that Keras is missing, ``KerasFailed`` if it cannot load or run the file.
    """
    from converter.keras.archive import tf_form
    from converter.keras.reader import accepted_form
    from converter.keras_oracle import keras_installed, worker

    if not keras_installed(model.keras_major):
        raise ImportError("Keras is not installed")
    tf = tf_form(path)  # a SavedModel folder or a checkpoint prefix: copied whole
    with tempfile.TemporaryDirectory(prefix="lstm-convert-oracle-") as tmp:
        config_copy = None
        if config is not None:
            config_copy = Path(tmp) / "config.json"
            shutil.copyfile(config, config_copy)
        if tf is not None and tf[0] == "savedmodel":
            received = Path(tmp) / "model"
            shutil.copytree(tf[1], received)
        elif tf is not None:  # the prefix's .index and .data-* shards
            (Path(tmp) / "ckpt").mkdir()
            for part in tf[1].parent.glob(f"{tf[1].name}.*"):
                shutil.copyfile(part, Path(tmp) / "ckpt" / part.name)
            received = Path(tmp) / "ckpt" / tf[1].name
        else:
            received = Path(tmp) / "received"
            shutil.copyfile(path, received)
        try:
            form = accepted_form(received, config_copy, max_weights_gb)  # the very bytes Keras will read
        except ConversionError as exc:  # name the user's file, not the private copy
            raise type(exc)(str(exc).replace(str(received), str(path))) from None
        copy = received if tf is not None else received.rename(Path(tmp) / _ORACLE_NAMES[form])
        names = [spec.name for spec in model.inputs]
        # Keras restores the states a SavedModel saved; exports and the NumPy runtime's checks start from
        # zeros (see converter.convert's note), so Keras is compared from zeros too.
        return worker().predict(
            copy,
            config_copy,
            model.keras_major,
            names,
            list(model.output_names),
            feeds,
            reset_states=form == "savedmodel",
            calls=calls,
        )


def keras_outputs(
    path: Path,
    config: Path | None,
    model: ir.Model,
    feeds: dict[str, Array],
    max_weights_gb: float | None = None,
) -> tuple[Outputs, str, float]:
    """One call of ``keras_calls``: the outputs, which Keras ran them, the seconds spent starting Keras."""
    results, oracle, seconds = keras_calls(path, config, model, feeds, max_weights_gb)
    return results[0], oracle, seconds


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


def original_calls(
    path: Path,
    config: Path | None,
    model: ir.Model,
    feeds: dict[str, Array],
    oracle: str = "auto",
    max_weights_gb: float | None = None,
    calls: int = 1,
) -> tuple[list[Outputs], str, float]:
    """The original's outputs of ``calls`` calls on the same inputs (a stateful model continues from its
    states), the name of the oracle that computed them, and the seconds spent starting it.

    With ``auto``, Keras is used when it is installed; if it cannot load or run the file (Keras 3 refuses
    its own legacy .h5 of some functional models), the NumPy runtime is, and the oracle's name says why.
    """
    why = ""
    differs = version_rule_differs(model)
    if differs and oracle == "keras":
        from converter.errors import BadOptions

        raise BadOptions(f"{path}: --oracle keras cannot check this file: {differs}; use --oracle numpy.")
    if differs:
        return numpy_calls(model, feeds, calls), f"numpy runtime (not Keras: {differs})", 0.0
    if oracle in ("auto", "keras"):
        try:
            return keras_calls(path, config, model, feeds, max_weights_gb, calls)
        except ImportError:
            why = ""  # no Keras here: the NumPy runtime is the oracle by design
        except ConversionError:  # the private copy was refused: the file changed since it was read
            raise
        except Exception as exc:  # Keras failing on the file must not stop the conversion
            if oracle == "keras":
                from converter.errors import BadOptions

                first_line = (str(exc).strip().splitlines() or [""])[0][:200]
                raise BadOptions(f"{path}: --oracle keras, but Keras could not run the file ({first_line}).") from None
            why = f" (Keras could not run the file: {getattr(exc, 'kind', type(exc).__name__)})"
    return numpy_calls(model, feeds, calls), f"numpy runtime{why}", 0.0


def original_outputs(
    path: Path,
    config: Path | None,
    model: ir.Model,
    feeds: dict[str, Array],
    oracle: str = "auto",
    max_weights_gb: float | None = None,
) -> tuple[Outputs, str, float]:
    """The original's outputs of one call, the oracle's name and its start-up seconds (``original_calls``)."""
    results, name, seconds = original_calls(path, config, model, feeds, oracle, max_weights_gb)
    return results[0], name, seconds
