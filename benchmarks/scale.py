"""Scale: conversion time and peak RSS of ``lstm-convert to-onnx`` for LSTMs of hidden size 1024, 4096 and 8192.

Run: ``python benchmarks/scale.py [--quick] [--folder DIR]``. The models (input = hidden = units, 4 steps,
Dense(1) head; 8192 is ~2.1 GB of float32 weights) are written without TensorFlow by
``big_lstm.write_model`` as a Keras 3 ``.weights.h5`` plus its ``model.to_json()``. Each conversion is a fresh
process (wall time, the child's own peak RSS), without verification (``--no-verify --oracle numpy``: the
conversion alone) and with it (``--oracle numpy``: the export is run in onnxruntime against the NumPy
runtime), alternating. The largest export is then loaded and run in onnxruntime in a fresh process.
Writes ``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from big_lstm import write_model
from common import Run, environment_line, median, run_process, table, tool, wait_for_idle, write_results

SIZES = (1024, 4096, 8192)
STEPS = 4
RSS_TARGET = 1.5  # peak RSS / weight bytes
VARIANTS = {"convert only": ["--no-verify", "--oracle", "numpy"], "convert + verify": ["--oracle", "numpy"]}
ORT_RUN = """
import json, sys, time
import numpy as np, onnxruntime as ort
t0 = time.perf_counter()
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
t1 = time.perf_counter()
x = np.random.default_rng(1).standard_normal((1, int(sys.argv[2]), int(sys.argv[3]))).astype(np.float32)
y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
t2 = time.perf_counter()
print(json.dumps({"load_seconds": t1 - t0, "run_seconds": t2 - t1, "shape": list(y.shape),
                  "finite": bool(np.isfinite(y).all())}))
