"""The committed Keras fixtures (``fixtures/keras*/NAME.entry.json``) as pytest parameters, with their recorded I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
#: One entry per fixture and Keras version, written by fixtures/make_fixtures.py beside the model files.
ENTRIES = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("keras*/*.entry.json"))]
REJECTED = {"conv_lstm2d", "lambda", "mha_shared_masked"}  # fixtures of models lstm-convert must refuse


@dataclass(frozen=True)
class Fixture:
    """One model file of one fixture, with what Keras computed for it."""

    name: str
    keras: str  # "2" or "3"
    form: str  # "keras", "h5" or "weights"
    path: Path
    config: Path | None
    entry: dict

    @property
    def id(self) -> str:
        return f"k{self.keras}-{self.name}-{self.form}"

    def io(self) -> dict[str, np.ndarray]:
        with np.load(FIXTURES / self.entry["io"]) as data:
            return {k: data[k] for k in data.files}

    def inputs(self, call: int = 1) -> list[np.ndarray]:
        io, prefix = self.io(), "input" if call == 1 else "input2"
        return [io[f"{prefix}/{k}"] for k in range(len(self.entry["input_names"]))]

    def outputs(self, call: int = 1) -> list[np.ndarray]:
        io, prefix = self.io(), "output" if call == 1 else "output2"
        return [io[f"{prefix}/{k}"] for k in range(self.entry["n_outputs"])]


def all_fixtures(include_rejected: bool = False) -> list[Fixture]:
    result = []
    for entry in ENTRIES:
        if (entry["name"] in REJECTED) != include_rejected:
            continue
        config = FIXTURES / entry["files"]["config"] if entry["files"].get("config") else None
        for form in ("keras", "h5", "weights"):
            rel = entry["files"].get(form)
            if rel:
                cfg = config if form == "weights" else None
                result.append(Fixture(entry["name"], entry["keras"], form, FIXTURES / rel, cfg, entry))
    return result


def one_form_each(include_rejected: bool = False) -> list[Fixture]:
    """One file per fixture and Keras version (the .keras for Keras 3, the .h5 for Keras 2)."""
    seen, result = set(), []
    for fx in all_fixtures(include_rejected):
        if (fx.name, fx.keras) not in seen:
            seen.add((fx.name, fx.keras))
            result.append(fx)
    return result


def max_abs_error(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if want.size else 0.0


ATOL = 1e-5
