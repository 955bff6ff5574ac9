"""The whole-config scan: refuse anything in a model config that a Keras loader would turn into code.

The topology reader only looks at the layers between the inputs and the outputs, but Keras
deserialises every object of the config: a Lambda that feeds nothing, a custom class inside a nested
model, or an activation naming ``builtins.eval`` would run when the verification hands the file to
Keras. So every value of the config is visited (iteratively: no recursion limit matters), and the
file is refused if anything in it names code:

- a ``Lambda`` (or ``TFOpLambda``/``SlicingOpLambda``) layer, a Keras 3 ``__lambda__`` object,
  a Keras 2 ``function_type`` entry (marshalled bytecode);
- a ``class_name: "function"`` object (a reference to a Python function by module and name) outside
  ``keras.activations``;
- an object whose ``module`` is not Keras' own, or whose ``registered_name`` is not its built-in class.

The training configuration (Keras 3's ``compile_config``) is skipped: it holds losses and metrics that
may be custom functions, and neither lstm-convert nor the oracle (``compile=False``) ever reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converter.errors import BadModelFile, UnsupportedLayer
from converter.keras.limits import MAX_LAYERS, MAX_NAME_CHARS, short

_LAMBDA_CLASSES = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__"})
#: Keys a Keras loader reads functions or code from.
_CODE_KEYS = frozenset({"function_type", "output_shape_type"})
#: Parts of a saved file that the oracle never deserialises (loaded with compile=False).
_SKIPPED_KEYS = frozenset({"compile_config"})


def _is_keras_module(module: object) -> bool:
    # tf_keras' own .keras files name their classes in tf_keras.src...: built in, like keras.src...
    return module is None or (isinstance(module, str) and module.split(".")[0] in ("keras", "tf_keras"))


def _is_activation_module(module: object) -> bool:
    """Keras 3 may save a built-in activation as a reference to a function of ``keras.activations``."""
    return isinstance(module, str) and module.startswith(
        ("keras.activations", "keras.src.activations", "tf_keras.activations", "tf_keras.src.activations")
    )


def _refuse_object(obj: dict[str, Any], where: str, path: Path) -> None:
    class_name = obj.get("class_name")
    config = obj.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    label = f"'{short(name, 40)[1:-1]}' " if isinstance(name, str) else ""
    if class_name in _LAMBDA_CLASSES or any(key in obj for key in _CODE_KEYS):
        raise UnsupportedLayer(
            f"{path}: {where} {label}is a Lambda (Python code in the file), which is never run, connected to the "
            "outputs or not; rebuild the model without it."
        )
    if class_name == "function" and not _is_activation_module(obj.get("module")):
        raise UnsupportedLayer(
            f"{path}: {where} names the Python function {short(obj.get('module'), 30)}.{short(config, 30)}; "
            "functions in a config are never imported or called. Use built-in Keras layers and activations."
        )
    module, registered = obj.get("module"), obj.get("registered_name")
    if not _is_keras_module(module) or registered not in (None, class_name):
        what = registered if registered not in (None, class_name) else f"{module}.{class_name}"
        raise UnsupportedLayer(
            f"{path}: {where} {label}is the custom class {short(what)}; custom classes are never loaded "
            "(that would run code from the file). Rebuild the model from built-in Keras layers."
        )


def scan_config(config: Any, path: Path) -> None:
    """Raise ``UnsupportedLayer`` if ``config`` holds code anywhere, ``BadModelFile`` past the size limits."""
    layers = 0
    stack: list[tuple[Any, str]] = [(config, "the config")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, list):
            stack.extend((item, where) for item in value)
            continue
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("class_name"), str):
            _refuse_object(value, where, path)
        name = value.get("name")
        if isinstance(name, str) and len(name) > MAX_NAME_CHARS:
            raise BadModelFile(
                f"{path}: a name in the config is {len(name)} characters long ({short(name, 40)}); "
                f"Keras names are short, so the config is damaged or crafted."
            )
        for key, item in value.items():
            if key in _SKIPPED_KEYS:
                continue
            if key == "layers" and isinstance(item, list):
                layers += len(item)
                if layers > MAX_LAYERS:
                    raise BadModelFile(
                        f"{path}: the config declares more than {MAX_LAYERS} layers; refusing it as damaged or crafted."
                    )
                stack.extend((entry, "a layer") for entry in item)
            elif isinstance(item, dict | list):
                stack.append((item, where))
