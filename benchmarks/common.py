"""Helpers shared by the benchmarks: time a fresh process, machine and version info, tables, JSON results."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
#: tf_keras (Keras 2) writes the .h5 files that tf2onnx's Keras 2 route reads; without it that route is skipped
HAVE_TF_KERAS = importlib.util.find_spec("tf_keras") is not None
#: the load average when the benchmark started: other work on the machine shows up here
LOAD_AT_START = os.getloadavg()
#: distribution names whose versions every result records
PACKAGES = ("numpy", "onnx", "onnxruntime", "tensorflow", "keras", "tf-keras", "tf2onnx", "openvino", "lstm-convert")


@dataclass
class Run:
    """One fresh process: wall seconds, CPU seconds (user + system), peak RSS, exit code, the tail of stderr."""

    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    returncode: int
    stderr_tail: str = ""
    stdout_tail: str = ""


def run_process(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run ``argv`` in a fresh process; the peak RSS is that child's own ``ru_maxrss`` (``os.wait4``).

    ``ru_maxrss`` from ``wait4`` covers the child and the descendants it waited for, and nothing else
    this benchmark ran before, unlike ``getrusage(RUSAGE_CHILDREN)``, which keeps the maximum over all.
    Linux keeps a process's peak across fork and exec, so it is never below this script's own RSS at the
    fork (tens of MB: the scripts build their models in children); tests/measured_child.py avoids even that.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        tails = []
        for fh in (err, out):
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 2000))
            tails.append(fh.read().decode(errors="replace"))
    cpu = usage.ru_utime + usage.ru_stime
    return Run(seconds, cpu, usage.ru_maxrss * 1024, proc.returncode, tails[0] if proc.returncode else "", tails[1])


def tool(name: str) -> str:
    """A console script of this Python environment (``lstm-convert``), falling back to PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: pip install -e '.[bench]' first")
    return found


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def time_calls(fn: Callable[[], object], calls: int) -> list[float]:
    """Seconds of each of ``calls`` calls of ``fn``."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


# --------------------------------------------------------------------------- inference timing
THREADS = 2
Runner = Callable[[Any], object]


def session(path: Path) -> Any:
    """An onnxruntime CPU session with ``THREADS`` intra-op threads, sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_runner(sess: Any) -> Runner:
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def openvino_runner(path: Path) -> Runner:
    """OpenVINO's CPU plugin on the same graph: ``THREADS`` threads, float32 (its default on a bf16-capable
    CPU is bf16, errors 3e-4 to 2e-2), one infer request reused across calls."""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request, output = compiled.create_infer_request(), compiled.output(0)
    return lambda x: request.infer({0: x})[output]


def bench(runners: dict[str, Runner], x: Any, rounds: int, budget: float) -> dict[str, dict[str, float]]:
    """Warm up, then alternate: each round every runner times about ``budget`` seconds of calls."""
    calls = {}
    for label, run in runners.items():
        warm = time_calls(lambda run=run: run(x), 5)
        calls[label] = int(min(2000, max(3, budget / median(warm[1:]))))
    samples: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(rounds):
        for label, run in runners.items():
            samples[label] += time_calls(lambda run=run: run(x), calls[label])
    return {
        label: {"median_ms": median(s) * 1e3, "p10_ms": float(statistics.quantiles(s, n=10)[0]) * 1e3, "calls": len(s)}
        for label, s in samples.items()
    }


