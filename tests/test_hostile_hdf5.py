"""HDF5 data from outside the model file is never read: external raw storage, external links, virtual
datasets and stray soft links are refused before any value is read, in every file form.

Each test first proves the hole (h5py itself returns the secret bytes of another file through the
crafted dataset, so a reader that just reads datasets would put them into the export), then that
lstm-convert refuses the file with a one-line error, exit code 2, and no output.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import converter
from converter.cli import app
from converter.errors import BadModelFile
from tests.fixture_index import ATOL, FIXTURES, all_fixtures, max_abs_error

K2, K3 = FIXTURES / "keras2", FIXTURES / "keras3"
#: The LSTM kernel (3, 20) of the tutorial model in each form, and where it lies.
KERNELS = {
    "h5": "model_weights/lstm/lstm/lstm_cell/kernel:0",
    "weights": "layers/lstm/cell/vars/0",
    "keras": "layers/lstm/cell/vars/0",
}
SECRET = (np.arange(60, dtype=np.float32) + 0.25).reshape(3, 20)  # unmistakable "weights"
Edit = Callable[[h5py.File, str, Path], None]


def write_secret(folder: Path) -> Path:
    path = folder / "secret.bin"
    path.write_bytes(SECRET.tobytes())
    return path


def write_secret_h5(folder: Path) -> Path:
    path = folder / "secret.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kernel", data=SECRET)
        f.create_group("group").create_dataset("kernel:0", data=SECRET)
    return path


def _replace(f: h5py.File, where: str, make: Callable[[h5py.Group, str], None]) -> None:
    parent, name = where.rsplit("/", 1)
    del f[where]
    make(f[parent], name)


def external_storage(target: str) -> Edit:
    def edit(f: h5py.File, where: str, folder: Path) -> None:
        _replace(f, where, lambda g, n: g.create_dataset(n, (3, 20), "<f4", external=[(target, 0, 240)]))

    return edit


def external_link(f: h5py.File, where: str, folder: Path) -> None:
    _replace(f, where, lambda g, n: g.__setitem__(n, h5py.ExternalLink(str(folder / "secret.h5"), "/kernel")))


def virtual(source: str) -> Edit:
    def edit(f: h5py.File, where: str, folder: Path) -> None:
        layout = h5py.VirtualLayout((3, 20), "<f4")
        layout[:] = h5py.VirtualSource(source, "kernel", shape=(3, 20))
        _replace(f, where, lambda g, n: g.create_virtual_dataset(n, layout, fillvalue=7.0))

    return edit


def hostile_model(tmp_path: Path, form: str, edit: Edit) -> tuple[Path, Path | None]:
    """The tutorial model in ``form`` with its LSTM kernel edited; the model path and its --config."""
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    if form == "keras":
        with zipfile.ZipFile(K3 / "tutorial.keras") as z:
            members = {info.filename: z.read(info) for info in z.infolist()}
        weights = io.BytesIO(members["model.weights.h5"])
        with h5py.File(weights, "r+") as f:
            edit(f, KERNELS[form], tmp_path)
        members["model.weights.h5"] = weights.getvalue()
        path = folder / "tutorial.keras"
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
        return path, None
    source, config = (K2 / "tutorial.h5", None) if form == "h5" else (K3 / "tutorial.weights.h5", K3 / "tutorial.json")
    path = folder / source.name
    shutil.copy(source, path)
    with h5py.File(path, "r+") as f:
        edit(f, KERNELS[form], tmp_path)
    return path, config


def raw_kernel(path: Path, form: str) -> np.ndarray:
    """What a naive reader gets: h5py reading the crafted dataset (from a .keras, the weights member
    extracted to a file, as Keras may do)."""
    if form == "keras":
        extracted = path.parent / "extracted.weights.h5"
        with zipfile.ZipFile(path) as z:
            extracted.write_bytes(z.read("model.weights.h5"))
        with h5py.File(extracted, "r") as f:
            kernel = f[KERNELS[form]][()]
        extracted.unlink()
        return kernel
    with h5py.File(path, "r") as f:
        return f[KERNELS[form]][()]


def assert_refused(path: Path, config: Path | None, *words: str) -> None:
    with pytest.raises(BadModelFile) as caught:
        converter.load(path, config=config)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message, message
    for word in words:
        assert word in message, message
    out = path.parent / "out.npz"
    out.write_bytes(b"previous export")
    args = ["to-npz", str(path), "-o", str(out), "--force", "--oracle", "numpy"]
    result = CliRunner().invoke(app, args + (["--config", str(config)] if config else []))
    assert result.exit_code == 2, result.output
    assert out.read_bytes() == b"previous export"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".lstm-convert")]


FORMS = ["h5", "weights", "keras"]


@pytest.mark.parametrize("form", FORMS)
def test_external_raw_storage_absolute_path(tmp_path: Path, form: str) -> None:
    secret = write_secret(tmp_path)
    path, config = hostile_model(tmp_path, form, external_storage(str(secret)))
    np.testing.assert_array_equal(raw_kernel(path, form), SECRET)  # the hole: h5py reads the other file
    assert_refused(path, config, KERNELS[form], "another file", "secret.bin")


@pytest.mark.parametrize("form", FORMS)
def test_external_raw_storage_relative_path(tmp_path: Path, form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_secret(tmp_path)
    path, config = hostile_model(tmp_path, form, external_storage("../secret.bin"))
    monkeypatch.chdir(path.parent)  # HDF5 resolves relative external files from the working folder
    np.testing.assert_array_equal(raw_kernel(path, form), SECRET)
    assert_refused(path, config, "another file", "../secret.bin")


@pytest.mark.parametrize("form", FORMS)
def test_external_link_to_a_dataset(tmp_path: Path, form: str) -> None:
    write_secret_h5(tmp_path)
    path, config = hostile_model(tmp_path, form, external_link)
    np.testing.assert_array_equal(raw_kernel(path, form), SECRET)
    assert_refused(path, config, "external link", "secret.h5")


def test_external_link_to_a_group(tmp_path: Path) -> None:
    """The layer's whole weight group replaced by a group of another file."""
    write_secret_h5(tmp_path)

    def edit(f: h5py.File, where: str, folder: Path) -> None:
        del f["model_weights/lstm/lstm/lstm_cell"]
        f["model_weights/lstm/lstm/lstm_cell"] = h5py.ExternalLink(str(folder / "secret.h5"), "/group")

    path, config = hostile_model(tmp_path, "h5", edit)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["model_weights/lstm/lstm/lstm_cell/kernel:0"][()], SECRET)
    assert_refused(path, config, "model_weights/lstm/lstm/lstm_cell", "external link")