"""


def weight_bytes(units: int) -> int:
    """float32 bytes of LSTM(units) on ``units`` features plus Dense(1)."""
    return 4 * (2 * units * 4 * units + 4 * units + units + 1)


def convert(weights: Path, config: Path, out: Path, flags: list[str]) -> Run:
    argv = [tool("lstm-convert"), "to-onnx", str(weights), "--config", str(config), "-o", str(out), "--force"]
    return run_process([*argv, *flags])


def linearity(points: list[tuple[int, float]]) -> dict[str, float]:
    """Least-squares ``seconds = fixed + per_byte * bytes`` and the per-byte slope between successive sizes."""
    n = len(points)
    mean_b = sum(b for b, _ in points) / n
    mean_s = sum(s for _, s in points) / n
    per_byte = sum((b - mean_b) * (s - mean_s) for b, s in points) / sum((b - mean_b) ** 2 for b, _ in points)
    fixed = mean_s - per_byte * mean_b
    slopes = [(s2 - s1) / (b2 - b1) for (b1, s1), (b2, s2) in itertools.pairwise(points)]
    worst = max(abs(s - (fixed + per_byte * b)) / s for b, s in points)
    return {"fixed_seconds": fixed, "seconds_per_gb": per_byte * 1e9, "worst_residual_fraction": worst} | {
        f"slope_{i}_seconds_per_gb": slope * 1e9 for i, slope in enumerate(slopes)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run: sizes 1024 and 2048, 1 round.")
    parser.add_argument("--runs", type=int, default=5, help="Rounds (default 5).")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--folder", type=Path, default=None, help="Where to write the models (default: a temp folder).")
    parser.add_argument("--no-wait", action="store_true", help="Do not wait for other work on the machine to stop.")
    parser.add_argument("--keep", action="store_true", help="Keep the models and exports.")
    args = parser.parse_args()
    sizes, runs = ((1024, 2048), 1) if args.quick else (tuple(args.sizes), args.runs)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="lstm-convert-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the temp folder (GBs) is removed
    try:
        results = measure(folder, sizes, runs, not args.no_wait)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    report(results, sizes, runs, args.quick)


def measure(folder: Path, sizes: tuple[int, ...], runs: int, wait: bool) -> dict:
    models = {}
    for units in sizes:
        sub = folder / str(units)
        sub.mkdir(exist_ok=True)
        print(f"writing LSTM({units}) ...", file=sys.stderr)
        models[units] = write_model(sub, units, units, STEPS)
    raw: dict[int, dict[str, list[Run]]] = {u: {v: [] for v in VARIANTS} for u in sizes}
    for round_ in range(runs):
        wait_for_idle(wait)
        for units, (weights, config) in models.items():
            for variant, flags in VARIANTS.items():
                run = convert(weights, config, folder / str(units) / "big.onnx", flags)
                raw[units][variant].append(run)
                status = "ok" if run.returncode == 0 else f"exit {run.returncode}: {run.stderr_tail[-300:]}"
                print(f"[{round_ + 1}/{runs}] LSTM({units}) {variant:16} {run.seconds:7.2f} s "
                      f"{run.peak_rss_bytes / 2**20:7.0f} MB {status}", file=sys.stderr)  # fmt: skip
    results: dict = {"sizes": {}}
    for units in sizes:
        out = folder / str(units) / "big.onnx"
        files = {p.name: p.stat().st_size for p in out.parent.iterdir() if p.name.startswith("big.onnx")}
        entry: dict = {"weight_bytes": weight_bytes(units), "weights_file_bytes": models[units][0].stat().st_size}
        entry["export_files"] = files
        for variant, rs in raw[units].items():
            ok = [r for r in rs if r.returncode == 0]
            entry[variant] = {
                "seconds": median([r.seconds for r in ok]),
                "cpu_seconds": median([r.cpu_seconds for r in ok]),
                "peak_rss_bytes": median([r.peak_rss_bytes for r in ok]),
                "ok_runs": len(ok),
                "error": next((r.stderr_tail for r in rs if r.returncode), ""),
            }
        results["sizes"][str(units)] = entry
    largest = max(sizes)
    out = folder / str(largest) / "big.onnx"
    if out.exists():
        run = run_process([sys.executable, "-c", ORT_RUN, str(out), str(STEPS), str(largest)])
        doc = {"error": run.stderr_tail} if run.returncode else json.loads(run.stdout_tail.strip().splitlines()[-1])
        results["onnxruntime_run"] = {"units": largest, "peak_rss_bytes": run.peak_rss_bytes, **doc}
    return results


def report(results: dict, sizes: tuple[int, ...], runs: int, quick: bool) -> None:
    rows, targets = [], {}
    for units in sizes:
        e = results["sizes"][str(units)]
        wb = e["weight_bytes"]
        external = any(name.endswith(".data") for name in e["export_files"])
        for variant in VARIANTS:
            r = e[variant]
            ns_per_byte = r["seconds"] / wb * 1e9
            rss = r["peak_rss_bytes"] / wb
            rows.append([f"LSTM({units})", f"{wb / 1e6:.0f}", variant, f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}",
                         f"{ns_per_byte:.2f}", f"{r['peak_rss_bytes'] / 2**20:.0f}", f"{rss:.2f}",
                         "yes" if external else "no"])  # fmt: skip
        targets[f"LSTM({units}) peak RSS <= {RSS_TARGET}x weights (convert only)"] = (
            e["convert only"]["peak_rss_bytes"] / wb <= RSS_TARGET
        )
        targets[f"LSTM({units}) peak RSS <= {RSS_TARGET}x weights (convert + verify)"] = (
            e["convert + verify"]["peak_rss_bytes"] / wb <= RSS_TARGET
        )
    sized = [results["sizes"][str(u)] for u in sizes]
    fits = {}
    if len(sized) > 1:  # a line needs two sizes
        fits = {v: linearity([(e["weight_bytes"], e[v]["seconds"]) for e in sized]) for v in VARIANTS}
    for variant, fit in fits.items():
        slopes = [v for k, v in fit.items() if k.startswith("slope_")]
        targets[f"time linear in bytes ({variant}): successive slopes within 1.5x"] = (
            max(slopes) <= 1.5 * min(slopes) and min(slopes) > 0
        )
    largest = str(max(sizes))
    ort_run = results.get("onnxruntime_run", {})
    targets[f"LSTM({largest}) written with external data"] = any(
        n.endswith(".data") for n in results["sizes"][largest]["export_files"]
    )
    targets[f"LSTM({largest}) runs in onnxruntime"] = bool(ort_run.get("finite"))
    results["linearity"] = fits
    results["targets"] = targets

    print(f"\nConversion at scale (lstm-convert to-onnx, fresh process, median of {runs} alternating runs)\n")
    headers = ["model", "weights MB", "run", "wall s", "CPU s", "ns / byte", "peak RSS MB", "RSS / weights",
               "external data"]  # fmt: skip
    print(table(headers, rows))
    for variant, fit in fits.items():
        slopes = ", ".join(f"{v:.2f}" for k, v in fit.items() if k.startswith("slope_"))
        print(f"\n{variant}: seconds = {fit['fixed_seconds']:.2f} + {fit['seconds_per_gb']:.2f} per GB "
              f"(successive slopes {slopes} s/GB; worst residual {fit['worst_residual_fraction']:.0%})")  # fmt: skip
    if ort_run:
        print(f"\nonnxruntime on LSTM({largest}): {json.dumps(ort_run)}")
    print("\nTargets:")
    for name, met in targets.items():
        print(f"  {name}: {'met' if met else 'MISSED'}")
    print("\n" + environment_line())
    print(f"\nwrote {write_results('scale', {'runs': runs, 'steps': STEPS, **results}, quick)}")


if __name__ == "__main__":
    main()
