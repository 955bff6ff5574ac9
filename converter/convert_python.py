"""``converter.to_python``: the standalone NumPy script export, through the shared ``convert`` pipeline
(temporary files moved in place together, ``--force``, verification by running what was written)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter import ir
from converter.convert import DEFAULT_ATOL, DEFAULT_RTOL, PathLike, _options, convert
from converter.errors import BadOptions
from converter.verification import Report

#: Above this many bytes of weights ``embed=True`` is refused: base64 makes a source file a third bigger
#: than the weights, and Python reads the whole literal before the first line of the script runs.
EMBED_LIMIT = 32 * 2**20


def to_python(
    model: PathLike,
    output: PathLike | None = None,
    *,
    embed: bool = False,
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
    """Generate a standalone Python script that needs only NumPy and computes what the Keras model computes.

    ``output`` (``model.py``; default: the model's name in the current folder) gets one plainly written
    function per layer (an LSTM's gates as the tutorials write them: ``i = sigmoid(x_t @ W_i + h @ U_i +
    b_i)`` ... ``c = f * c + i * c_tilde``, ``h = o * tanh(c)``, in a plain loop over the time steps), and
    ``predict(inputs..., states=None)`` calling them in graph order, masks, go_backwards, Bidirectional
    merges, initial and stateful states included. The weights go to ``model.npz`` beside it (read with
    ``np.load(..., allow_pickle=False)``), or into the script itself with ``embed=True`` (base64 of the same
    npz: the exact float32 bits). Verification runs the written script in a fresh Python process that can
    import only NumPy and the standard library. A layer with no standalone form yet is refused by name.
    The other arguments are those of ``to_onnx``.

    >>> import converter
    >>> model = "fixtures/keras3/tutorial.keras"
    >>> report = converter.to_python(model, "/tmp/tutorial_np.py", force=True, oracle="numpy")
    >>> report.passed, report.export_format
    (True, 'python')

    Then, in any Python with NumPy and ``/tmp`` on ``sys.path``::

        from tutorial_np import predict
        y = predict(np.ones((2, 4, 3), np.float32))  # shape (2, 1), as Keras' model.predict
    """
    from converter.export.python_run import run_script
    from converter.export.python_script import build_python_script, npz_bytes

    opts = _options(config, inputs, atol, rtol, verify, report, force, oracle, allow_nonfinite, max_weights_gb)
    if output is not None and Path(output).suffix != ".py":
        raise BadOptions(f"{output}: the standalone script is Python source; name it {Path(output).stem}.py.")
    written: dict[str, list[str]] = {}

    def write(m: ir.Model, temps: list[Path], feeds: dict, expected: dict) -> None:
        size = sum(array.nbytes for _, array in ir.iter_weights(m))
        if embed and size > EMBED_LIMIT:
            raise BadOptions(
                f"--embed: the weights are {size / 2**20:.0f} MiB, too big to embed in the script (the limit is "
                f"{EMBED_LIMIT // 2**20} MiB); leave out --embed to write them to {Path(temps[0]).stem}.npz beside it."
            )
        weights_name = f"{temps[0].stem}.npz"
        script = build_python_script(m, weights_name, Path(model).name, embed=embed)
        temps[0].write_text(script.text)
        if not embed:
            temps[1].write_bytes(npz_bytes(script.weights))
        written.update(inputs=[s.name for s in m.inputs], outputs=list(m.output_names))

    def run_written(temps: list[Path], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (outputs,) = run_script(temps[0], written["inputs"], [feeds])
        return dict(zip(written["outputs"], outputs, strict=False))

    def extra(m: ir.Model, out: Path) -> list[Path]:
        return [] if embed else [out.with_suffix(".npz")]

    return convert(model, output, "python", ".py", write, run_written, opts, extra, needs_test_vector=False)
