"""Rules that changed between Keras versions and that the file's own version decides.

- Masked ``Bidirectional(return_sequences=True)``: tf.keras (every version) and Keras >= 2.4 write zeros
  at a masked step in both directions; standalone multi-backend Keras 2.2 and 2.3 repeat each direction's
  previous output there (measured with Keras 2.2.4 and 2.3.1 on Theano). tf.keras 1.x files say
  ``2.2.4-tf``: those follow tf.keras.
"""

from __future__ import annotations

import re
from typing import Any

#: The key a Bidirectional config gets when its file's Keras repeats outputs at masked steps.
REPEAT_KEY = "zero_output_for_mask"


def version_tuple(version: str) -> tuple[int, ...] | None:
    """``"2.3.1"`` -> (2, 3, 1); None for a version string of another shape (``2.2.4-tf`` included)."""
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", version.strip())
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def repeats_masked_bidirectional(version: str) -> bool:
    """Whether the standalone Keras that wrote a file repeats outputs at masked Bidirectional steps."""
    parsed = version_tuple(version)
    return parsed is not None and parsed[0] == 2 and parsed < (2, 4)


def apply_version_rules(config: dict[str, Any], version: str) -> dict[str, Any]:
    """Mark the config's Bidirectional layers with the masked-step rule of the Keras that wrote it."""
    if not repeats_masked_bidirectional(version):
        return config
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    for entry in layers if isinstance(layers, list) else []:
        if (
            isinstance(entry, dict)
            and entry.get("class_name") == "Bidirectional"
            and isinstance(entry.get("config"), dict)
        ):
            entry["config"][REPEAT_KEY] = False
    return config
