"""Run a written ``.onnx`` file in onnxruntime the way verification and tests need it."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def session(path: Path, threads: int = 2, lean: bool = False):
    """A CPU session. ``lean`` turns weight prepacking off: onnxruntime otherwise keeps a second, repacked
    copy of every recurrent kernel, 1 GB more for an 8192-unit LSTM (the results differ in rounding only)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if lean:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(
    path: Path, feeds: dict[str, np.ndarray], states: dict[str, np.ndarray] | None = None, lean: bool = False
) -> dict[str, np.ndarray]:
    """Outputs by name. Only the model's own inputs are fed (plus ``states``); state inputs default to zeros."""
    sess = session(path, lean=lean)
    # State inputs that default to zeros are listed as overridable initializers, not as inputs.
    wanted = {i.name: i.type for i in [*sess.get_inputs(), *sess.get_overridable_initializers()]}
    arrays = {}
    for name, value in {**feeds, **(states or {})}.items():
        if name in wanted:
            arrays[name] = value.astype(np.int64 if "int64" in wanted[name] else np.float32, copy=False)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, arrays), strict=True))