def busy_fraction(seconds: float = 2.0) -> float:
    """Share of all CPU time that was not idle over the next ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


#: CPU share used by other work, seen before each measured stretch (recorded in the results)
BUSY_SEEN: list[float] = []


def wait_for_idle(enabled: bool = True, limit: float = 0.15, timeout: float = 180.0) -> None:
    """Wait (up to ``timeout`` s) until other processes use under ``limit`` of the CPUs.

    Timings on a 2-core machine shared with a test run are meaningless; this is no guarantee, only a guard.
    """
    if not enabled:
        return
    deadline = time.monotonic() + timeout
    busy = busy_fraction()
    while busy > limit and time.monotonic() < deadline:
        print(f"machine {busy:.0%} busy with other work; waiting for it to go idle ...", file=sys.stderr)
        time.sleep(15)
        busy = busy_fraction()
    BUSY_SEEN.append(round(busy, 3))


def machine() -> dict[str, object]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
                break
    cores = len(os.sched_getaffinity(0))
    return {"cores": cores, "memory_gib": round(mem_kb / 2**20, 1), "cpu": cpu, "os": platform.platform()}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def environment_line() -> str:
    """One markdown line naming the machine and the versions, to go under the tables."""
    m, v = machine(), versions()
    return f"Machine: {m['cores']} cores, {m['memory_gib']} GiB, {m['cpu']}. Versions: " + ", ".join(
        f"{k} {val}" for k, val in v.items()
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; numbers are right-aligned by the renderer, so plain strings will do."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def write_results(name: str, doc: dict, quick: bool) -> Path:
    """Write ``benchmarks/results/<name>.json`` (``<name>.quick.json`` for ``--quick``), with machine and versions."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    load = {"load_average_at_start": LOAD_AT_START, "load_average_at_end": os.getloadavg()}
    load["other_cpu_share_before_each_stretch"] = BUSY_SEEN
    full = {"benchmark": name, "quick": quick, "machine": machine() | load, "versions": versions(), **doc}
    path.write_text(json.dumps(full, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, Run):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fmt_ms(ms: float) -> str:
    """Milliseconds to three significant digits (no exponent)."""
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``12.3x``."""
    return f"{a / b:.1f}x" if b else "n/a"


# --------------------------------------------------------------------------- the converters compared
KERAS_EXPORT = (
    "import sys, keras; m = keras.saving.load_model(sys.argv[1]); "
    "m.export(sys.argv[2], format='onnx', verbose=False, "
    "input_signature=[keras.InputSpec(shape=m.input_shape, dtype='float32')])"
)
Command = tuple[list[str], dict[str, str]]


def converters() -> dict[str, Callable[[Path, Path], Command]]:
    """label -> (model path without suffix, output .onnx) -> (argv, extra environment).

    tf2onnx's command line reads a Keras 2 ``.h5`` only when ``tf.keras`` is Keras 2 (``TF_USE_LEGACY_KERAS=1``
    makes it ``tf_keras``); without it, it reads a Keras 3 ``.keras`` (through Keras 3, not ``from_keras``).
    Keras 3's ``export`` of a loaded Sequential needs ``input_signature`` ("The model provided has never called").
    """
    from lean_env import lean_python

    lstm_convert = tool("lstm-convert")
    lean = str(lean_python())  # tf2onnx and Keras' export run where a tf2onnx user has them: see lean_env.py

    def ours(*flags: str) -> Callable[[Path, Path], Command]:
        return lambda m, o: ([lstm_convert, "to-onnx", f"{m}.keras", "-o", str(o), "--force", *flags], {})

    def tf2onnx(python: str, suffix: str, env: dict[str, str]) -> Callable[[Path, Path], Command]:
        return lambda m, o: ([python, "-m", "tf2onnx.convert", "--keras", f"{m}{suffix}", "--output", str(o)], env)

    found: dict[str, Callable[[Path, Path], Command]] = {
        "lstm-convert --no-verify": ours("--no-verify"),
        "lstm-convert --no-verify --oracle numpy": ours("--no-verify", "--oracle", "numpy"),
        "lstm-convert --oracle numpy": ours("--oracle", "numpy"),
        "lstm-convert (default oracle: Keras)": ours(),
        # Keras 2 exists only in the benchmark's own (full) environment: this route makes a graph for
        # latency.py; conversion.py does not time it (that environment is not what a tf2onnx user has).
        "tf2onnx --keras .h5 (Keras 2)": tf2onnx(sys.executable, ".h5", {"TF_USE_LEGACY_KERAS": "1"}),
        "tf2onnx --keras .keras (Keras 3)": tf2onnx(lean, ".keras", {}),
        "Keras 3 model.export": lambda m, o: ([lean, "-c", KERAS_EXPORT, f"{m}.keras", str(o)], {}),
    }
    if not HAVE_TF_KERAS:  # no Keras 2 to write the .h5 with (pip install tf-keras)
        del found["tf2onnx --keras .h5 (Keras 2)"]
    return found


#: the graphs compared at inference: label in results -> (file tag, label in converters())
GRAPHS = {
    "lstm-convert": ("ours", "lstm-convert --oracle numpy"),
    "tf2onnx (Keras 2 .h5)": ("tf2onnx_h5", "tf2onnx --keras .h5 (Keras 2)"),
    "tf2onnx (Keras 3 .keras)": ("tf2onnx_keras", "tf2onnx --keras .keras (Keras 3)"),
    "Keras 3 export": ("keras_export", "Keras 3 model.export"),
}
if not HAVE_TF_KERAS:
    del GRAPHS["tf2onnx (Keras 2 .h5)"]


def export_graph(label: str, model: Path, folder: Path) -> Path:
    """The ONNX graph that ``GRAPHS[label]`` makes of ``model`` (a path without suffix), in ``folder``.

    Ours is made anew every time (it is what is under test); the others are kept once made.
    """
    tag, converter = GRAPHS[label]
    out = folder / f"{model.name}.{tag}.onnx"
    if out.exists() and tag != "ours":
        return out
    argv, env = converters()[converter](model, out)
    run = run_process(argv, env)
    if run.returncode:
        raise SystemExit(f"{label} failed on {model}: {run.stderr_tail}")
    return out


def timing_arguments(doc: str, default_models: list[str]) -> argparse.Namespace:
    """The command line shared by the in-process timing benchmarks (latency, NumPy runtime)."""
    from models import DEFAULT_FOLDER, MODELS

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run: 2 short rounds.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.4, help="Seconds of calls per runner per round.")
    parser.add_argument("--models", nargs="+", default=default_models, choices=list(MODELS))
    parser.add_argument("--no-wait", action="store_true", help="Do not wait for other work on the machine to stop.")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="The model cache.")
    return parser.parse_args()
