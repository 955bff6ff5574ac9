"""The conversions end to end: read, export, verify the written file, and only then put it in place.

>>> import converter
>>> report = converter.to_onnx("fixtures/keras3/tutorial.keras", "/tmp/tutorial.onnx", force=True, oracle="numpy")
>>> report.passed, report.export_format
(True, 'onnx')
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from converter import ir
from converter.errors import BadInputs, BadOptions, ConversionError, OutputExists, VerificationFailed
from converter.files import atomic_outputs, check_target, config_beside, inputs_by_name, read_arrays, writing
from converter.keras import read_model
from converter.verification import DEFAULT_ATOL, DEFAULT_RTOL, Report, compare, original_calls, sample_inputs

PathLike = str | Path
#: Above this many bytes of weights an ONNX file goes to external data (protobuf's limit is 2 GiB).
EXTERNAL_DATA_BYTES = 1_800_000_000
#: Above this many bytes a written ONNX file is verified with onnxruntime's weight prepacking off.
LEAN_VERIFY_BYTES = 256 * 2**20


@dataclass
class Options:
    """What every conversion takes besides the model and the output path."""

    config: Path | None = None
    inputs: Path | None = None
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    verify: bool = True
    report: Path | None = None
    force: bool = False
    oracle: str = "auto"
    allow_nonfinite: bool = False
    max_weights_gb: float | None = None  # None: converter.keras.limits.DEFAULT_MAX_WEIGHTS_GB
    #: ``--batch-size`` / ``--time-steps`` (an int, or "dynamic"): the exported graph's input shapes.
    batch_size: int | None = None
    time_steps: int | str | None = None


@dataclass
class WrittenCheck:
    """How an export other than the default single-call comparison is verified (ONNX: several calls and
    runtimes). ``calls(model)``: how many calls of the original it needs; ``prepare(model, feeds, calls,
    oracle)``: what it needs from the model before the model is freed; ``check(temps, prepared)``: the
    checks and notes; ``fields(model)``: report fields known before verification (state inputs ...)."""

    calls: Callable[[ir.Model], int]
    prepare: Callable[[ir.Model, dict, list, str], object]
    check: Callable[[list[Path], object], tuple[list, list[str]]]
    fields: Callable[[ir.Model], dict]


def default_output(model: Path, suffix: str) -> Path:
    """``models/m.keras`` -> ``./m.onnx``; a ``.weights.h5`` loses both suffixes."""
    if model.name == "saved_model.pb":
        model = model.parent  # a SavedModel named by its graph file: name the export after its folder
    name = model.name.removesuffix(".weights.h5") if model.name.endswith(".weights.h5") else model.stem
    return Path.cwd() / f"{name}{suffix}"


def verification_inputs(model: ir.Model, options: Options) -> dict[str, np.ndarray]:
    """The user's ``--inputs`` checked against the model, or seeded random ones."""
    if options.inputs is None:
        return sample_inputs(model)
    arrays = inputs_by_name(read_arrays(options.inputs), [s.name for s in model.inputs], options.inputs)
    from converter.runtime.graph import as_feeds

    feeds = as_feeds(model, arrays, str(options.inputs))
    for name, array in feeds.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise BadInputs(
                f"{options.inputs}: input '{name}' holds NaN or Inf; verification compares finite outputs, so "
                "give finite inputs."
            )
    return feeds


#: File suffixes that name a format: writing another format under one of them is refused.
_SUFFIX_FORMATS = {".onnx": "onnx", ".npz": "npz", ".json": "json", ".keras": "Keras", ".h5": "Keras HDF5"}
_SUFFIX_FORMATS |= {".py": "pytorch", ".safetensors": "safetensors"}


def check_suffix(out: Path, export_format: str) -> None:
    """Refuse ``to-onnx -o model.npz``: a file named for one format holding another misleads every reader."""
    named = _SUFFIX_FORMATS.get(out.suffix.lower())
    if named == "pytorch" and export_format == "python":  # both exports are Python source
        return
    if named is not None and named != export_format:
        raise BadOptions(
            f"{out}: the name says {named}, but this command writes {export_format}; "
            f"name it {out.stem}.{export_format}."
        )


