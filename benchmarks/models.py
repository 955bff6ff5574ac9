"""Build the benchmark models once with real Keras, into a cache folder (default ``benchmarks/.models/``).

Run: ``python benchmarks/models.py [--folder DIR] [--force]``; the other benchmarks call :func:`ensure_models`.

Each model is built with Keras 3 (saved as ``NAME.keras``) and, with the very same weights, with Keras 2
through ``tf_keras`` (saved as ``NAME.h5``), the form the tf2onnx command line can read. Nothing here is
imported by the timed commands: building needs TensorFlow, converting with lstm-convert does not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_FOLDER = HERE / ".models"

#: name -> (time steps, features, what it is); the builders are below.
MODELS: dict[str, tuple[int, int, str]] = {
    "tutorial": (4, 3, "LSTM(5) -> Dense(1)"),
    "lstm": (100, 64, "2 x LSTM(256) -> Dense(10)"),
    "gru": (100, 64, "2 x GRU(256) -> Dense(10)"),
    "masked_lstm": (100, 64, "Masking -> 2 x LSTM(256) -> Dense(10)"),
    "simple_rnn": (100, 64, "2 x SimpleRNN(256) -> Dense(10)"),
    # the layers around the recurrent ones (convolutions, attention): latency.py --models cnn_lstm ...
    "cnn_lstm": (100, 64, "Conv1D(64, 3, relu) -> MaxPooling1D(2) -> LSTM(128) -> Dense(10)"),
    "causal_cnn_lstm": (100, 64, "2 x causal Conv1D(64, 3, dilation 2) -> LSTM(128) -> Dense(10)"),
    "bilstm_attention": (100, 64, "Bi-LSTM(64) -> Attention (self) -> GlobalAveragePooling1D -> Dense(10)"),
    "bilstm_mha": (
        100,
        64,
        "Bi-LSTM(64) -> MultiHeadAttention(4 heads, key_dim 32) -> GlobalAveragePooling1D -> Dense(10)",
    ),
}
AROUND_RNN = ["cnn_lstm", "causal_cnn_lstm", "bilstm_attention", "bilstm_mha"]


def _build_around(k: ModuleType, name: str) -> Any:
    """The models of convolutions and attention around recurrent layers (functional where they need it)."""
    steps, features, _ = MODELS[name]
    L = k.layers
    x = k.Input(shape=(steps, features))
    if name == "cnn_lstm":
        y = L.LSTM(128)(L.MaxPooling1D(2)(L.Conv1D(64, 3, activation="relu")(x)))
    elif name == "causal_cnn_lstm":
        h = L.Conv1D(64, 3, padding="causal", dilation_rate=2, activation="relu")(x)
        y = L.LSTM(128)(L.Conv1D(64, 3, padding="causal", dilation_rate=2, activation="relu")(h))
    else:
        h = L.Bidirectional(L.LSTM(64, return_sequences=True))(x)
        attended = L.Attention()([h, h]) if name == "bilstm_attention" else L.MultiHeadAttention(4, 32)(h, h)
        y = L.GlobalAveragePooling1D()(attended)
    return k.Model(x, L.Dense(10)(y), name=name)


def _build(k: ModuleType, name: str) -> Any:
    if name in AROUND_RNN:
        return _build_around(k, name)
    steps, features, _ = MODELS[name]
    layers = k.layers
    stack: list[Any]
    if name == "tutorial":
        stack = [layers.LSTM(5), layers.Dense(1)]
    else:
        cell = {"lstm": layers.LSTM, "masked_lstm": layers.LSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}
        rnn = cell[name]
        stack = [rnn(256, return_sequences=True), rnn(256), layers.Dense(10)]
        if name == "masked_lstm":
            stack.insert(0, layers.Masking(mask_value=0.0))
    return k.Sequential([k.Input(shape=(steps, features)), *stack], name=name)


def _build_all(folder: Path, names: list[str]) -> None:
    """Runs in a child process: TensorFlow stays out of the caller."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import keras
    import numpy as np

    try:
        import tf_keras
    except ImportError:  # no Keras 2: no .h5, and the benchmarks skip tf2onnx's Keras 2 route
        tf_keras = None

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        keras.utils.set_random_seed(0)
        model3 = _build(keras, name)
        rng = np.random.default_rng(0)
        # Glorot weights plus non-zero biases, so that every parameter matters.
        weights = [w + rng.normal(scale=0.05, size=w.shape).astype(np.float32) for w in model3.get_weights()]
        model3.set_weights(weights)
        model3.save(folder / f"{name}.keras")
        print(f"built {name}.keras: {model3.count_params()} parameters")
        if tf_keras is not None:
            model2 = _build(tf_keras, name)
            model2.set_weights(weights)
            model2.save(folder / f"{name}.h5")
            steps, features, _ = MODELS[name]
            x = rng.standard_normal((2, steps, features)).astype(np.float32)
            gap = float(np.abs(model3.predict(x, verbose=0) - model2.predict(x, verbose=0)).max())
            print(f"built {name}.h5 with tf_keras, the same weights: Keras 3 vs Keras 2 max diff {gap:.1e}")


def ensure_models(folder: Path = DEFAULT_FOLDER, names: list[str] | None = None, force: bool = False) -> Path:
    """Build whichever of ``names`` (default: all) is missing from ``folder``; return the folder."""
    wanted = names or list(MODELS)
    suffixes = (".keras", ".h5") if importlib.util.find_spec("tf_keras") else (".keras",)
    missing = [n for n in wanted if force or not all((folder / f"{n}{s}").exists() for s in suffixes)]
    if missing:
        subprocess.run([sys.executable, __file__, "--_build", json.dumps([str(folder), missing])], check=True)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--force", action="store_true", help="Rebuild even if the files exist.")
    parser.add_argument("--_build", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._build:
        folder, names = json.loads(args._build)
        _build_all(Path(folder), names)
        return
    ensure_models(args.folder, force=args.force)
    for name, (steps, features, what) in MODELS.items():
        print(f"{args.folder / name}.keras|.h5: {what} on {steps} steps of {features} features")


if __name__ == "__main__":
    main()
