"""Conversion cost: lstm-convert vs tf2onnx and Keras 3's own ONNX export, each a fresh process per run.

The anchors run in a venv of their own with only what a tf2onnx user installs (``pip install tensorflow-cpu
tf2onnx``, built once under ``benchmarks/.venvs/`` by ``lean_env.py``); in this environment, beside full
tensorflow and tf_keras, they would be twice as slow and the comparison flattering.

Run: ``python benchmarks/conversion.py [--runs 5] [--quick]``. Every run of every command is a new process
(what a user pays on the command line: interpreter start, imports, reading, writing), timed by wall clock
with the child's own peak RSS; the commands alternate within each round and the table shows medians.
Writes ``benchmarks/results/conversion.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Run, converters, environment_line, median, ratio, run_process, table, wait_for_idle, write_results
from lean_env import lean_python, lean_versions
from models import DEFAULT_FOLDER, MODELS, ensure_models

CONVERSION_MODELS = ["tutorial", "lstm", "gru", "masked_lstm"]
OURS = "lstm-convert --no-verify"
VERIFIED = "lstm-convert --oracle numpy"
TF2ONNX = "tf2onnx --keras .keras (Keras 3)"  # the anchor of the targets, in the lean venv
EXPORT = "Keras 3 model.export"  # the second anchor (it calls tf2onnx too), in the same venv
SKIPPED = "tf2onnx --keras .h5 (Keras 2)"  # needs tf_keras, so only the full environment has it


def measure(names: list[str], folder: Path, runs: int, wait: bool) -> dict[str, dict[str, list[Run]]]:
    commands = {label: make for label, make in converters().items() if label != SKIPPED}
    found: dict[str, dict[str, list[Run]]] = {n: {label: [] for label in commands} for n in names}
    with tempfile.TemporaryDirectory(prefix="lstm-convert-bench-") as tmp:
        for round_ in range(runs):
            wait_for_idle(wait)
            for name in names:
                for label, make in commands.items():
                    out = Path(tmp) / f"{name}.onnx"
                    argv, env = make(folder / name, out)
                    run = run_process(argv, env, cwd=Path(tmp))
                    out.unlink(missing_ok=True)
                    found[name][label].append(run)
                    status = "ok" if run.returncode == 0 else f"exit {run.returncode}: {run.stderr_tail[-300:]}"
                    print(f"[{round_ + 1}/{runs}] {name:12} {label:38} {run.seconds:6.2f} s "
                          f"{run.peak_rss_bytes / 2**20:7.0f} MB {status}", file=sys.stderr)  # fmt: skip
    return found


#: The dependencies on lstm-convert's command path whose import cost a user pays on every command.
HEAVY_IMPORTS = ["numpy", "h5py", "ml_dtypes", "onnx", "onnxruntime", "typer", "rich", "jsonschema", "converter.cli"]


def import_seconds(module: str, runs: int = 5) -> float:
    """Median cumulative import time of ``module`` in a fresh interpreter (``python -X importtime``)."""
    times = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True
        )
        for line in done.stderr.splitlines():
            parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
            if len(parts) == 3 and parts[2] == module:
                times.append(int(parts[1]) / 1e6)
    return median(times)


def summarize(runs: dict[str, list[Run]]) -> dict[str, dict]:
    """Median wall time and peak RSS per command, over the runs that succeeded."""
    out = {}
    for label, rs in runs.items():
        ok = [r for r in rs if r.returncode == 0]
        out[label] = {
            "seconds": median([r.seconds for r in ok]),
            "seconds_min": min((r.seconds for r in ok), default=float("nan")),
            "cpu_seconds": median([r.cpu_seconds for r in ok]),
            "peak_rss_mb": median([r.peak_rss_bytes / 2**20 for r in ok]),
            "ok_runs": len(ok),
            "failed_runs": len(rs) - len(ok),
            "error": next((r.stderr_tail for r in rs if r.returncode), ""),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="Rounds; each runs every command once (default 5).")
    parser.add_argument("--quick", action="store_true", help="A smoke run: 2 rounds.")
    parser.add_argument("--models", nargs="+", default=CONVERSION_MODELS, choices=list(MODELS))
    parser.add_argument("--no-wait", action="store_true", help="Do not wait for other work on the machine to stop.")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="The model cache.")
    args = parser.parse_args()
    runs = 2 if args.quick else args.runs
    folder = ensure_models(args.folder, args.models)
    raw = measure(args.models, folder, runs, not args.no_wait)
    summary = {name: summarize(rs) for name, rs in raw.items()}

    rows, targets = [], {}
    for name, s in summary.items():
        ref_s, ref_mb = s[TF2ONNX]["seconds"], s[TF2ONNX]["peak_rss_mb"]
        exp_s, exp_mb = s[EXPORT]["seconds"], s[EXPORT]["peak_rss_mb"]
        for label, r in s.items():
            failed = f" ({r['failed_runs']} failed)" if r["failed_runs"] else ""
            rows.append([name, label, f"{r['seconds']:.2f}{failed}", f"{r['cpu_seconds']:.2f}",
                         f"{r['peak_rss_mb']:.0f}", ratio(ref_s, r["seconds"]), ratio(ref_mb, r["peak_rss_mb"]),
                         ratio(exp_s, r["seconds"]), ratio(exp_mb, r["peak_rss_mb"])])  # fmt: skip
        targets[name] = {
            "no_verify_speedup": ref_s / s[OURS]["seconds"],
            "no_verify_memory_ratio": ref_mb / s[OURS]["peak_rss_mb"],
            "verified_speedup": ref_s / s[VERIFIED]["seconds"],
        }
        targets[name]["met"] = {
            "10x faster (--no-verify)": targets[name]["no_verify_speedup"] >= 10,
            "4x less peak RSS (--no-verify)": targets[name]["no_verify_memory_ratio"] >= 4,
            "5x faster verified (--oracle numpy)": targets[name]["verified_speedup"] >= 5,
        }
    headers = ["model", "command", "wall s", "CPU s", "peak RSS MB", "tf2onnx s / this", "tf2onnx RSS / this",
               "export s / this", "export RSS / this"]  # fmt: skip
    print(f"\nConversion, fresh process per run, median of {runs} alternating runs (tf2onnx and Keras 3's "
          "export in the lean venv: tensorflow-cpu + tf2onnx only)\n")  # fmt: skip
    print(table(headers, rows))
    print("\nTargets (--no-verify vs lean tf2onnx: >= 10x faster, >= 4x less peak RSS; --oracle numpy >= 5x):")
    for name, t in targets.items():
        print(f"  {name}: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in t["met"].items()))
    imports = {module: import_seconds(module) for module in HEAVY_IMPORTS}
    print("\nImport time of each dependency on the command path (fresh interpreter, median of 5; a regression")
    print("such as ml_dtypes 0.7.0's 0.42 s shows here):")
    print(table(["module", "import s"], [[m, f"{t:.3f}"] for m, t in imports.items()]))
    print("\n" + environment_line())
    doc = {"runs": runs, "models": {n: MODELS[n] for n in args.models}, "summary": summary, "targets": targets}
    doc["import_seconds"] = imports
    doc["lean_venv_versions"] = lean_versions(lean_python())
    print("Lean venv (tf2onnx, Keras 3 export): " + ", ".join(f"{k} {v}" for k, v in doc["lean_venv_versions"].items()))
    doc["raw"] = raw
    print(f"\nwrote {write_results('conversion', doc, args.quick)}")


if __name__ == "__main__":
    main()
