"""The ``lstm-convert`` command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 success; 1 an export failed verification; 2 bad input, an unsupported model, bad
options or an output that cannot be written; 130 interrupted (Ctrl-C or SIGTERM). Errors are one to a
few lines on stderr, never a traceback (``--debug`` shows one).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

app = typer.Typer(
    name="lstm-convert",
    help="Convert Keras LSTM/GRU/SimpleRNN models to ONNX, npz, JSON and PyTorch without TensorFlow, verified.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    # Plain click help: rendering help with rich costs ~0.2 s of imports on every --help.
    rich_markup_mode=None,
)

ModelArg = Annotated[
    Path,
    typer.Argument(
        help="A Keras .keras, .h5, or .weights.h5 (with --config) file; predict also runs npz/JSON exports.",
        metavar="MODEL",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="The model.to_json() file, for a weights-only .weights.h5.")
]
MaxWeightsOpt = Annotated[
    float | None,
    typer.Option(
        "--max-weights-gb",
        help="Refuse models whose weights declare more than this many GiB, before reading them. [default: 8]",
    ),
]
_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., None])


def _stderr(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message, markup=False)


def handle_errors(command: F) -> F:
    """Turn library exceptions into one-line messages and exit codes."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        from converter.errors import ConversionError, VerificationFailed

        try:
            command(*args, **kwargs)
        except (ConversionError, VerificationFailed) as exc:
            if _state["debug"]:
                raise
            _stderr(f"error: {exc}")
            raise typer.Exit(code=1 if isinstance(exc, VerificationFailed) else 2) from None
        except KeyboardInterrupt as exc:
            from converter.interrupts import Terminated

            what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            _stderr(f"{what}: the output in progress was not written (outputs already finished stay).")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        from converter import __version__

        typer.echo(f"lstm-convert {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug


@app.command()
@handle_errors
def inspect(
    model: ModelArg,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (schemas/inspect.schema.json).")] = False,
    max_weights_gb: MaxWeightsOpt = None,
) -> None:
    """Show every layer at gate level: shapes, options, parameter formula and named tensors."""
    import converter
    from converter.summary import summarize

    doc = summarize(converter.load(model, config=config, max_weights_gb=max_weights_gb).ir)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        from converter.summary_table import print_summary

        print_summary(doc)


@app.command()
@handle_errors
def predict(
    model: ModelArg,
    inputs: Annotated[Path, typer.Option("--inputs", help="An .npz keyed by input name (or one .npy array).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the outputs (.npz).")],
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    trace: Annotated[
        Path | None,
        typer.Option("--trace", help="Also write every recurrent layer's per-step gates and states (.npz)."),
    ] = None,
    max_weights_gb: MaxWeightsOpt = None,
) -> None:
    """Run the model with the NumPy runtime (no TensorFlow) and write its outputs to an .npz.

    Arrays named like ONNX state inputs (lstm/h0, lstm/c0, bi/forward/h0 ...) in the inputs start those
    layers from them; the outputs file also holds every recurrent layer's final states (lstm/h ...).
    """
    import numpy as np

    import converter
    from converter.files import atomic_outputs, check_target, inputs_by_name, read_arrays
    from converter.states import is_state_key

    check_target(output, force)
    if trace is not None:
        check_target(trace, force)
    loaded = converter.load(model, config=config, max_weights_gb=max_weights_gb)
    arrays = read_arrays(inputs)
    states = {k: v for k, v in arrays.items() if k not in loaded.input_names and is_state_key(loaded.ir, k)}
    feeds = inputs_by_name({k: v for k, v in arrays.items() if k not in states}, loaded.input_names, inputs)
    traced = loaded.trace(feeds, initial_states=states or None) if trace is not None else {}
    if trace is not None:
        loaded.reset_states()  # the outputs below start from the same states the trace did
    outputs = loaded.predict_dict(feeds, initial_states=states or None)
    outputs |= {k: v for k, v in loaded.states_by_name.items() if k not in outputs}
    with atomic_outputs([output], force) as (tmp,), tmp.open("wb") as fh:
        np.savez(fh, **outputs)
    if trace is not None:
        with atomic_outputs([trace], force) as (tmp,), tmp.open("wb") as fh:
            np.savez(fh, **traced)
        _stderr(f"wrote {trace}: {', '.join(sorted(traced))}")
    shapes = ", ".join(f"{name} {tuple(a.shape)}" for name, a in outputs.items())
    _stderr(f"wrote {output}: {shapes}")


ModelsArg = Annotated[
    list[Path],
    typer.Argument(
        help="Keras model files (.keras, .h5) or folders to search for them.", metavar="MODEL...", show_default=False
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="Output file; with several models, an existing folder. [default: here]"),
]
InputsOpt = Annotated[
    Path | None, typer.Option("--inputs", help="Verification inputs: an .npz keyed by input name [default: random].")
]
AtolOpt = Annotated[float, typer.Option("--atol", help="Absolute tolerance of the verification.")]
RtolOpt = Annotated[float, typer.Option("--rtol", help="Relative tolerance of the verification.")]
NoVerifyOpt = Annotated[bool, typer.Option("--no-verify", help="Skip running the export against the original.")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Write the verification report (JSON) here.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
OracleOpt = Annotated[
    str, typer.Option("--oracle", help="What computes the original's outputs: auto (Keras if installed), keras, numpy.")
]
NonfiniteOpt = Annotated[bool, typer.Option("--allow-nonfinite", help="Accept weights holding NaN or Inf.")]
LayoutOpt = Annotated[str, typer.Option("--layout", help="Tensor layout: keras, onnx or pytorch.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON report per file on stdout, nothing else.")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Convert in N processes.")]
FailFastOpt = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first file that fails.")]


def _show_report(doc: dict, verb: str) -> None:
    """One file's result on stderr: the per-output table, then one line saying what happened."""
    # Plain lines need no rich: importing it costs a tenth of a --no-verify conversion.
    if doc.get("error"):
        typer.echo(f"error: {doc['error']['message']}", err=True)
        return
    added = _state_io_line(doc)
    if not doc["outputs"]:
        typer.echo(f"{verb} {doc['export']}: {doc['note']}", err=True)
        if added:
            typer.echo(added, err=True)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(stderr=True, highlight=False)
    table = Table(title=f"verified against {doc['oracle']}", title_justify="left")
    for column in ("output", "shape", "max abs error", "max rel error", ""):
        table.add_column(column, justify="right" if "error" in column else "left")
    for check in doc["outputs"]:
        mark = "[green]pass[/]" if check["passed"] else "[red]FAIL[/]"
        abs_err, rel_err = (
            f"{v:.2e}" if isinstance(v, float) else v for v in (check["max_abs_error"], check["max_rel_error"])
        )
        # escape: "[openvino] dense" is not rich markup
        table.add_row(escape(check["name"]), str(tuple(check["shape"])), abs_err, rel_err, mark)
    console.print(table)
    status = "passed" if doc["passed"] else "FAILED"
    verdict = f"verification {status} (atol {doc['atol']}, rtol {doc['rtol']}) in {doc['seconds']:.2f} s"
    if len(doc.get("runtimes") or []) > 1:
        verdict += f" in {', '.join(doc['runtimes'])}"
    console.print(f"{verb} {doc['export']}: {verdict}", markup=False, soft_wrap=True)
    if added:
        console.print(added, markup=False, soft_wrap=True)
    for note in filter(None, (doc.get("note") or "").split("; ")):
        console.print(f"note: {note}", markup=False, soft_wrap=True)


def _state_io_line(doc: dict) -> str:
    """``state inputs: lstm/h0, lstm/c0; state outputs: lstm/h, lstm/c`` (what to_onnx added), or ""."""
    parts = [
        f"{label}: {', '.join(doc[key])}"
        for key, label in (("state_inputs", "state inputs (feed zeros to start)"), ("state_outputs", "state outputs"))
        if doc.get(key)
    ]
    return "; ".join(parts)


def _summary(docs: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title_justify="left")
    for column in ("file", "layers", "output", "worst error", "result", "time"):
        table.add_column(column, justify="right" if column in ("layers", "worst error", "time") else "left")
    for doc in docs:
        error = doc.get("error")
        worst = doc.get("worst_abs_error")
        result = f"[red]{error['kind']}[/]" if error else ("[green]pass[/]" if doc["passed"] else "[red]FAIL[/]")
        table.add_row(
            doc["model"],
            str(doc.get("layers", "")),
            doc.get("export") or "",
            f"{worst:.2e}" if isinstance(worst, float) else str(worst or ""),
            result,
            f"{doc['seconds']:.2f} s",
        )
    console = Console(stderr=True, highlight=False)
    console.print(table)
    for doc in docs:
        if doc.get("error"):
            console.print(f"error: {doc['error']['message']}", markup=False, soft_wrap=True)


def _run(jobs: list, as_json: bool, n_jobs: int, fail_fast: bool, verb: str) -> None:
    """Run the jobs with a progress bar where it helps, print results, exit with the worst code."""
    from converter.batch import run_jobs

    if len(jobs) > 1 and sys.stderr.isatty() and not as_json:
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            task = progress.add_task("converting", total=len(jobs))
            docs = run_jobs(jobs, n_jobs, fail_fast, on_done=lambda doc: progress.advance(task))
    else:
        docs = run_jobs(jobs, n_jobs, fail_fast)
    if as_json:
        for doc in docs:
            typer.echo(json.dumps(doc))
    elif len(docs) == 1:
        _show_report(docs[0], verb)
    else:
        _summary(docs)
    code = max((doc["exit_code"] for doc in docs), default=0)
    if code:
        raise typer.Exit(code=code)


def _jobs(command: str, models: list[Path], output: Path | None, config: Path | None, suffix: str, **kwargs: object):
    from converter.batch import Job, expand, outputs_in
    from converter.errors import BadOptions
    from converter.keras.archive import tf_form

    # one file (or a missing one: the reader says so), or a SavedModel / checkpoint folder
    if len(models) == 1 and (not models[0].is_dir() or tf_form(models[0]) is not None):
        ((model, found_config),) = expand(models)
        if output is not None and output.is_dir():
            output = outputs_in(output, [model], suffix)[0]
        return [Job(command, model, output, {"config": config or found_config, **kwargs})]
    found = expand(models)
    if kwargs.get("report") is not None:
        raise BadOptions("--report takes one model; use --json for several.")
    if config is not None:
        raise BadOptions("--config takes one model; with several, keep each NAME.weights.h5 beside its NAME.json.")
    folder = output if output is not None else Path.cwd()
    outs = outputs_in(folder, [m for m, _ in found], suffix)
    return [Job(command, m, o, {"config": c, **kwargs}) for (m, c), o in zip(found, outs, strict=True)]


@app.command("to-onnx")
@handle_errors
def to_onnx(
    models: ModelsArg,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset [default: a conservative one].")] = None,
    state_io: Annotated[bool, typer.Option("--state-io", help="Expose each layer's states as inputs/outputs.")] = False,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Fix the graph's batch size [default: symbolic].")
    ] = None,
    time_steps: Annotated[
        str | None, typer.Option("--time-steps", help="The graph's time length: N or dynamic [default: Keras'].")
    ] = None,
    runtime: Annotated[
        list[str] | None,
        typer.Option("--runtime", help="Also verify in openvino or reference (onnx's ReferenceEvaluator)."),
    ] = None,
    test_data: Annotated[
        Path | None, typer.Option("--test-data", help="Also write the ONNX backend test layout into this folder.")
    ] = None,
    inputs: InputsOpt = None,
    atol: AtolOpt = 1e-5,
    rtol: RtolOpt = 1e-4,
    no_verify: NoVerifyOpt = False,
    report: ReportOpt = None,
    force: ForceOpt = False,
    oracle: OracleOpt = "auto",
    allow_nonfinite: NonfiniteOpt = False,
    max_weights_gb: MaxWeightsOpt = None,
    as_json: JsonOpt = False,
    jobs: JobsOpt = 1,
    fail_fast: FailFastOpt = False,
) -> None:
    """Convert to ONNX: one fused LSTM/GRU/RNN node per recurrent layer, verified in onnxruntime."""
    options = dict(opset=opset, state_io=state_io, inputs=inputs, atol=atol, rtol=rtol, verify=not no_verify)
    options |= dict(batch_size=batch_size, time_steps=time_steps, runtime=runtime or None)
    options |= dict(report=report, force=force, oracle=oracle, allow_nonfinite=allow_nonfinite)
    options |= dict(max_weights_gb=max_weights_gb)
    if test_data is not None:
        options["test_data"] = test_data
    _run(_jobs("to_onnx", models, output, config, ".onnx", **options), as_json, jobs, fail_fast, "wrote")


def _tensor_command(export_format: str):
    def command(
        models: ModelsArg,
        output: OutputOpt = None,
        layout: LayoutOpt = "keras",
        config: ConfigOpt = None,
        inputs: InputsOpt = None,
        atol: AtolOpt = 1e-5,
        rtol: RtolOpt = 1e-4,
        no_verify: NoVerifyOpt = False,
        report: ReportOpt = None,
        force: ForceOpt = False,
        oracle: OracleOpt = "auto",
        allow_nonfinite: NonfiniteOpt = False,
        max_weights_gb: MaxWeightsOpt = None,
        as_json: JsonOpt = False,
        jobs: JobsOpt = 1,
        fail_fast: FailFastOpt = False,
    ) -> None:
        options = dict(layout=layout, inputs=inputs, atol=atol, rtol=rtol, verify=not no_verify, report=report)
        options |= dict(force=force, oracle=oracle, allow_nonfinite=allow_nonfinite, max_weights_gb=max_weights_gb)
        found = _jobs(f"to_{export_format}", models, output, config, f".{export_format}", **options)
        _run(found, as_json, jobs, fail_fast, "wrote")

    command.__doc__ = (
        f"Export named per-gate tensors (W_i, U_f, b_o ...) as {export_format}, in Keras, ONNX or PyTorch "
        "layout, with a description and a test vector; verified by running the written file."
    )
    return handle_errors(command)


@app.command("to-pytorch")
@handle_errors
def to_pytorch(
    models: ModelsArg,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    inputs: InputsOpt = None,
    atol: AtolOpt = 1e-5,
    rtol: RtolOpt = 1e-4,
    no_verify: NoVerifyOpt = False,
    report: ReportOpt = None,
    force: ForceOpt = False,
    oracle: OracleOpt = "auto",
    allow_nonfinite: NonfiniteOpt = False,
    as_json: JsonOpt = False,
    jobs: JobsOpt = 1,
    fail_fast: FailFastOpt = False,
) -> None:
    """Generate a readable PyTorch nn.Module source file (model.py) and its weights (model.safetensors),
    verified by importing the file and running it in torch."""
    options = dict(inputs=inputs, atol=atol, rtol=rtol, verify=not no_verify, report=report, force=force)
    options |= dict(oracle=oracle, allow_nonfinite=allow_nonfinite)
    _run(_jobs("to_pytorch", models, output, config, ".py", **options), as_json, jobs, fail_fast, "wrote")


@app.command("to-python")
@handle_errors
def to_python(
    models: ModelsArg,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    embed: Annotated[
        bool, typer.Option("--embed", help="Put the weights in the script itself (small models) [default: OUT.npz].")
    ] = False,
    inputs: InputsOpt = None,
    atol: AtolOpt = 1e-5,
    rtol: RtolOpt = 1e-4,
    no_verify: NoVerifyOpt = False,
    report: ReportOpt = None,
    force: ForceOpt = False,
    oracle: OracleOpt = "auto",
    allow_nonfinite: NonfiniteOpt = False,
    as_json: JsonOpt = False,
    jobs: JobsOpt = 1,
    fail_fast: FailFastOpt = False,
) -> None:
    """Generate a standalone Python script (model.py) that needs only NumPy, one plain function per layer,
    and its weights (model.npz, or --embed), verified by running the script in a fresh Python process."""
    options = dict(embed=embed, inputs=inputs, atol=atol, rtol=rtol, verify=not no_verify, report=report)
    options |= dict(force=force, oracle=oracle, allow_nonfinite=allow_nonfinite)
    _run(_jobs("to_python", models, output, config, ".py", **options), as_json, jobs, fail_fast, "wrote")


app.command("to-npz")(_tensor_command("npz"))
app.command("to-json")(_tensor_command("json"))


@app.command("report")
@handle_errors
def report_command(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the report (.html).")],
    config: ConfigOpt = None,
    inputs: Annotated[
        Path | None,
        typer.Option("--inputs", help="Trace these inputs: an .npz keyed by input name [default: seeded random]."),
    ] = None,
    max_cells: Annotated[
        int, typer.Option("--max-cells", min=1, help="Draw at most this many rows, columns and units per block.")
    ] = 32,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    max_weights_gb: MaxWeightsOpt = None,
) -> None:
    """Write one self-contained HTML page: layer graph, gate diagrams, weight heatmaps, biases, formulas and
    the per-step gate activations of a sample input."""
    import converter
    from converter.files import check_target, inputs_by_name, read_arrays

    check_target(output, force)
    loaded = converter.load(model, config=config, max_weights_gb=max_weights_gb)
    feeds = None if inputs is None else inputs_by_name(read_arrays(inputs), loaded.input_names, inputs)
    converter.report(loaded, output, inputs=feeds, force=force, max_cells=max_cells)
    _stderr(f"wrote {output}: {output.stat().st_size / 1e6:.2f} MB")


@app.command()
@handle_errors
def verify(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="MODEL EXPORT to check an export against the original; or exports (or folders) alone, each "
            "checked against its embedded test vector.",
            show_default=False,
        ),
    ],
    config: ConfigOpt = None,
    inputs: InputsOpt = None,
    atol: AtolOpt = 1e-5,
    rtol: RtolOpt = 1e-4,
    report: ReportOpt = None,
    oracle: OracleOpt = "auto",
    max_weights_gb: MaxWeightsOpt = None,
    runtime: Annotated[
        list[str] | None,
        typer.Option("--runtime", help="ONNX: also run in openvino or reference (onnx's ReferenceEvaluator)."),
    ] = None,
    as_json: JsonOpt = False,
    jobs: JobsOpt = 1,
    fail_fast: FailFastOpt = False,
) -> None:
    """Check an export against the original model, or exports against their embedded test vectors."""
    from converter.batch import EXPORT_SUFFIXES, Job, expand
    from converter.check import is_export

    options = dict(atol=atol, rtol=rtol)
    from converter.keras.archive import tf_form

    model_folder = paths[0].is_dir() and tf_form(paths[0]) is not None
    if len(paths) == 2 and (model_folder or not paths[0].is_dir()) and (model_folder or not is_export(paths[0])):
        options |= dict(config=config, inputs=inputs, oracle=oracle, max_weights_gb=max_weights_gb)
        options |= dict(runtime=runtime or None)
        found = [Job("verify", paths[0], paths[1], options)]
    else:
        found = [Job("verify", export, None, options) for export, _ in expand(paths, EXPORT_SUFFIXES)]
    if report is not None and len(found) == 1:
        found[0].kwargs["report"] = report
    _run(found, as_json, jobs, fail_fast, "checked")


def main() -> None:
    """Console-script entry point."""
    from converter.interrupts import install

    install()
    app(prog_name="lstm-convert")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
