"""npz and JSON exports given as input (``predict``, ``verify``, ``converter.load``) that lie: shapes that disagree
with the arrays, test vectors that do not fit, npy headers declaring terabytes, documents nested 100,000 deep,
absurd or overflowing shapes. Each is a one-line ``BadModelFile`` naming the file, before anything big is
allocated; through the CLI exit 2 in bounded time and memory. The hostile files are built here, small."""

from __future__ import annotations

import copy
import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import converter
from converter.errors import BadModelFile
from converter.export.guards import MAX_DEPTH, check_depth
from tests.fixture_index import FIXTURES
from tests.test_hostile_outputs import MAX_RSS_MB, SECONDS, run_cli

TUTORIAL = FIXTURES / "keras3" / "tutorial.keras"
Entries = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("exports")
    converter.to_npz(TUTORIAL, folder / "t.npz", oracle="numpy")
    converter.to_json(TUTORIAL, folder / "t.json", oracle="numpy")
    return folder / "t.npz", folder / "t.json"


def entries_of(path: Path) -> Entries:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def write_npz(path: Path, entries: Entries, raw: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in entries.items():
            with archive.open(key + ".npy", "w") as out:
                np.lib.format.write_array(out, np.asanyarray(array), allow_pickle=False)
        for name, data in (raw or {}).items():
            archive.writestr(name, data)
    return path


def npy_header_only(shape: tuple[int, ...], payload: int = 60) -> bytes:
    """An npy member whose header declares ``shape`` float32 but which holds ``payload`` bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_2_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * payload


def with_doc(entries: Entries, change: Callable[[dict], None]) -> Entries:
    doc = json.loads(str(entries["__model__"]))
    change(doc)
    return entries | {"__model__": np.array(json.dumps(doc))}


def without(entries: Entries, key: str) -> Entries:
    return {k: v for k, v in entries.items() if k != key}


IN, OUT = "__test__/inputs/input_layer", "__test__/outputs/dense"

#: name -> (make the hostile npz from the good entries, words the message must hold)
NPZ_CASES: dict[str, tuple[Callable[[Path, Entries], Path], str]] = {
    "array disagrees with its description": (
        lambda p, e: write_npz(p, e | {"lstm/W_f": np.zeros((4, 5), np.float32)}),
        r"tensor 'lstm/W_f' has shape \(4, 5\); layer 'lstm' needs \(3, 5\)",
    ),
    "description disagrees with the layer": (
        lambda p, e: write_npz(p, with_doc(e, lambda d: d["nodes"][0]["tensors"][1].update(shape=[4, 5]))),
        r"'lstm/W_f' is described with shape \[4, 5\]",
    ),
    "test input of the wrong shape": (
        lambda p, e: write_npz(p, e | {IN: np.zeros((3, 4, 7), np.float32)}),
        r"test vector: input 'input_layer' has shape \(3, 4, 7\)",
    ),
    "test input with an empty axis": (
        lambda p, e: write_npz(p, e | {IN: np.zeros((0, 4, 3), np.float32)}),
        "it must be non-empty numbers",
    ),
    "test input of bools": (lambda p, e: write_npz(p, e | {IN: np.zeros((3, 4, 3), bool)}), "is bool"),
    "test input of strings": (lambda p, e: write_npz(p, e | {IN: np.zeros((3, 4, 3), "<U3")}), "is <U3"),
    "test output of the wrong shape": (
        lambda p, e: write_npz(p, e | {OUT: np.zeros((3, 2), np.float32)}),
        r"test output 'dense' has shape \(3, 2\), but the model gives \(3, 1\)",
    ),
    "test output of ints": (lambda p, e: write_npz(p, e | {OUT: np.zeros((3, 1), np.int64)}), "outputs are floats"),
    "test output of another batch": (
        lambda p, e: write_npz(p, e | {OUT: np.zeros((5, 1), np.float32)}),
        r"mixes batch sizes \[3, 5\]",
    ),
    "npy header declaring 3.6 TiB": (
        lambda p, e: write_npz(p, without(e, "lstm/W_f"), {"lstm/W_f.npy": npy_header_only((10**6, 10**6))}),
        r"entry 'lstm/W_f' declares float32 \(1000000, 1000000\) \(3.73e\+03 GiB\) but holds 60 bytes",
    ),
    "npy header declaring 1.1 GiB": (
        lambda p, e: write_npz(p, without(e, "lstm/W_f"), {"lstm/W_f.npy": npy_header_only((3, 10**8))}),
        r"declares float32 \(3, 100000000\) \(1.12 GiB\)",
    ),
    "test input declaring 10**15 values": (
        lambda p, e: write_npz(p, without(e, IN), {IN + ".npy": npy_header_only((10**5, 10**5, 10**5))}),
        "entry '__test__/inputs/input_layer' declares",
    ),
    "compressed member claiming 10 GiB": (
        lambda p, e: _compressed_bomb(p, e),
        "inflates",
    ),
    "a member that is no npy": (
        lambda p, e: write_npz(p, e, {"notes.txt": b"hello"}),
        "member 'notes.txt' is not an .npy array",
    ),
    "a member twice": (lambda p, e: _twice(p, e), "holds 'dense/b.npy' twice"),
    "__model__ nested 100,000 deep": (
        lambda p, e: write_npz(p, e | {"__model__": np.array("[" * 100_000 + "]" * 100_000)}),
        f"'__model__' is nested more than {MAX_DEPTH} levels deep",
    ),
    "__model__ deep inside a layer config": (
        lambda p, e: write_npz(
            p, with_doc(e, lambda d: d["nodes"][0]["config"].update(x=json.loads("[" * 500 + "]" * 500)))
        ),
        "nested more than",
    ),
    "input declaring 10**12 steps": (
        lambda p, e: write_npz(p, with_doc(e, lambda d: d["inputs"][0].update(shape=[10**12, 3]))),
        r"input 'input_layer' declares shape \[None, 1000000000000, 3\]",
    ),
    "input declaring a zero axis": (
        lambda p, e: write_npz(p, with_doc(e, lambda d: d["inputs"][0].update(shape=[4, 0]))),
        "each axis must be 1..",
    ),
}


def _compressed_bomb(path: Path, entries: Entries) -> Path:
    write_npz(path, without(entries, "dense/b"))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dense/b.npy", npy_header_only((10 * 2**28,), payload=2**20))  # 1 MiB of zeros ~ 1 KiB
    return path


def _twice(path: Path, entries: Entries) -> Path:
    write_npz(path, entries)
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as archive, archive.open("dense/b.npy", "w") as out:
        np.lib.format.write_array(out, np.zeros(1, np.float32))
    return path


#: Checked once the model has run on the test inputs, so by verify only (load does not use the test vector).
ONCE_RUN = {"test output of the wrong shape"}


def expect_bad(path: Path, words: str, only_verify: bool = False) -> None:
    for read in (converter.verify,) if only_verify else (converter.load, converter.verify):
        with pytest.raises(BadModelFile, match=words) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, message


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_hostile_npz(exports, tmp_path: Path, case: str) -> None:
    make, words = NPZ_CASES[case]
    bad = make(tmp_path / "bad.npz", entries_of(exports[0]))
    assert bad.stat().st_size < 2 * 2**20
    expect_bad(bad, words, case in ONCE_RUN)


def _tensor(doc: dict, key: str = "lstm/W_f") -> dict:
    return doc["tensors"][key]


#: name -> (change the parsed good JSON export in place, words the message must hold)
JSON_CASES: dict[str, tuple[Callable[[dict], None], str]] = {
    "data longer than the shape": (
        lambda d: _tensor(d).update(data=_tensor(d)["data"] * 1000),
        r"has 15000 values, but its shape \[3, 5\] needs 15",
    ),
    "shape product overflowing int64": (
        lambda d: _tensor(d).update(shape=[2**64, 2**64]),
        "has an axis outside 0..2147483647",
    ),
    "huge axes times a zero axis": (
        lambda d: _tensor(d).update(shape=[2**40, 2**40, 0], data=[]),
        "has an axis outside",
    ),
    "negative axis": (lambda d: _tensor(d).update(shape=[-3, -5]), "has an axis outside|shape"),
    "100 axes": (lambda d: _tensor(d).update(shape=[1] * 100), "at most 32 axes|shape"),
    "tensor disagrees with the layer": (
        lambda d: _tensor(d).update(shape=[5, 3]),
        r"'lstm/W_f' has shape \(5, 3\); layer 'lstm' needs \(3, 5\)",
    ),
    "test input of the wrong shape": (
        lambda d: d["test"]["inputs"].update(input_layer={"shape": [3, 4, 1], "dtype": "float32", "data": [0.0] * 12}),
        r"test vector: input 'input_layer' has shape \(3, 4, 1\)",
    ),
    "test input of 10**12 empty rows": (
        lambda d: d["test"]["inputs"].update(input_layer={"shape": [10**6, 0, 10**6], "dtype": "float32", "data": []}),
        "test vector: input 'input_layer' has shape",
    ),
    "test output of the wrong shape": (
        lambda d: d["test"]["outputs"].update(dense={"shape": [3, 2], "dtype": "float32", "data": [0.0] * 6}),
        r"test output 'dense' has shape \(3, 2\)",
    ),
    "test output of bools": (
        lambda d: d["test"]["outputs"].update(dense={"shape": [3, 1], "dtype": "bool", "data": [True] * 3}),
        "outputs are floats",
    ),
    "input declaring 10**12 features": (
        lambda d: d["model"]["inputs"][0].update(shape=[4, 10**12]),
        r"input 'input_layer' declares shape \[None, 4, 1000000000000\]",
    ),
}


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_hostile_json(exports, tmp_path: Path, case: str) -> None:
    change, words = JSON_CASES[case]
    doc = copy.deepcopy(json.loads(exports[1].read_text()))
    change(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    expect_bad(bad, words, case in ONCE_RUN)


@pytest.mark.parametrize("opening", ["[", '{"a": '])
def test_json_nested_100000_deep(tmp_path: Path, opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    bad = tmp_path / "deep.json"
    bad.write_text('{"format": "lstm-convert", "model": ' + opening * 100_000 + "1" + closing * 100_000 + "}")
    expect_bad(bad, f"the document is nested more than {MAX_DEPTH} levels deep")


def test_depth_scan_ignores_brackets_in_strings() -> None:
    """Brackets inside names count for nothing either way: neither a false refusal nor a hidden depth."""
    check_depth(json.dumps({"name": "[" * 1000, "other": ']]]\\"[[[' * 1000}), "x")
    hidden = json.dumps({"name": "]" * 1000}) + "[" * 100 + "]" * 100
    with pytest.raises(BadModelFile, match="nested more than"):
        check_depth(hidden, "x")
    check_depth(json.dumps(json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)), "x")
    with pytest.raises(BadModelFile):
        check_depth("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "x")


def test_good_exports_still_read(exports) -> None:
    for path in exports:
        assert converter.verify(path).passed
        assert converter.load(path).predict(np.ones((2, 4, 3), np.float32)).shape == (2, 1)


@pytest.mark.parametrize("command", ["predict", "verify"])
@pytest.mark.parametrize("case", ["npy header declaring 3.6 TiB", "__model__ nested 100,000 deep"])
def test_cli_on_hostile_npz_is_bounded(exports, tmp_path: Path, command: str, case: str) -> None:
    make, words = NPZ_CASES[case]
    bad = make(tmp_path / "bad.npz", entries_of(exports[0]))
    inputs = tmp_path / "in.npy"
    np.save(inputs, np.ones((2, 4, 3), np.float32))
    out = tmp_path / "out.npz"
    args = ["predict", bad, "--inputs", inputs, "-o", out] if command == "predict" else ["verify", bad]
    run = run_cli(args)
    assert run.code == 2 and len(run.error_lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.error_lines[0].startswith(f"error: {bad}: ") and re.search(words, run.error_lines[0])
    assert run.seconds < SECONDS and run.rss_mb < MAX_RSS_MB, (run.seconds, run.rss_mb)
    assert not out.exists()


def test_cli_on_deep_json_is_bounded(tmp_path: Path) -> None:
    bad = tmp_path / "deep.json"
    bad.write_text('{"format": "lstm-convert", "model": ' + "[" * 100_000 + "]" * 100_000 + "}")
    run = run_cli(["verify", bad])
    assert run.code == 2 and len(run.error_lines) == 1 and "nested more than" in run.stderr, run.stderr
    assert run.seconds < SECONDS and run.rss_mb < MAX_RSS_MB
