"""Weights written as ONNX external data (used automatically past ~1.8 GB) give the same graph and results."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

import converter
import converter.convert as convert_module
from converter.export import onnx_builder, onnx_file
from converter.export.onnx_file import external_data_path
from converter.export.onnx_run import run_onnx
from tests.fixture_index import ATOL, FIXTURES, max_abs_error


def test_external_data_when_weights_are_big(tmp_path: Path, monkeypatch) -> None:
    # A small model takes the big-model path, and its small tensors go external too; kernels are
    # streamed in slices of a few rows, as an 8192-unit layer's are in 64 MB slices.
    monkeypatch.setattr(convert_module, "EXTERNAL_DATA_BYTES", 1000)
    monkeypatch.setattr(onnx_builder, "SLICE_BYTES", 100)
    monkeypatch.setattr(onnx_builder, "ExternalData", functools.partial(onnx_builder.ExternalData, threshold=64))
    source = FIXTURES / "keras3" / "masked_bidi.keras"
    out = tmp_path / "m.onnx"
    report = converter.to_onnx(source, out, oracle="numpy")
    assert report.passed
    data = external_data_path(out)
    model = onnx.load(str(out), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert any(t.name.endswith("/W") for t in external)
    lengths = [int(next(e.value for e in t.external_data if e.key == "length")) for t in external]
    assert data.stat().st_size == sum(lengths) > 0
    with np.load(FIXTURES / "keras3" / "masked_bidi.io.npz") as io:
        got = run_onnx(out, {"input_layer": io["input/0"]})
        assert max_abs_error(got["dense"], io["output/0"]) <= ATOL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_streamed_kernels_equal_the_joined_ones(tmp_path: Path) -> None:
    """``Stacked`` writes exactly the bytes its inline join holds, whatever the slice size."""
    rng = np.random.default_rng(0)
    kernels = [rng.standard_normal((5, 7)).astype(np.float32) for _ in range(4)]
    stacked = onnx_builder.Stacked((2, 14, 5), [k.T for k in kernels])
    joined = stacked.join()
    for slice_bytes in (1, 20, 28, 10**6):
        path = tmp_path / f"{slice_bytes}.bin"
        original, onnx_builder.SLICE_BYTES = onnx_builder.SLICE_BYTES, slice_bytes
        try:
            with path.open("wb") as fh:
                assert stacked.write_to(fh) == joined.nbytes == stacked.nbytes
        finally:
            onnx_builder.SLICE_BYTES = original
        assert path.read_bytes() == joined.tobytes()


def test_spliced_weights_make_the_same_one_file_model(tmp_path: Path, monkeypatch) -> None:
    """Inline tensors spliced in from a scratch file give exactly the model ``onnx.save`` writes."""
    source = FIXTURES / "keras2" / "masked_bidi.h5"
    plain, spliced = tmp_path / "plain.onnx", tmp_path / "spliced.onnx"
    assert converter.to_onnx(source, plain, oracle="numpy").passed
    monkeypatch.setattr(onnx_file, "SPLICE_BYTES", 1)
    assert converter.to_onnx(source, spliced, oracle="numpy").passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx", "spliced.onnx"]  # no scratch file left
    a, b = onnx.load(str(plain)), onnx.load(str(spliced))
    assert not [t for t in b.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    weights = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    assert weights.keys() == {t.name for t in b.graph.initializer}
    for tensor in b.graph.initializer:
        assert np.array_equal(numpy_helper.to_array(tensor), weights[tensor.name]), tensor.name
    assert len(weights) > 4  # the spliced part really held the kernels
    onnx.checker.check_model(b, full_check=True)
    with np.load(source.with_name("masked_bidi.io.npz")) as io:
        got = run_onnx(spliced, {"input_1": io["input/0"]})
        assert max_abs_error(got["dense"], io["output/0"]) <= ATOL
    for proto in (a, b):
        proto.graph.ClearField("initializer")
    assert a == b
