"""The ``lstm-convert`` command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 success; 1 an export failed verification; 2 bad input, an unsupported model or bad
options; 130 interrupted. Errors are one to a few lines on stderr, never a traceback (``--debug``
shows one).
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
    help="Convert Keras LSTM/GRU/SimpleRNN models to ONNX, npz and JSON without TensorFlow, verified.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    # Plain click help: rendering help with rich costs ~0.2 s of imports on every --help.
    rich_markup_mode=None,
)

ModelArg = Annotated[Path, typer.Argument(help="A Keras .keras, .h5, or .weights.h5 (with --config) file.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="The model.to_json() file, for a weights-only .weights.h5.")
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
        except KeyboardInterrupt:
            _stderr("interrupted: nothing was written.")
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
) -> None:
    """Show every layer at gate level: shapes, options, parameter formula and named tensors."""
    import converter
    from converter.summary import summarize

    doc = summarize(converter.load(model, config=config).ir)
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
) -> None:
    """Run the model with the NumPy runtime (no TensorFlow) and write its outputs to an .npz."""
    import numpy as np

    import converter
    from converter.files import atomic_outputs, check_target, inputs_by_name, read_arrays

    check_target(output, force)
    loaded = converter.load(model, config=config)
    feeds = inputs_by_name(read_arrays(inputs), loaded.input_names, inputs)
    outputs = loaded.predict_dict(feeds)
    with atomic_outputs([output], force) as (tmp,), tmp.open("wb") as fh:
        np.savez(fh, **outputs)
    shapes = ", ".join(f"{name} {tuple(a.shape)}" for name, a in outputs.items())
    _stderr(f"wrote {output}: {shapes}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="lstm-convert")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
