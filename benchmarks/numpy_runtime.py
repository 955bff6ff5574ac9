"""lstm-convert's NumPy runtime (``converter.load(path).predict(x)``) vs onnxruntime on our ONNX export.

Run: ``python benchmarks/numpy_runtime.py [--quick]``. Same models, same inputs; onnxruntime with 2 intra-op
threads, NumPy with its BLAS' default threads (2 here). Warm-up, then alternating rounds, median call.
Writes ``benchmarks/results/numpy_runtime.json``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from common import (
    THREADS,
    bench,
    environment_line,
    export_graph,
    fmt_ms,
    ort_runner,
    session,
    table,
    timing_arguments,
    wait_for_idle,
    write_results,
)
from models import MODELS, ensure_models

import converter

NUMPY_MODELS = ["tutorial", "lstm", "gru", "simple_rnn", "masked_lstm"]
BATCHES = (1, 64)
TARGET = 2.5  # NumPy within this factor of onnxruntime at batch 64


def blas() -> str:
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{deps['name']} {deps.get('version', '')}".strip()
    except Exception:  # the layout of show_config differs between NumPy versions
        return "unknown"


def main() -> None:
    args = timing_arguments(__doc__, NUMPY_MODELS)
    rounds, budget = (2, 0.05) if args.quick else (args.rounds, args.budget)
    folder = ensure_models(args.folder, args.models)
    (folder / "onnx").mkdir(exist_ok=True)

    results, rows, targets = {}, [], {}
    for name in args.models:
        steps, features, what = MODELS[name]
        graph = export_graph("lstm-convert", folder / name, folder / "onnx")
        started = time.perf_counter()
        model = converter.load(folder / f"{name}.keras")
        load_s = time.perf_counter() - started
        runners = {"onnxruntime": ort_runner(session(graph)), "NumPy runtime": model.predict}
        entry: dict = {"what": what, "load_seconds": load_s, "batches": {}}
        for batch in BATCHES:
            wait_for_idle(not args.no_wait)
            print(f"{name}: batch {batch}", file=sys.stderr)
            x = np.random.default_rng(1).standard_normal((batch, steps, features)).astype(np.float32)
            gap = float(np.abs(np.asarray(runners["NumPy runtime"](x)) - runners["onnxruntime"](x)).max())
            timed = bench(runners, x, rounds, budget)
            slower = timed["NumPy runtime"]["median_ms"] / timed["onnxruntime"]["median_ms"]
            entry["batches"][str(batch)] = timed | {"numpy_over_ort": slower, "max_abs_difference": gap}
            ort_ms, numpy_ms = timed["onnxruntime"]["median_ms"], timed["NumPy runtime"]["median_ms"]
            rows.append([name, batch, fmt_ms(ort_ms), fmt_ms(numpy_ms), f"{slower:.2f}x", f"{gap:.1e}"])
            if batch == 64:
                targets[name] = {"numpy_over_ort": slower, "needed_at_most": TARGET, "met": slower <= TARGET}
        results[name] = entry

    print(f"\nNumPy runtime vs onnxruntime ({THREADS} threads) on lstm-convert's export, median call\n")
    headers = ["model", "batch", "onnxruntime ms", "NumPy ms", "NumPy / onnxruntime", "max abs diff"]
    print(table(headers, rows))
    print(f"\nTarget (NumPy within {TARGET}x of onnxruntime at batch 64):")
    for name, t in targets.items():
        print(f"  {name}: {t['numpy_over_ort']:.2f}x {'met' if t['met'] else 'MISSED'}")
    print(f"\n{environment_line()} BLAS: {blas()}.")
    doc = {"rounds": rounds, "budget_seconds": budget, "blas": blas(), "results": results, "targets": targets}
    print(f"\nwrote {write_results('numpy_runtime', doc, args.quick)}")


if __name__ == "__main__":
    main()
