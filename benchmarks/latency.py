"""Inference latency: lstm-convert's ONNX graph vs tf2onnx's and Keras 3 export's, in onnxruntime and OpenVINO.

Run: ``python benchmarks/latency.py [--quick]``. onnxruntime runs with 2 intra-op threads, sequential
execution; OpenVINO's CPU plugin with 2 threads, float32, one stream; Keras (TensorFlow backend) with 2
intra-op threads, in the same process. For each model and batch size (1, 64) every runner is warmed up,
then the runners take turns, round after round, each timing a stretch of calls; the table shows the
median call. It also records the op types of each graph and checks every output against Keras on inputs
with masked (zero) steps, in both runtimes. Writes ``benchmarks/results/latency.json``.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from common import (
    GRAPHS,
    THREADS,
    Runner,
    bench,
    environment_line,
    export_graph,
    fmt_ms,
    openvino_runner,
    ort_runner,
    session,
    table,
    timing_arguments,
    wait_for_idle,
    write_results,
)
from models import MODELS, ensure_models

LATENCY_MODELS = ["lstm", "gru", "simple_rnn", "masked_lstm"]
BATCHES = (1, 64)
RECURRENT_OPS = ("LSTM", "GRU", "RNN", "Loop", "Scan")


def op_types(path: Path) -> dict[str, object]:
    """Op counts of the main graph, and the recurrent ones counted in subgraphs too."""
    model = onnx.load(str(path), load_external_data=False)
    top = Counter(node.op_type for node in model.graph.node)
    everywhere: Counter[str] = Counter()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            everywhere[node.op_type] += 1
            for attr in node.attribute:
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    walk(sub)

    walk(model.graph)
    return {
        "nodes": dict(sorted(top.items())),
        "recurrent": {op: top[op] for op in RECURRENT_OPS if top[op]},
        "nodes_including_subgraphs": sum(everywhere.values()),
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
    }


def test_input(batch: int, steps: int, features: int, seed: int = 1) -> np.ndarray:
    """Seeded standard-normal inputs (no zero steps, so a masked model runs every step)."""
    return np.random.default_rng(seed).standard_normal((batch, steps, features)).astype(np.float32)


def masked_input(steps: int, features: int) -> np.ndarray:
    """Four samples for the output check: pre-padded, post-padded, with a hole, and without masked steps."""
    x = test_input(4, steps, features, seed=2)
    x[0, : steps // 4] = 0  # pre-padded, as pad_sequences makes it
    x[1, -steps // 4 :] = 0  # post-padded
    x[2, steps // 3 : steps // 2] = 0  # a hole
    return x


def keras_runners(path: Path) -> tuple[object, dict[str, Runner]]:
    import keras

    model = keras.saving.load_model(path)
    return model, {
        "Keras predict": lambda x: model.predict(x, verbose=0),
        "Keras predict_on_batch": lambda x: model.predict_on_batch(x),
    }


def main() -> None:
    args = timing_arguments(__doc__, LATENCY_MODELS)
    rounds, budget = (2, 0.05) if args.quick else (args.rounds, args.budget)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    folder = ensure_models(args.folder, args.models)
    graphs_folder = folder / "onnx"
    graphs_folder.mkdir(exist_ok=True)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    results: dict[str, dict] = {}
    rows = []
    for name in args.models:
        steps, features, what = MODELS[name]
        print(f"{name}: exporting graphs", file=sys.stderr)
        paths = {label: export_graph(label, folder / name, graphs_folder) for label in GRAPHS}
        sessions = {label: session(p) for label, p in paths.items()}
        model, keras_fns = keras_runners(folder / f"{name}.keras")
        runners = {label: ort_runner(s) for label, s in sessions.items()}
        refused: dict[str, str] = {}  # OpenVINO cannot load some of their Loop graphs
        for label, p in paths.items():
            try:
                runners[f"{label} [OpenVINO]"] = openvino_runner(p)
            except RuntimeError as error:
                refused[label] = next((ln for ln in str(error).splitlines() if ln.startswith("-- ")), str(error)[-200:])
        runners |= keras_fns
        check = masked_input(steps, features)
        expected = np.asarray(model.predict(check, verbose=0))
        entry: dict = {"what": what, "graphs": {}, "batches": {}}
        for label, p in paths.items():
            got = np.asarray(runners[label](check))
            ov_run = runners.get(f"{label} [OpenVINO]")
            ov_error = float(np.abs(np.asarray(ov_run(check)) - expected).max()) if ov_run else None
            entry["graphs"][label] = op_types(p) | {
                "file_bytes": p.stat().st_size,
                "max_abs_error_vs_keras": float(np.abs(got - expected).max()),
                "max_abs_error_vs_keras_openvino": ov_error,
                "openvino_refused": refused.get(label),
            }
        for batch in BATCHES:
            wait_for_idle(not args.no_wait)
            print(f"{name}: batch {batch}", file=sys.stderr)
            timed = bench(runners, test_input(batch, steps, features), rounds, budget)
            entry["batches"][str(batch)] = timed
            for label, t in timed.items():
                ours = timed["lstm-convert [OpenVINO]" if "OpenVINO" in label else "lstm-convert"]["median_ms"]
                graph = entry["graphs"].get(label.removesuffix(" [OpenVINO]"))
                ops = ", ".join(f"{v} {k}" for k, v in graph["recurrent"].items()) if graph else "TensorFlow"
                ops = ops or "none (unrolled)"
                speed = f"{t['median_ms'] / ours:.2f}x"
                rows.append([name, batch, label, ops, fmt_ms(t["median_ms"]), speed])
        results[name] = entry
        del model

    targets = evaluate(results)
    print(f"\nInference latency, median call, onnxruntime {ort.__version__} and OpenVINO with {THREADS} threads\n")
    headers = ["model", "batch", "runner", "recurrent ops", "median ms", "time / lstm-convert (same runtime)"]
    print(table(headers, rows))
    print("\nGraph check against Keras on inputs with masked steps (max abs error):")
    for name, entry in results.items():
        errors = ", ".join(
            f"{label} {g['max_abs_error_vs_keras']:.1e} (OpenVINO "
            + (f"{e:.1e})" if (e := g["max_abs_error_vs_keras_openvino"]) is not None else "refused it)")
            for label, g in entry["graphs"].items()
        )
        print(f"  {name}: {errors}")
    print("\nTargets:")
    for line in targets["lines"]:
        print("  " + line)
    print("\n" + environment_line())
    doc = {"rounds": rounds, "budget_seconds": budget, "threads": THREADS, "results": results, "targets": targets}
    print(f"\nwrote {write_results('latency', doc, args.quick)}")


def evaluate(results: dict[str, dict]) -> dict:
    """Issue 15's goal: in each runtime, at batch 1 and 64, ours / the fastest of tf2onnx's and Keras' graphs
    for the same model <= 1.0 (median calls of one run)."""
    lines, checks = [], {}
    for name, entry in results.items():
        for batch, timed in entry["batches"].items():
            for runtime, suffix in (("onnxruntime", ""), ("OpenVINO", " [OpenVINO]")):
                ours = timed[f"lstm-convert{suffix}"]["median_ms"]
                theirs = {
                    g: timed[f"{g}{suffix}"]["median_ms"]
                    for g in entry["graphs"]
                    if g != "lstm-convert" and f"{g}{suffix}" in timed  # OpenVINO refuses some of theirs
                }
                if not theirs:
                    lines.append(f"{name} batch {batch} {runtime}: no graph of theirs loads; nothing to compare")
                    continue
                best = min(theirs, key=theirs.__getitem__)
                share = ours / theirs[best]
                met = share <= 1.0
                checks[f"{name} batch {batch} {runtime}"] = {"ours_over_best": share, "best": best, "met": met}
                lines.append(
                    f"{name} batch {batch} {runtime}: ours {fmt_ms(ours)} ms / {best} {fmt_ms(theirs[best])} ms"
                    f" = {share:.2f}, need <= 1.0: {'met' if met else 'MISSED'}"
                )
    return {"checks": checks, "lines": lines}


if __name__ == "__main__":
    main()