def _naming_file(exc: ConversionError, path: Path) -> ConversionError:
    """The same error, its message starting with the model file (some layer checks only know the layer)."""
    if str(exc).startswith(str(path)):
        return exc
    return type(exc)(f"{path}: {exc}")


def _check_options(options: Options) -> None:
    if options.atol < 0 or options.rtol < 0:
        raise BadOptions("--atol and --rtol must not be negative.")
    if options.oracle not in ("auto", "keras", "numpy"):
        raise BadOptions(f"--oracle {options.oracle!r}: choose auto, keras or numpy.")
    if options.report is not None:
        check_target(options.report, force=True)


def _write_report(report: Report, options: Options) -> None:
    if options.report is not None:
        with atomic_outputs([options.report], force=True) as (tmp,):
            tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")


def convert(
    model_path: PathLike,
    output: PathLike | None,
    export_format: str,
    suffix: str,
    write: Callable[[ir.Model, list[Path], dict, dict], None],
    run_written: Callable[[list[Path], dict[str, np.ndarray]], dict[str, np.ndarray]],
    options: Options,
    extra_files: Callable[[ir.Model, Path], list[Path]] = lambda model, out: [],
    finish: Callable[[ir.Model, list[Path], dict, dict], None] | None = None,
    needs_test_vector: bool = True,
    written_check: WrittenCheck | None = None,
) -> Report:
    """The shared pipeline: ``write`` the export into temporary files, ``run_written`` them, compare,
    ``finish`` (extra outputs that only make sense for a verified export), then move the files in place.

    ``needs_test_vector`` says whether the export embeds the original's outputs even when not verified
    (npz, JSON, ONNX with ``test_data``); when neither it nor verification wants them, none are computed.
    """
    model_path = Path(model_path)
    out = Path(output) if output is not None else default_output(model_path, suffix)
    if options.config is None:  # the same pairing as reading does, so the Keras oracle gets it too
        options = replace(options, config=config_beside(model_path))
    _check_options(options)
    check_suffix(out, export_format)
    check_target(out, options.force)
    started = time.perf_counter()
    model = read_model(model_path, options.config, options.allow_nonfinite, options.max_weights_gb)
    feed_model = model
    if options.batch_size is not None or options.time_steps is not None:
        from converter.export.input_shapes import reshape_inputs

        # Verification feeds the Keras time length where the graph's is made dynamic, so Keras can run them.
        fixed_time = None if options.time_steps == "dynamic" else options.time_steps
        feed_model = reshape_inputs(model, options.batch_size, fixed_time, str(model_path))
        model = reshape_inputs(model, options.batch_size, options.time_steps, str(model_path))
    feeds: dict[str, np.ndarray] = {}
    expected: dict[str, np.ndarray] = {}
    original: list[dict[str, np.ndarray]] = []
    oracle: str | None = None
    oracle_seconds = 0.0
    if options.verify or needs_test_vector:
        feeds = verification_inputs(model if options.inputs is not None else feed_model, options)
        # Without verification the original's outputs only feed the test vector: the NumPy runtime gives them
        # in milliseconds, where importing Keras takes seconds.
        oracle_choice = options.oracle if options.verify else "numpy"
        calls = written_check.calls(model) if written_check is not None and options.verify else 1
        original, oracle, oracle_seconds = original_calls(
            model_path, options.config, model, feeds, oracle_choice, options.max_weights_gb, calls
        )
        expected = original[0]
    targets = [out, *extra_files(model, out)]
    report = Report(str(model_path), str(out), export_format, oracle, options.atol, options.rtol, {})
    report.note = saved_states_note(model_path, options.config)
    report.inputs = {name: list(a.shape) for name, a in feeds.items()}
    report.layers = len(model.nodes)
    report.oracle_seconds = oracle_seconds
    if written_check is not None:
        for key, value in written_check.fields(model).items():
            setattr(report, key, value)
    prepared = (
        written_check.prepare(model, feeds, original, oracle or "")
        if written_check is not None and options.verify
        else None
    )
    with atomic_outputs(targets, options.force) as temps:
        try:
            write(model, temps, feeds, expected)
        except ConversionError as exc:  # a layer the target cannot hold: say which file it is in
            raise _naming_file(exc, model_path) from None
        # The weights are written: unless ``finish`` needs them, free them before the export is loaded
        # to be run, so that a big model is not held twice (here and in the runtime under test).
        kept = model if finish is not None else None
        del model
        if options.verify:
            if written_check is not None:
                report.outputs, notes = written_check.check(temps, prepared)
                report.note = "; ".join(filter(None, [report.note, *notes]))
            else:
                got = run_written(temps, feeds)
                report.outputs = compare(expected, got, options.atol, options.rtol)
            report.seconds = time.perf_counter() - started
            if not report.passed:
                _write_report(report, options)
                worst = max(report.outputs, key=lambda c: c.max_abs_error)
                raise VerificationFailed(
                    f"{out}: the export differs from the original ({oracle}) on output '{worst.name}' by "
                    f"{worst.max_abs_error:.3g} (atol {options.atol}, rtol {options.rtol}); nothing was written."
                )
        else:
            report.note = "; ".join(filter(None, ["not verified (--no-verify)", report.note]))
        if finish is not None and kept is not None:
            finish(kept, temps, feeds, expected)
    report.seconds = time.perf_counter() - started
    _write_report(report, options)
    return report


