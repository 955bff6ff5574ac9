"""Convert an LSTM with more than 2 GiB of weights to ONNX and run it in onnxruntime (issue: external data).

Run by hand: ``python benchmarks/big_lstm.py [--units 8192]``. It writes a Keras 3 ``.weights.h5`` plus its
``model.to_json()`` architecture directly with h5py (the same layout Keras writes, so no TensorFlow is
needed to make a 2 GB model), converts it with ``lstm-convert to-onnx`` in a fresh process, and reports
wall time and peak RSS of that process, the files written, and an onnxruntime run of the result.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def write_model(folder: Path, units: int, features: int, steps: int) -> tuple[Path, Path]:
    """A Sequential Input(steps, features) -> LSTM(units) -> Dense(1), in Keras 3's .weights.h5 layout."""
    config = json.loads((ROOT / "fixtures" / "keras3" / "tutorial.json").read_text())
    layers = config["config"]["layers"]
    layers[0]["config"]["batch_shape"] = [None, steps, features]
    layers[1]["config"]["units"] = units
    layers[1]["build_config"] = {"input_shape": [None, steps, features]}
    layers[2]["build_config"] = {"input_shape": [None, units]}
    config_path = folder / "big.json"
    config_path.write_text(json.dumps(config))
    weights_path = folder / "big.weights.h5"
    rng = np.random.default_rng(0)
    with h5py.File(weights_path, "w") as f:
        lstm = f.create_group("layers/lstm/cell/vars")
        for name, shape in (("0", (features, 4 * units)), ("1", (units, 4 * units))):
            data = lstm.create_dataset(name, shape=shape, dtype="f4")
            for start in range(0, shape[0], 512):  # write in slabs: never hold a second full copy
                rows = min(512, shape[0] - start)
                data[start : start + rows] = rng.standard_normal((rows, shape[1]), np.float32) * 0.02
        lstm.create_dataset("2", data=rng.standard_normal(4 * units).astype("f4") * 0.1)
        dense = f.create_group("layers/dense/vars")
        dense.create_dataset("0", data=rng.standard_normal((units, 1)).astype("f4") * 0.02)
        dense.create_dataset("1", data=np.zeros(1, "f4"))
    return weights_path, config_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--folder", type=Path, default=None, help="Where to write (default: a temp folder).")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="lstm-convert-big-"))
    weights, config = write_model(folder, args.units, args.units, args.steps)
    weight_bytes = weights.stat().st_size
    out = folder / "big.onnx"
    command = [sys.executable, "-m", "converter", "to-onnx", str(weights), "--config", str(config), "-o", str(out)]
    command += ["--force", "--oracle", "numpy", "--json"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    report = json.loads(result.stdout.splitlines()[-1]) if result.stdout else {"error": result.stderr}
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.name.startswith("big.onnx")}

    import onnxruntime as ort

    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    x = np.random.default_rng(1).standard_normal((1, args.steps, args.units)).astype(np.float32)
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    summary = {
        "units": args.units,
        "weight_bytes": weight_bytes,
        "convert_seconds": round(seconds, 2),
        "convert_peak_rss_bytes": peak,
        "peak_rss_over_weights": round(peak / weight_bytes, 2),
        "files": files,
        "verification_passed": report.get("passed"),
        "worst_abs_error": report.get("worst_abs_error"),
        "ort_load_seconds": round(load_s, 2),
        "ort_output_shape": list(y.shape),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
