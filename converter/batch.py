"""Many models per call: expand folders, run each conversion (optionally in N processes), collect results.

Every file's outcome is a report dictionary valid against ``schemas/report.schema.json``; a file that
fails carries an ``error`` and its exit code, and does not stop the others unless ``fail_fast``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converter.errors import BadOptions, ConversionError, VerificationFailed
from converter.files import config_beside, file_kind
from converter.scratch import inside_temporary

if TYPE_CHECKING:
    from concurrent.futures import Future

MODEL_SUFFIXES = (".keras", ".h5")
EXPORT_SUFFIXES = (".onnx", ".npz", ".json")


@dataclass
class Job:
    """One file to process: the command's API function name, its arguments, and where output goes."""

    command: str
    model: Path
    output: Path | None
    kwargs: dict[str, Any] = field(default_factory=dict)


def expand(paths: list[Path], suffixes: tuple[str, ...] = MODEL_SUFFIXES) -> list[tuple[Path, Path | None]]:
    """Files as given; folders recursed for ``suffixes``. A ``NAME.weights.h5`` is paired with the
    ``model.to_json()`` file beside it (``NAME.json``); in a folder it is skipped when there is none."""
    found: list[tuple[Path, Path | None]] = []
    from converter.keras.archive import tf_form

    for path in paths:
        if not path.is_dir() or (suffixes == MODEL_SUFFIXES and tf_form(path) is not None):
            found.append((path, config_beside(path)))
            continue
        folders = [] if suffixes != MODEL_SUFFIXES else sorted(p.parent for p in path.rglob("keras_metadata.pb"))
        folders = [f for f in folders if tf_form(f) is not None]  # SavedModels written by Keras
        found += [(folder, None) for folder in folders]
        # Files inside lstm-convert's temporary folders (left by a killed run) are never exports or models.
        files = (p for p in path.rglob("*") if p.is_file() and not inside_temporary(p, path))
        for candidate in sorted(p for p in files if p.name.endswith(suffixes)):
            if any(folder in candidate.parents for folder in folders):
                continue  # a file inside a SavedModel (its assets) is part of it
            if candidate.name.endswith(".weights.h5"):
                config = config_beside(candidate)
                if config is not None and suffixes == MODEL_SUFFIXES:
                    found.append((candidate, config))
                continue
            if suffixes == EXPORT_SUFFIXES and file_kind(candidate) not in ("npz", "json"):
                continue  # reports, architecture files; ONNX files carry no test vector to check alone
            found.append((candidate, None))
    if not found:
        raise BadOptions(f"no model files found in {', '.join(str(p) for p in paths)}.")
    return found


def outputs_in(folder: Path, models: list[Path], suffix: str) -> list[Path]:
    """``-o FOLDER`` with several models: ``FOLDER/<name><suffix>``, refusing two models of one name.

    A missing folder is created (as a missing parent of one output is not: one file is named exactly)."""
    if folder.exists() and not folder.is_dir():
        raise BadOptions(f"{folder}: with several models -o names a folder, and this is a file.")
    names = [m.name.removesuffix(".weights.h5") if m.name.endswith(".weights.h5") else m.stem for m in models]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise BadOptions(f"several models are named {', '.join(clashes)}; convert them into separate folders.")
    if not folder.exists():
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise BadOptions(f"{folder}: cannot create the output folder ({exc.strerror}).") from None
        print(f"created {folder}/", file=sys.stderr)
    return [folder / f"{name}{suffix}" for name in names]


def _api(command: str) -> Callable[..., Any]:
    import converter

    return getattr(converter, command)


def run_job(job: Job) -> dict[str, Any]:
    """Run one job and describe its outcome as a report dictionary (never raises for a bad file)."""
    started = time.perf_counter()
    try:
        if job.command == "verify":
            report = _api("verify")(job.model, job.output, **job.kwargs)
        else:
            report = _api(job.command)(job.model, job.output, **job.kwargs)
        return report.to_dict()  # its seconds are the conversion's, as in its --report file
    except (ConversionError, VerificationFailed) as exc:
        code = 1 if isinstance(exc, VerificationFailed) else 2
        doc = {"model": str(job.model), "export": str(job.output) if job.output else None, "passed": False}
        doc |= {"exit_code": code, "error": {"kind": type(exc).__name__, "message": str(exc)}}
    doc["seconds"] = time.perf_counter() - started
    return doc


def _worker_started() -> None:
    from converter.interrupts import install

    install()


def _run_in_worker(job: Job) -> dict[str, Any]:
    """``run_job`` in a pool process: an interrupt (its temporaries already removed) ends the process, so that
    it does not go on to the next job queued for it."""
    try:
        return run_job(job)
    except KeyboardInterrupt:
        os._exit(130)


def _stop_workers(pool: Any, pending: set[Future[dict[str, Any]]]) -> None:
    for future in pending:
        future.cancel()
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()  # SIGTERM: handled in the worker like Ctrl-C


def run_jobs(
    jobs: list[Job], n_jobs: int = 1, fail_fast: bool = False, on_done: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Run every job; reports come back in job order whatever the number of processes."""
    results: dict[int, dict[str, Any]] = {}

    def finished(index: int, doc: dict[str, Any]) -> bool:
        results[index] = doc
        if on_done is not None:
            on_done(doc)
        return fail_fast and doc["exit_code"] != 0

    if n_jobs <= 1 or len(jobs) <= 1:
        for index, job in enumerate(jobs):
            if finished(index, run_job(job)):
                break
    else:
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from multiprocessing import get_context

        # spawn: a forked child would inherit onnxruntime's and NumPy's thread pools in an undefined state
        context = get_context("spawn")
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=context, initializer=_worker_started) as pool:
            futures = {pool.submit(_run_in_worker, job): index for index, job in enumerate(jobs)}
            pending: set[Future[dict[str, Any]]] = set(futures)
            stop = False
            try:
                while pending and not stop:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        stop = finished(futures[future], future.result()) or stop
            except BaseException:  # Ctrl-C or SIGTERM: stop the workers too, each cleans up its temporaries
                _stop_workers(pool, pending)
                raise
            for future in pending:
                future.cancel()
    return [results[i] for i in sorted(results)]