def saved_states_note(model_path: Path, config: Path | None) -> str:
    """A SavedModel keeps the states its stateful layers had when saved, and Keras continues from them
    on reload. An export starts from zeros (``reset_states()``) unless fed; say so, never bake them in."""
    from converter.keras import saved_states

    states = saved_states(model_path, config)
    if not states:
        return ""
    names = ", ".join(sorted(states))
    return (
        f"the SavedModel holds the states that stateful layer(s) {names} had when saved, which Keras continues "
        "from on reload; this export and its verification start from zero states (as after reset_states()); "
        "feed those states as the <layer>/h0, <layer>/c0 inputs to continue (converter.load() starts from them)"
    )


def _onnx_runner(paths: list[Path], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from converter.export.onnx_run import run_onnx

    return run_onnx(paths[0], feeds, lean=_is_big(paths))


def _is_big(paths: list[Path]) -> bool:
    """A big model is run lean rather than with a second, prepacked copy of its weights."""
    return sum(path.stat().st_size for path in paths) > LEAN_VERIFY_BYTES


def _onnx_check(state_io: bool, runtimes: list[str], atol: float, rtol: float, where: str) -> WrittenCheck:
    """Several calls per session, state outputs included, in onnxruntime and each of ``runtimes``."""
    from converter.export import onnx_verify
    from converter.export.onnx_graph import state_io_names

    def calls(model: ir.Model) -> int:
        return 2 if onnx_verify.keras_streams(model, state_io_names(model, state_io=state_io)[0]) else 1

    def prepare(model: ir.Model, feeds: dict, original: list, oracle: str) -> object:
        inputs, outputs = state_io_names(model, state_io=state_io)
        return onnx_verify.expectations(model, feeds, original, inputs, outputs, oracle)

    def check(temps: list[Path], prepared: object) -> tuple[list, list[str]]:
        return onnx_verify.check_written(temps[0], prepared, runtimes, atol, rtol, where, lean=_is_big(temps))  # type: ignore[arg-type]

    def fields(model: ir.Model) -> dict:
        inputs, outputs = state_io_names(model, state_io=state_io)
        return {"state_inputs": inputs, "state_outputs": outputs, "runtimes": ["onnxruntime", *runtimes]}

    return WrittenCheck(calls, prepare, check, fields)


def to_onnx(
    model: PathLike,
    output: PathLike | None = None,
    *,
    opset: int | None = None,
    state_io: bool = False,
    batch_size: int | None = None,
    time_steps: int | str | None = None,
    runtime: str | list[str] | None = None,
    test_data: PathLike | None = None,
    config: PathLike | None = None,
    inputs: PathLike | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    verify: bool = True,
    report: PathLike | None = None,
    force: bool = False,
    oracle: str = "auto",
    allow_nonfinite: bool = False,
    max_weights_gb: float | None = None,
) -> Report:
    """Convert a Keras model to ONNX, one fused LSTM/GRU/RNN node per recurrent layer, and verify it.

    Args:
        model: a ``.keras``, legacy ``.h5`` or ``.weights.h5`` file (``NAME.json`` beside it is its config).
        output: the ``.onnx`` to write (default: the model's name in the current folder). Weights over
            ~1.8 GB go to ``OUT.data`` beside it (ONNX external data).
        opset: the ONNX opset, 13 (the default) to 28.
        state_io: give every recurrent layer ``<layer>/h0`` (``/c0``) inputs and ``<layer>/h`` outputs
            (stateful layers always have them). State inputs are required inputs: feed zeros to start.
        batch_size: the graph's fixed batch size (default: symbolic, or a stateful model's Keras batch).
        time_steps: the graph's time length, an int or ``"dynamic"`` (default: the Keras model's).
        runtime: also verify in ``"openvino"`` and/or ``"reference"`` (onnx's ReferenceEvaluator), when
            installed; refused, with the reason, where that runtime would not compute the graph exactly.
        test_data: a new or empty folder that also receives the ONNX backend test layout.
        config: the ``model.to_json()`` file of a ``.weights.h5``.
        inputs: an ``.npz`` of verification inputs keyed by input name (default: seeded random ones).
        atol, rtol: verification passes where ``|export - original| <= atol + rtol * |original|``.
        verify: run the written file against the original before putting it in place (three calls in
            one session, every output, state outputs included).
        report: also write the verification report (JSON, ``schemas/report.schema.json``) here.
        force: overwrite an existing output.
        oracle: what computes the original's outputs: ``auto`` (Keras if installed), ``keras`` or ``numpy``.
        allow_nonfinite: accept weights holding NaN or Inf.
        max_weights_gb: refuse a model whose weights declare more than this many GiB (default 8), before
            reading them.

    Returns the ``Report``; raises ``ConversionError`` subclasses for bad input and ``VerificationFailed``
    (nothing written) when the export differs from the original.

    >>> import converter
    >>> report = converter.to_onnx("fixtures/keras2/stacked.h5", "/tmp/s.onnx", force=True, oracle="numpy")
    >>> report.passed, [check.name for check in report.outputs]
    (True, ['time_distributed', 'time_distributed (again)'])
    """
    from converter.export.onnx_file import external_data_path, write_onnx, write_test_data
    from converter.export.onnx_run import RUNTIMES

    opts = _options(config, inputs, atol, rtol, verify, report, force, oracle, allow_nonfinite, max_weights_gb)
    opts.batch_size, opts.time_steps = _shape_options(batch_size, time_steps)
    runtimes = [runtime] if isinstance(runtime, str) else list(runtime or [])
    for name in runtimes:
        if name not in RUNTIMES:
            raise BadOptions(f"--runtime {name!r}: choose {', '.join(RUNTIMES)}.")
    if test_data is not None:
        test_data = check_test_data_folder(Path(test_data))

    def write(m: ir.Model, temps: list[Path], feeds: dict, expected: dict) -> None:
        write_onnx(m, temps[0], opset=opset, state_io=state_io, external=len(temps) > 1)

    def finish(m: ir.Model, temps: list[Path], feeds: dict, expected: dict) -> None:
        with writing(Path(test_data)):  # type: ignore[arg-type]
            write_test_data(Path(test_data), temps, m, feeds, expected)  # type: ignore[arg-type]

    def extra(m: ir.Model, out: Path) -> list[Path]:
        return [external_data_path(out)] if weight_bytes(m) > EXTERNAL_DATA_BYTES else []

    with_test_data = test_data is not None
    return convert(
        model,
        output,
        "onnx",
        ".onnx",
        write,
        _onnx_runner,
        opts,
        extra,
        finish if with_test_data else None,
        needs_test_vector=with_test_data,
        written_check=_onnx_check(state_io, runtimes, atol, rtol, str(model)),
    )


def _shape_options(batch_size: object, time_steps: object) -> tuple[int | None, int | str | None]:
    """``--batch-size N`` (N >= 1) and ``--time-steps N|dynamic``, checked."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise BadOptions(f"--batch-size {batch_size!r}: give a whole number of at least 1.")
    if isinstance(time_steps, str) and time_steps != "dynamic":
        try:
            time_steps = int(time_steps)
        except ValueError:
            raise BadOptions(f"--time-steps {time_steps!r}: give a whole number of at least 1, or 'dynamic'.") from None
    if isinstance(time_steps, bool) or (isinstance(time_steps, int) and time_steps < 1):
        raise BadOptions(f"--time-steps {time_steps!r}: give a whole number of at least 1, or 'dynamic'.")
    return batch_size, time_steps  # type: ignore[return-value]


def check_test_data_folder(folder: Path) -> Path:
    """The backend test layout goes into a new (or empty) folder, never over an existing test set.

    Returns the folder to write: a symlink to a folder is followed (the test set goes where it points, the
    link stays), a symlink to nothing is refused.
    """
    given = folder
    if folder.is_symlink():
        try:
            folder = folder.resolve(strict=True)
        except (OSError, RuntimeError):  # missing target, or a loop (RuntimeError before Python 3.13)
            raise BadOptions(
                f"{given}: is a symlink to {os.readlink(given)}, which leads to no folder (missing, or a loop); "
                "create that folder or name a new folder for --test-data."
            ) from None
    if not folder.parent.is_dir():
        raise BadOptions(f"{given}: the folder {folder.parent} does not exist; create it first.")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputExists(f"{given}: exists and is not an empty folder; name a new folder for --test-data.")
    return folder


def weight_bytes(model: ir.Model) -> int:
    """Bytes of all weight tensors of a model."""
    return sum(array.nbytes for _, array in ir.iter_weights(model))


def _to_tensor_file(
    export_format: str, model: PathLike, output: PathLike | None, layout: str, options: Options
) -> Report:
    """The npz and JSON exports: same description and test vector, verified by reading the file back."""
    from converter.export.layouts import LAYOUTS

    if layout not in LAYOUTS:
        raise BadOptions(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}.")
    if export_format == "npz":
        from converter.export.npz import read_npz as read_export
        from converter.export.npz import write_npz as write_export
    else:
        from converter.export.json_doc import read_json as read_export
        from converter.export.json_doc import write_json as write_export

    def write(m: ir.Model, temps: list[Path], feeds: dict, expected: dict) -> None:
        with temps[0].open("wb") as fh:
            write_export(m, fh, layout=layout, test_inputs=feeds, test_outputs=expected)

    def run_written(temps: list[Path], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from converter.verification import numpy_outputs

        written, _ = read_export(temps[0])  # the file as written, not the in-memory model
        return numpy_outputs(written, feeds)

    return convert(model, output, export_format, f".{export_format}", write, run_written, options)


def _options(
    config: PathLike | None,
    inputs: PathLike | None,
    atol: float,
    rtol: float,
    verify: bool,
    report: PathLike | None,
    force: bool,
    oracle: str,
    allow_nonfinite: bool,
    max_weights_gb: float | None,
) -> Options:
    def path(p: PathLike | None) -> Path | None:
        return None if p is None else Path(p)

    return Options(
        config=path(config),
        inputs=path(inputs),
        atol=atol,
        rtol=rtol,
        verify=verify,
        report=path(report),
        force=force,
        oracle=oracle,
        allow_nonfinite=allow_nonfinite,
        max_weights_gb=max_weights_gb,
    )


def to_npz(
    model: PathLike,
    output: PathLike | None = None,
    *,
    layout: str = "keras",
    config: PathLike | None = None,
    inputs: PathLike | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    verify: bool = True,
    report: PathLike | None = None,
    force: bool = False,
    oracle: str = "auto",
    allow_nonfinite: bool = False,
    max_weights_gb: float | None = None,
) -> Report:
    """Export named per-gate tensors to an ``.npz`` in ``layout`` keras, onnx or pytorch, verified.

    The archive describes itself (``__model__``) and carries a test vector (``__test__/...``). The other
    arguments are those of ``to_onnx``.

    >>> import converter
    >>> converter.to_npz("fixtures/keras3/tutorial.keras", "/tmp/t.npz", force=True, oracle="numpy").passed
    True
    """
    opts = _options(config, inputs, atol, rtol, verify, report, force, oracle, allow_nonfinite, max_weights_gb)
    return _to_tensor_file("npz", model, output, layout, opts)


def to_json(
    model: PathLike,
    output: PathLike | None = None,
    *,
    layout: str = "keras",
    config: PathLike | None = None,
    inputs: PathLike | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    verify: bool = True,
    report: PathLike | None = None,
    force: bool = False,
    oracle: str = "auto",
    allow_nonfinite: bool = False,
    max_weights_gb: float | None = None,
) -> Report:
    """Export the model as one JSON document of named per-gate tensors (bit-exact float32), verified.

    The arguments are those of ``to_npz``.

    >>> import converter
    >>> converter.to_json("fixtures/keras3/tutorial.keras", "/tmp/t.json", force=True, oracle="numpy").passed
    True
    """
    opts = _options(config, inputs, atol, rtol, verify, report, force, oracle, allow_nonfinite, max_weights_gb)
    return _to_tensor_file("json", model, output, layout, opts)


def to_pytorch(
    model: PathLike,
    output: PathLike | None = None,
    *,
    config: PathLike | None = None,
    inputs: PathLike | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    verify: bool = True,
    report: PathLike | None = None,
    force: bool = False,
    oracle: str = "auto",
    allow_nonfinite: bool = False,
    max_weights_gb: float | None = None,
) -> Report:
    """Generate a readable PyTorch ``nn.Module`` source file mirroring the Keras graph, and its weights.

    ``output`` (``model.py``; default: the model's name in the current folder) gets one class named after
    the file, one attribute per Keras layer with weights (``self.lstm = nn.LSTM(...)``), and a ``load()``
    function; the weights go to ``model.safetensors`` beside it (``load_state_dict(strict=True)``). Keras'
    masks (anywhere in a sequence), go_backwards, Bidirectional merges, initial and stateful states are
    written out in the module's ``forward``. Verification imports the written file in a fresh namespace
    and runs it in torch against the original, so it needs torch installed (the conversion itself does
    not). Layers torch's modules cannot compute exactly (a GRU with reset_after=False, gate activations
    other than tanh/sigmoid) are refused. The other arguments are those of ``to_onnx``.

    >>> import converter
    >>> report = converter.to_pytorch("fixtures/keras3/tutorial.keras", "/tmp/tutorial.py", force=True, oracle="numpy")
    >>> report.passed, report.export_format
    (True, 'pytorch')

    Then, with torch and safetensors installed and ``/tmp`` on ``sys.path``::

        from tutorial import load
        model = load()  # the Tutorial module with its weights, in eval mode
        y = model(torch.ones(2, 4, 3))  # shape (2, 1), as Keras' model.predict
    """
    from converter.export.torch_module import build_torch_source, class_name_for
    from converter.export.torch_run import load_module, require_torch, run_module

    opts = _options(config, inputs, atol, rtol, verify, report, force, oracle, allow_nonfinite, max_weights_gb)
    if output is not None and Path(output).suffix != ".py":
        raise BadOptions(f"{output}: a PyTorch module is Python source; name it {Path(output).stem}.py.")
    if verify:
        require_torch(f"{model}: verifying the PyTorch export")
    written: dict[str, object] = {}

    def write(m: ir.Model, temps: list[Path], feeds: dict, expected: dict) -> None:
        from converter import __version__
        from converter.export.safetensors_file import write_safetensors

        source = build_torch_source(m, class_name_for(temps[0].stem), temps[1].name, Path(model).name)
        temps[0].write_text(source.text)
        meta = {"format": "pt", "producer": f"lstm-convert {__version__}"}
        with temps[1].open("wb") as fh:
            write_safetensors(fh, ((t.key, t.array()) for t in source.tensors), meta | {"source": Path(model).name})
        written.update(class_name=source.class_name, inputs=[s.name for s in m.inputs], outputs=list(m.output_names))

    def run_written(temps: list[Path], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        module = load_module(temps[0], temps[1], str(written["class_name"]))
        outputs = run_module(module, written["inputs"], feeds)  # type: ignore[arg-type]
        return dict(zip(written["outputs"], outputs, strict=False))  # type: ignore[call-overload]

    def extra(m: ir.Model, out: Path) -> list[Path]:
        return [out.with_suffix(".safetensors")]

    return convert(model, output, "pytorch", ".py", write, run_written, opts, extra, needs_test_vector=False)
