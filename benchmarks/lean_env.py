"""The anchors' own environment: a venv with only what a tf2onnx user installs, built once and cached.

tf2onnx and Keras 3's ``model.export(format="onnx")`` (which calls tf2onnx) are timed in this venv, not in
the benchmark's own environment: there, full tensorflow, tf_keras and Keras 3 side by side make every
TensorFlow import slower (7-8 s per conversion of the 2 x LSTM(256) model instead of 3.4-4.3 s). A user of
tf2onnx runs ``pip install tensorflow-cpu tf2onnx``; tensorflow-cpu brings Keras 3, which tf2onnx's
``--keras`` route and ``model.export`` load the ``.keras`` file with. Keras is pinned to the version that
wrote the benchmark models.

Run ``python benchmarks/lean_env.py`` to build it ahead (about a minute and ~1.5 GB under
``benchmarks/.venvs/``, which .gitignore keeps out of the repository); the benchmarks build it on first use.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
LEAN = VENVS / "tf2onnx-lean"
#: what ``pip install tensorflow-cpu tf2onnx`` resolves to here, pinned so that figures can be compared
REQUIREMENTS = ["tensorflow-cpu==2.21.0", "tf2onnx==1.17.0", "keras==3.15.1"]
_MARKER = LEAN / "lstm-convert-bench.json"


def lean_python(folder: Path = LEAN) -> Path:
    """The lean venv's interpreter, building the venv first when it is missing or its pins changed."""
    marker = folder / _MARKER.name
    python = folder / "bin" / "python"
    if python.exists() and marker.exists() and json.loads(marker.read_text()) == REQUIREMENTS:
        return python
    print(f"building the anchors' venv {folder} (once): pip install {' '.join(REQUIREMENTS)}", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *REQUIREMENTS]
    subprocess.run(pip, check=True)
    marker.write_text(json.dumps(REQUIREMENTS))
    return python


def lean_versions(python: Path) -> dict[str, str]:
    """The versions installed in the lean venv (recorded beside the results)."""
    names = ["tensorflow-cpu", "tf2onnx", "keras", "onnx", "numpy", "protobuf"]
    code = (
        "import json, sys; from importlib import metadata as m\n"
        "def v(n):\n try: return m.version(n)\n except m.PackageNotFoundError: return 'not installed'\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    done = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


if __name__ == "__main__":
    py = lean_python()
    print(py, lean_versions(py))
