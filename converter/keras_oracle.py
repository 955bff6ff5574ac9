"""Real Keras as the verification oracle, in one worker process for a whole run.

Importing TensorFlow costs seconds and prints log lines; a batch of conversions should pay that once, not per
file, and the user's terminal should not see TensorFlow's logging. So Keras runs in a child process started on
first use and fed model after model over a pipe: a JSON header line, then the arrays as an ``.npz`` (NumPy's
own format, read back with ``allow_pickle=False``). The child's stderr (TensorFlow's C++ and Python logging)
goes nowhere; its errors come back as messages. The child is only ever handed files the reader has already
accepted in full (``converter.keras.read_model``), and Keras 3 loads them in safe mode.

The worker is also this module's ``__main__``: ``python -m converter.keras_oracle`` (not a user command).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

Arrays = dict[str, np.ndarray]


def _pack(arrays: Arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _unpack(data: bytes) -> Arrays:
    with np.load(io.BytesIO(data), allow_pickle=False) as found:
        return {key: found[key] for key in found.files}


def _send(stream: IO[bytes], header: dict[str, Any], payload: bytes = b"") -> None:
    stream.write(json.dumps({**header, "payload_bytes": len(payload)}).encode() + b"\n" + payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    line = stream.readline()
    if not line:
        return None
    header = json.loads(line)
    return header, stream.read(header["payload_bytes"])


class KerasFailed(RuntimeError):
    """Keras could not load or run a file; ``kind`` is the exception Keras raised (``ValueError``, ...)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class OracleWorker:
    """The Keras worker process of this run; ``predict`` runs one model file on given inputs."""

    def __init__(self) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "converter.keras_oracle"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    def predict(
        self,
        path: Path,
        config: Path | None,
        keras_major: int,
        input_names: list[str],
        output_names: list[str],
        feeds: Arrays,
        reset_states: bool = False,
        calls: int = 1,
    ) -> tuple[list[Arrays], str, float]:
        """Per call (``calls`` predictions on one loaded model: stateful layers carry their states) the
        outputs by name, the oracle's name (``keras 3.15.1``) and the seconds spent importing Keras for it.

        Raises ``ImportError`` when that Keras is not installed and ``KerasFailed`` when it cannot run the file.
        """
        request = {"path": str(path), "config": str(config) if config else None, "keras_major": keras_major}
        request |= {"inputs": input_names, "outputs": output_names, "reset_states": reset_states, "calls": calls}
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            _send(self.process.stdin, request, _pack({n: feeds[n] for n in input_names}))
            answer = _receive(self.process.stdout)
        except (BrokenPipeError, OSError):
            answer = None
        if answer is None:
            raise KerasFailed("the Keras worker process ended unexpectedly", "WorkerDied")
        header, payload = answer
        if header.get("error"):
            if header["kind"] == "ImportError":
                raise ImportError(header["error"])
            raise KerasFailed(header["error"], header["kind"])
        flat = _unpack(payload)  # "<call>/<output>" -> array
        results = [{n: flat[f"{k}/{n}"] for n in output_names} for k in range(calls)]
        return results, header["oracle"], float(header["import_seconds"])

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()


_WORKER: OracleWorker | None = None


def keras_installed(keras_major: int) -> bool:
    """Whether the Keras of that major version (``tf_keras`` for 2, ``keras`` for 3) is installed here."""
    import importlib.util

    return importlib.util.find_spec("tf_keras" if keras_major == 2 else "keras") is not None


def worker() -> OracleWorker:
    """This process's Keras worker, started on first use and stopped at exit."""
    global _WORKER
    if _WORKER is None or _WORKER.process.poll() is not None:
        _WORKER = OracleWorker()
        atexit.register(_WORKER.close)
    return _WORKER


# --- the worker's side ----------------------------------------------------------------------------------


def _keras(keras_major: int, imported: dict[int, Any]) -> tuple[Any, float]:
    """The Keras of a file's major version, imported once; the import's seconds the first time."""
    if keras_major in imported:
        return imported[keras_major], 0.0
    import importlib
    import importlib.util

    name = "tf_keras" if keras_major == 2 else "keras"
    if importlib.util.find_spec(name) is None:
        raise ImportError(f"{name} is not installed")
    started = time.perf_counter()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    module = importlib.import_module(name)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    imported[keras_major] = module
    return module, time.perf_counter() - started


def _safe_mode(keras: Any) -> Any:
    """Keras' safe-mode scope (no Lambda bytecode is unmarshalled). tf_keras ignores ``safe_mode=`` for
    legacy .h5 files, but its Lambda loader honours this scope."""
    import contextlib
    import importlib

    try:
        lib = importlib.import_module(f"{keras.__name__}.src.saving.serialization_lib")
    except ImportError:
        return contextlib.nullcontext()
    return lib.SafeModeScope(True) if hasattr(lib, "SafeModeScope") else contextlib.nullcontext()


def _run(request: dict[str, Any], feeds: Arrays, imported: dict[int, Any]) -> tuple[Arrays, str, float]:
    keras, seconds = _keras(request["keras_major"], imported)
    keras.backend.clear_session()
    with _safe_mode(keras):
        if request["config"] is not None:
            model = keras.models.model_from_json(Path(request["config"]).read_text())
            model.load_weights(request["path"])
        else:
            model = keras.models.load_model(request["path"], compile=False, safe_mode=True)
    if request.get("reset_states") and any(getattr(layer, "stateful", False) for layer in model.layers):
        model.reset_states()
    arrays = [feeds[name] for name in request["inputs"]]
    outputs = {}
    for k in range(int(request.get("calls", 1))):
        result = model.predict(arrays if len(arrays) > 1 else arrays[0], verbose=0, batch_size=len(arrays[0]))
        result = result if isinstance(result, list | tuple) else [result]
        outputs |= {f"{k}/{n}": np.asarray(a, np.float32) for n, a in zip(request["outputs"], result, strict=True)}
    return outputs, f"{keras.__name__} {keras.__version__}", seconds


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer requests until the parent closes the pipe."""
    imported: dict[int, Any] = {}
    while (message := _receive(requests)) is not None:
        request, payload = message
        try:
            outputs, oracle, seconds = _run(request, _unpack(payload), imported)
        except BaseException as exc:  # Keras failing on a file is an answer, not the end of the worker
            _send(answers, {"error": f"{type(exc).__name__}: {exc}"[:2000], "kind": type(exc).__name__})
            continue
        _send(answers, {"oracle": oracle, "import_seconds": seconds}, _pack(outputs))


if __name__ == "__main__":
    # Answers go to a private copy of stdout; file descriptor 1 then points at stderr (discarded by the
    # parent), so nothing TensorFlow or Keras prints, from Python or C++, can break the protocol.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, answers)
