"""Run a generated standalone NumPy script as a user would: in a fresh Python process that can import only
the standard library and NumPy (``converter``, Keras, torch ... are refused), with the inputs and the
outputs passed through ``.npz`` files in a temporary folder. Nothing of the script runs in this process.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from converter.errors import VerificationFailed

#: The child: NumPy first, then every other non-stdlib import is refused, then the script is imported
#: from its path and ``predict`` called once per call file, in order (a stateful model carries states).
RUNNER = r"""
import importlib.abc, importlib.util, sys
import numpy as np

class OnlyNumpy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top == "numpy" or top.startswith("_"):
            return None
        raise ImportError(f"the standalone script imported {name!r}; it may import only numpy and the stdlib")

sys.meta_path.insert(0, OnlyNumpy())
script, folder, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = importlib.util.spec_from_file_location("standalone_model", script)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
states = {}
for k in range(calls):
    with np.load(f"{folder}/in{k}.npz", allow_pickle=False) as f:
        inputs = [f[f"arg{j}"] for j in range(len(f.files))]
    result = module.predict(*inputs, states=states)
    outputs = result if isinstance(result, tuple) else (result,)
    np.savez(f"{folder}/out{k}.npz", **{f"out{j}": np.asarray(y) for j, y in enumerate(outputs)})
"""


def run_script(script: Path, input_names: list[str], calls: list[Mapping[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """The script's outputs for each call (feeds keyed by Keras input name), calls made in one process
    with one ``states`` dict. Raises ``VerificationFailed`` with the child's last error line if it fails."""
    with tempfile.TemporaryDirectory(prefix="lstm-convert-py-") as folder:
        for k, feeds in enumerate(calls):
            np.savez(f"{folder}/in{k}.npz", **{f"arg{j}": feeds[name] for j, name in enumerate(input_names)})
        done = subprocess.run(
            [sys.executable, "-I", "-c", RUNNER, str(script), folder, str(len(calls))],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise VerificationFailed(f"{script}: the generated script failed when run: {last}")
        results = []
        for k in range(len(calls)):
            with np.load(f"{folder}/out{k}.npz", allow_pickle=False) as f:
                results.append([f[f"out{j}"] for j in range(len(f.files))])
        return results