@pytest.mark.parametrize("form", FORMS)
def test_virtual_dataset(tmp_path: Path, form: str) -> None:
    secret = write_secret_h5(tmp_path)
    path, config = hostile_model(tmp_path, form, virtual(str(secret)))
    np.testing.assert_array_equal(raw_kernel(path, form), SECRET)
    assert_refused(path, config, "virtual dataset")


def test_virtual_dataset_with_missing_source(tmp_path: Path) -> None:
    """h5py reads made-up fill values where the source is missing; that is refused too."""
    path, config = hostile_model(tmp_path, "h5", virtual(str(tmp_path / "gone.h5")))
    assert (raw_kernel(path, "h5") == 7.0).all()
    assert_refused(path, config, "virtual dataset")


def test_external_link_outside_the_weights_is_refused_too(tmp_path: Path) -> None:
    """Keras reads more of the file than the weights, and the oracle hands it the file: every link counts."""
    write_secret_h5(tmp_path)

    def edit(f: h5py.File, where: str, folder: Path) -> None:
        f["elsewhere"] = h5py.ExternalLink(str(folder / "secret.h5"), "/kernel")

    path, config = hostile_model(tmp_path, "h5", edit)
    assert_refused(path, config, "elsewhere", "external link")


def test_soft_link_loop(tmp_path: Path) -> None:
    def edit(f: h5py.File, where: str, folder: Path) -> None:
        _replace(f, where, lambda g, n: g.__setitem__(n, h5py.SoftLink("/model_weights/loop_a")))
        f["model_weights/loop_a"] = h5py.SoftLink("/model_weights/loop_b")
        f["model_weights/loop_b"] = h5py.SoftLink("/model_weights/loop_a")

    path, config = hostile_model(tmp_path, "h5", edit)
    assert_refused(path, config, "loop")


def test_soft_link_out_of_the_weights_tree(tmp_path: Path) -> None:
    def edit(f: h5py.File, where: str, folder: Path) -> None:
        f.create_dataset("outside/kernel", data=SECRET)
        _replace(f, where, lambda g, n: g.__setitem__(n, h5py.SoftLink("/outside/kernel")))

    path, config = hostile_model(tmp_path, "h5", edit)
    np.testing.assert_array_equal(raw_kernel(path, "h5"), SECRET)
    assert_refused(path, config, "soft link", "outside the weights")


