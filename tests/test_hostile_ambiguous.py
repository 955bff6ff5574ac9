"""Ambiguous files are refused: archives with two members of one name, and HDF5/zip polyglots.

Each test first shows the ambiguity (two readers, or one reader's two choices, see two models), then
that lstm-convert refuses the file with exit code 2.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

import converter
from converter.cli import app
from converter.errors import BadModelFile
from tests.fixture_index import ATOL, FIXTURES, all_fixtures, max_abs_error

K2, K3 = FIXTURES / "keras2", FIXTURES / "keras3"


def refused(path: Path, *words: str) -> None:
    with pytest.raises(BadModelFile) as caught:
        converter.load(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message, message
    out = path.parent / "out.onnx"
    result = CliRunner().invoke(app, ["to-onnx", str(path), "-o", str(out), "--oracle", "numpy"])
    assert result.exit_code == 2 and not out.exists()


@pytest.mark.parametrize("member", ["config.json", "model.weights.h5", "metadata.json"])
def test_duplicate_member_names(tmp_path: Path, member: str) -> None:
    """The second copy comes from another model: zipfile reads the last, another reader the first."""
    path = tmp_path / "dup.keras"
    with (
        zipfile.ZipFile(K3 / "tutorial.keras") as a,
        zipfile.ZipFile(K3 / "stacked.keras") as b,
        zipfile.ZipFile(path, "w") as out,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it writes
        for info in a.infolist():
            out.writestr(info.filename, a.read(info))
        out.writestr(member, b.read(member))
    with zipfile.ZipFile(path) as z:
        assert [info.filename for info in z.infolist()].count(member) == 2
    refused(path, "two members named", member)


def _userblock_copy(source: Path, target: Path, block: bytes) -> Path:
    """``source`` rewritten with a 512-byte user block in front holding ``block``."""
    with h5py.File(source, "r") as src, h5py.File(target, "w", userblock_size=512) as dst:
        for key in src:
            src.copy(key, dst)
        for key, value in src.attrs.items():
            dst.attrs[key] = value
    with target.open("r+b") as fh:
        fh.write(block[:512])
    return target


def test_hdf5_with_a_zip_appended(tmp_path: Path) -> None:
    """A legacy .h5 of one model followed by a .keras of another: h5py and zipfile each open it."""
    path = tmp_path / "polyglot.h5"
    path.write_bytes((K2 / "tutorial.h5").read_bytes() + (K3 / "stacked.keras").read_bytes())
    assert h5py.is_hdf5(path) and "config.json" in zipfile.ZipFile(path).namelist()
    refused(path, "both an HDF5 file and a zip")


def test_zip_whose_user_block_region_holds_an_hdf5_file(tmp_path: Path) -> None:
    """Starts like a zip (PK), has an HDF5 model at offset 512, and a .keras at the end."""
    path = _userblock_copy(K2 / "tutorial.h5", tmp_path / "polyglot.keras", b"PK\x03\x04" + bytes(508))
    path.write_bytes(path.read_bytes() + (K3 / "stacked.keras").read_bytes())
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    with h5py.File(path, "r") as f:
        assert "model_config" in f.attrs
    assert "config.json" in zipfile.ZipFile(path).namelist()
    refused(path, "both an HDF5 file and a zip")


def test_stored_weights_member_at_an_hdf5_offset_is_not_a_polyglot(tmp_path: Path) -> None:
    """A real .keras whose stored model.weights.h5 happens to start at byte 4096: HDF5 finds the member's
    own signature there, which is no second model."""
    with zipfile.ZipFile(K3 / "tutorial.keras") as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    path = tmp_path / "aligned.keras"
    order = ("metadata.json", "config.json", "model.weights.h5")
    headers = sum(30 + len(member) for member in order)  # local headers, no extra fields
    pad = 4096 - headers - len(members["metadata.json"]) - len(members["config.json"])
    meta = members["metadata.json"]
    members["metadata.json"] = meta.rstrip()[:-1] + b" " * (len(meta) + pad - len(meta.rstrip())) + b"}"
    with zipfile.ZipFile(path, "w") as out:  # stored, as Keras writes them
        for member in order:
            out.writestr(member, members[member])
    assert path.read_bytes()[4096:4104] == b"\x89HDF\r\n\x1a\n"
    json.loads(zipfile.ZipFile(path).read("metadata.json"))
    fixture = next(fx for fx in all_fixtures() if fx.keras == "3" and fx.name == "tutorial" and fx.form == "keras")
    (want,) = fixture.outputs()
    assert max_abs_error(converter.load(path).predict(fixture.inputs()[0]), want) < ATOL
