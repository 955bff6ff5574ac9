"""Limits that keep a hostile or damaged file from exhausting memory, time or the interpreter's stack.

Every limit is far above what a real Keras model reaches (the fixtures' configs nest 11 levels deep,
the largest laptop-sized recurrent models hold a few GiB of weights), and each is checked on declared
sizes before anything of that size is allocated.
"""

from __future__ import annotations

import json
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
#: Values (numbers, strings, keys, lists, objects) in one JSON document: 100-200 per layer in a real config.
MAX_JSON_VALUES = 5_000_000
#: Layer entries in one config (nested models included).
MAX_LAYERS = 20_000
#: Characters in a layer or model name.
MAX_NAME_CHARS = 1024
#: A single dimension of a declared shape (an input, a layer size).
MAX_DIMENSION = 2**31 - 1


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


_STRUCTURAL = np.zeros(256, bool)
_STRUCTURAL[list(b"[]{},")] = True


def _real_quotes(codes: np.ndarray) -> np.ndarray:
    """Positions of the quotes that open or close strings: those not escaped by an odd run of backslashes."""
    quotes = np.flatnonzero(codes == ord('"'))
    slashes = np.flatnonzero(codes == ord("\\"))
    if not slashes.size or not quotes.size:
        return quotes
    breaks = np.flatnonzero(np.diff(slashes) != 1)
    run_ends = np.append(slashes[breaks], slashes[-1])
    run_starts = np.insert(slashes[breaks + 1], 0, slashes[0])
    run = np.minimum(np.searchsorted(run_ends, quotes - 1), len(run_ends) - 1)
    escaped = (run_ends[run] == quotes - 1) & ((run_ends[run] - run_starts[run]) % 2 == 0)  # odd length
    return quotes[~escaped]


def json_size(data: bytes) -> tuple[int, int]:
    """The deepest bracket nesting of a JSON text and how many values it holds (an upper bound), found
    without parsing it, in a few NumPy passes whose memory is a small multiple of the text's size.

    >>> json_size(b'{"a": [1, {"b": "[[[,,,\\\\"}]}')
    (3, 7)
    """
    codes = np.frombuffer(data, np.uint8)
    quotes = _real_quotes(codes)
    structural = np.flatnonzero(_STRUCTURAL[codes])
    structural = structural[np.searchsorted(quotes, structural) % 2 == 0]  # not inside a string
    kinds = codes[structural]
    del structural
    opens = (kinds == ord("[")) | (kinds == ord("{"))
    steps = opens.astype(np.int32) - ((kinds == ord("]")) | (kinds == ord("}"))).astype(np.int32)
    depth = int(np.cumsum(steps, dtype=np.int32).max(initial=0))
    # every value but the first is preceded by a comma or opens a container; keys count as strings
    values = int(np.count_nonzero(kinds == ord(","))) + int(np.count_nonzero(opens)) + len(quotes) // 2 + 1
    return depth, values


def parse_json(text: bytes | str, what: str, path: Path) -> Any:
    """``json.loads`` with a size and a nesting limit, so that no document can exhaust the stack."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(data) > MAX_JSON_BYTES:
        raise BadModelFile(f"{path}: {what} is {len(data)} bytes, more than a Keras config holds.")
    depth, values = json_size(data)
    if depth > MAX_JSON_DEPTH:
        raise BadModelFile(
            f"{path}: {what} nests {depth} levels deep (a Keras config nests a few dozen at most); refusing it."
        )
    if values > MAX_JSON_VALUES:  # each parsed value costs ~50-100 bytes of Python objects
        raise BadModelFile(
            f"{path}: {what} holds about {values} JSON values, more than {MAX_JSON_VALUES}; refusing it as "
            "damaged or crafted."
        )
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadModelFile(f"{path}: {what} is not valid JSON ({short(str(exc), 120)}).") from None


def max_weight_bytes(max_weights_gb: float | None) -> float:
    """``--max-weights-gb`` in bytes (``None``: the default); a float, so the message shows it as given."""
    gb = DEFAULT_MAX_WEIGHTS_GB if max_weights_gb is None else max_weights_gb
    if not isinstance(gb, int | float) or isinstance(gb, bool) or not gb > 0:
        raise BadOptions(f"--max-weights-gb {gb!r}: give a positive number of GiB.")
    return float(gb) * 2**30


def too_big(path: Path | str, what: str, nbytes: int, limit: float) -> BadModelFile:
    """The refusal for a model whose weights would need more memory than ``--max-weights-gb`` allows."""
    need = nbytes / 2**30
    return BadModelFile(
        f"{path}: {what} needs {need:.3g} GiB of weights, more than the {limit / 2**30:g} GiB allowed; "
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