def test_soft_link_through_an_external_link(tmp_path: Path) -> None:
    write_secret_h5(tmp_path)

    def edit(f: h5py.File, where: str, folder: Path) -> None:
        f["model_weights/ext"] = h5py.ExternalLink(str(folder / "secret.h5"), "/group")
        _replace(f, where, lambda g, n: g.__setitem__(n, h5py.SoftLink("/model_weights/ext/kernel:0")))

    path, config = hostile_model(tmp_path, "h5", edit)
    np.testing.assert_array_equal(raw_kernel(path, "h5"), SECRET)
    assert_refused(path, config, "external link")


def test_soft_link_inside_the_weights_is_followed(tmp_path: Path) -> None:
    """A soft link to a dataset of the same file, inside the weights, reads that dataset: still the model."""

    def edit(f: h5py.File, where: str, folder: Path) -> None:
        f.move(where, "model_weights/lstm/lstm/real_kernel")
        f[where] = h5py.SoftLink("/model_weights/lstm/lstm/real_kernel")

    path, _ = hostile_model(tmp_path, "h5", edit)
    fixture = next(fx for fx in all_fixtures() if fx.keras == "2" and fx.name == "tutorial" and fx.form == "h5")
    (want,) = fixture.outputs()
    assert max_abs_error(converter.load(path).predict(fixture.inputs()[0]), want) < ATOL


def test_user_block_is_accepted(tmp_path: Path) -> None:
    """An HDF5 file with a user block in front (h5jam, some archivers) is still the same model."""
    path = tmp_path / "userblock.h5"
    with h5py.File(K2 / "tutorial.h5", "r") as src, h5py.File(path, "w", userblock_size=512) as dst:
        for key in src:
            src.copy(key, dst)
        for key, value in src.attrs.items():
            dst.attrs[key] = value
    with path.open("r+b") as fh:
        fh.write(b"a user block: anything but a signature")
    assert path.read_bytes()[512:520] == b"\x89HDF\r\n\x1a\n"
    fixture = next(fx for fx in all_fixtures() if fx.keras == "2" and fx.name == "tutorial" and fx.form == "h5")
    (want,) = fixture.outputs()
    assert max_abs_error(converter.load(path).predict(fixture.inputs()[0]), want) < ATOL


def test_weights_root_replaced_by_an_external_link(tmp_path: Path) -> None:
    """The whole ``layers`` group of a .weights.h5 taken from another file."""
    secret = tmp_path / "secret_layers.h5"
    with h5py.File(K3 / "tutorial.weights.h5", "r") as src, h5py.File(secret, "w") as dst:
        src.copy("layers", dst)

    def edit(f: h5py.File, where: str, folder: Path) -> None:
        del f["layers"]
        f["layers"] = h5py.ExternalLink(str(secret), "/layers")

    path, config = hostile_model(tmp_path, "weights", edit)
    assert_refused(path, config, "/layers", "external link")


def test_weight_name_pointing_elsewhere_in_the_file(tmp_path: Path) -> None:
    """A Keras 2 ``weight_names`` entry is a path inside its layer's group, never an absolute one."""

    def edit(f: h5py.File, where: str, folder: Path) -> None:
        f.create_dataset("elsewhere/kernel", data=SECRET)
        names = [str(n) for n in f["model_weights/lstm"].attrs["weight_names"]]
        f["model_weights/lstm"].attrs["weight_names"] = ["/elsewhere/kernel", *names[1:]]

    path, config = hostile_model(tmp_path, "h5", edit)
    assert_refused(path, config, "outside its group")


def test_hard_link_cycle_terminates(tmp_path: Path) -> None:
    """A group hard-linked into its own child: the walk visits each object once."""

    def edit(f: h5py.File, where: str, folder: Path) -> None:
        f["model_weights/lstm/lstm/back_to_top"] = f["model_weights"]

    path, _ = hostile_model(tmp_path, "h5", edit)
    fixture = next(fx for fx in all_fixtures() if fx.keras == "2" and fx.name == "tutorial" and fx.form == "h5")
    (want,) = fixture.outputs()
    assert max_abs_error(converter.load(path).predict(fixture.inputs()[0]), want) < ATOL
