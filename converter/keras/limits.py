"""Limits that keep a hostile or damaged file from exhausting memory, time or the interpreter's stack.

Every limit is far above what a real Keras model reaches (the fixtures' configs nest 11 levels deep,
the largest laptop-sized recurrent models hold a few GiB of weights), and each is checked on declared
sizes before anything of that size is allocated.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import BadModelFile, BadOptions

#: Default for ``--max-weights-gb``: weights past this need more memory than a laptop has to convert.
DEFAULT_MAX_WEIGHTS_GB = 8.0
#: A config or metadata document larger than this is not a Keras config.
MAX_JSON_BYTES = 64 * 1024 * 1024
#: JSON nesting deeper than this is refused before parsing (a real config nests ~10-30 levels).
MAX_JSON_DEPTH = 200
#: Layer entries in one config (nested models included).
MAX_LAYERS = 20_000
#: Characters in a layer or model name.
MAX_NAME_CHARS = 1024
#: A single dimension of a declared shape (an input, a layer size).
MAX_DIMENSION = 2**31 - 1

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = frozenset(b"[{")


def short(value: object, limit: int = 60, tail: bool = False) -> str:
    """``repr(value)`` cut to ``limit`` characters, so that an error message stays one short line;
    ``tail`` keeps the end (of a path: the file name).

    >>> short("/a/very/long/folder/secret.bin", 20, tail=True)
    "...older/secret.bin'"
    """
    if isinstance(value, str):
        value = value[-(limit + 1) :] if tail else value[: limit + 1]
    text = repr(value)
    if len(text) <= limit:
        return text
    return "..." + text[3 - limit :] if tail else text[: limit - 3] + "..."


def json_depth(data: bytes) -> int:
    """The deepest bracket nesting of a JSON text, found without parsing it (strings are skipped).

    >>> json_depth(b'{"a": [1, {"b": "[[["}]}')
    3
    """
    stripped = np.frombuffer(_STRING.sub(b'""', data), np.uint8)
    if not stripped.size:
        return 0
    opens = (stripped == ord("[")) | (stripped == ord("{"))
    closes = (stripped == ord("]")) | (stripped == ord("}"))
    steps = opens.astype(np.int64) - closes.astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def parse_json(text: bytes | str, what: str, path: Path) -> Any:
    """``json.loads`` with a size and a nesting limit, so that no document can exhaust the stack."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if len(data) > MAX_JSON_BYTES:
        raise BadModelFile(f"{path}: {what} is {len(data)} bytes, more than a Keras config holds.")
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise BadModelFile(
            f"{path}: {what} nests {depth} levels deep (a Keras config nests a few dozen at most); refusing it."
        )
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadModelFile(f"{path}: {what} is not valid JSON ({short(str(exc), 120)}).") from None


def max_weight_bytes(max_weights_gb: float | None) -> int:
    """``--max-weights-gb`` in bytes (``None``: the default)."""
    gb = DEFAULT_MAX_WEIGHTS_GB if max_weights_gb is None else max_weights_gb
    if not isinstance(gb, int | float) or isinstance(gb, bool) or not gb > 0:
        raise BadOptions(f"--max-weights-gb {gb!r}: give a positive number of GiB.")
    return int(gb * 2**30)


def too_big(path: Path | str, what: str, nbytes: int, limit: int) -> BadModelFile:
    """The refusal for a model whose weights would need more memory than ``--max-weights-gb`` allows."""
    need = nbytes / 2**30
    return BadModelFile(
        f"{path}: {what} needs {need:.1f} GiB of weights, more than the {limit / 2**30:g} GiB allowed; "
        f"pass --max-weights-gb {int(need) + 1} to allow it."
    )


def check_dimension(value: object, path: Path, where: str) -> int | None:
    """A declared dimension: ``None`` (open) or an integer in 1..MAX_DIMENSION."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadModelFile(f"{path}: {where} has a dimension {short(value)}, not an integer.")
    if not 1 <= value <= MAX_DIMENSION:
        raise BadModelFile(f"{path}: {where} has the dimension {short(value)}; a dimension is 1 to {MAX_DIMENSION}.")
    return value
