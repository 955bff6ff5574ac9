"""Run a generated PyTorch export as a user would: import the written ``.py`` in a fresh namespace, load the
written ``.safetensors`` with ``load_state_dict(strict=True)``, call the module. torch is imported here only.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import BadOptions
from converter.export.safetensors_file import read_safetensors

_COUNTER = itertools.count()


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def require_torch(what: str) -> None:
    if not torch_available():
        raise BadOptions(
            f'{what} needs PyTorch to run the generated module: pip install "lstm-convert[pytorch]", '
            "or pass --no-verify."
        )


def load_module(source: Path, weights: Path, class_name: str) -> Any:
    """The generated class from ``source`` (imported under a fresh name, not kept in ``sys.modules``) with
    the weights of ``weights``, in eval mode."""
    import torch

    spec = importlib.util.spec_from_file_location(f"_lstm_convert_export_{next(_COUNTER)}", source)
    if spec is None or spec.loader is None:
        raise BadOptions(f"{source}: cannot be imported as a Python module; name it with a .py suffix.")
    namespace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(namespace)
    with weights.open("rb") as fh:
        arrays, _ = read_safetensors(fh, str(weights))
    module = getattr(namespace, class_name)()
    module.load_state_dict({k: torch.from_numpy(a.copy()) for k, a in arrays.items()}, strict=True)
    return module.eval()


def run_module(module: Any, input_names: list[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The module's outputs on ``feeds`` (keyed by Keras input name), in output order, as NumPy arrays."""
    import torch

    with torch.no_grad():
        result = module(*(torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in input_names))
    outputs = result if isinstance(result, tuple) else (result,)
    return [out.detach().cpu().numpy() for out in outputs]
