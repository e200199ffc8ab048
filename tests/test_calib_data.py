"""Tests for onnxprune.calib.data: loading and validating calibration inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.calib.data import InputSpec, input_specs, load_calibration
from onnxprune.errors import CalibrationError


def _one_input_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "one", [x], [y])
    return helper.make_model(graph)


def _two_input_model() -> onnx.ModelProto:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    # 'w' is listed as an input too (old-exporter style) and must be skipped.
    wi = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Mul", ["s", "w"], ["y"])]
    graph = helper.make_graph(nodes, "two", [a, b, wi], [y], initializer=[w])
    return helper.make_model(graph)


@pytest.fixture
def specs() -> list[InputSpec]:
    return input_specs(_one_input_model())


@pytest.fixture
def specs2() -> list[InputSpec]:
    return input_specs(_two_input_model())


def _x(n: int, dtype=np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 2, 4, 4)).astype(dtype)


# --- input_specs ---------------------------------------------------------------------------


def test_input_specs_single(specs):
    assert len(specs) == 1
    assert specs[0].name == "x"
    assert specs[0].shape == (None, 2, 4, 4)
    assert specs[0].dtype == np.float32


def test_input_specs_skips_initializers(specs2):
    assert [s.name for s in specs2] == ["a", "b"]
    assert all(s.shape == (None, 3) for s in specs2)


# --- happy paths ---------------------------------------------------------------------------


def test_npy_ok(tmp_path, specs):
    x = _x(5)
    np.save(tmp_path / "x.npy", x)
    out = load_calibration(tmp_path / "x.npy", specs)
    assert set(out) == {"x"}
    np.testing.assert_array_equal(out["x"], x)
    assert out["x"].dtype == np.float32 and out["x"].flags.c_contiguous


def test_npz_by_name(tmp_path, specs2):
    a, b = np.ones((4, 3), np.float32), np.zeros((4, 3), np.float32)
    np.savez(tmp_path / "d.npz", a=a, b=b, extra=np.arange(3))
    out = load_calibration(str(tmp_path / "d.npz"), specs2)
    assert set(out) == {"a", "b"}
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)


def test_npz_single_array_any_key(tmp_path, specs):
    x = _x(3)
    np.savez(tmp_path / "d.npz", images=x)
    np.testing.assert_array_equal(load_calibration(tmp_path / "d.npz", specs)["x"], x)


def test_directory_concatenation_in_name_order(tmp_path, specs):
    first, second, third = _x(2, seed=1), _x(3, seed=2), _x(4, seed=3)
    # Written out of order on purpose: loading must follow file names.
    np.save(tmp_path / "b.npy", second)
    np.savez(tmp_path / "c.npz", x=third)
    np.save(tmp_path / "a.npy", first)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "z.npy", _x(7))  # non-recursive: ignored
    out = load_calibration(tmp_path, specs)["x"]
    assert out.shape == (9, 2, 4, 4)
    np.testing.assert_array_equal(out, np.concatenate([first, second, third]))


def test_max_samples_subset(tmp_path, specs):
    x = _x(200)
    np.save(tmp_path / "x.npy", x)
    out1 = load_calibration(tmp_path / "x.npy", specs, max_samples=10, seed=7)["x"]
    out2 = load_calibration(tmp_path / "x.npy", specs, max_samples=10, seed=7)["x"]
    out3 = load_calibration(tmp_path / "x.npy", specs, max_samples=10, seed=8)["x"]
    assert out1.shape == (10, 2, 4, 4)
    np.testing.assert_array_equal(out1, out2)
    assert not np.array_equal(out1, out3)
    # Rows come from the source, in their original order.
    rows = [int(np.flatnonzero((x == r).all(axis=(1, 2, 3)))[0]) for r in out1]
    assert rows == sorted(rows)
    assert out1.flags.c_contiguous


def test_max_samples_same_rows_for_every_input(tmp_path, specs2):
    a = np.arange(100, dtype=np.float32)[:, None].repeat(3, axis=1)
    np.savez(tmp_path / "d.npz", a=a, b=a * 2)
    out = load_calibration(tmp_path / "d.npz", specs2, max_samples=5, seed=3)
    np.testing.assert_array_equal(out["b"], out["a"] * 2)


def test_max_samples_larger_than_n_keeps_all(tmp_path, specs):
    np.save(tmp_path / "x.npy", _x(4))
    assert load_calibration(tmp_path / "x.npy", specs, max_samples=10)["x"].shape[0] == 4


def test_float64_cast_to_float32(tmp_path, specs):
    x = _x(3, dtype=np.float64)
    np.save(tmp_path / "x.npy", x)
    out = load_calibration(tmp_path / "x.npy", specs)["x"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x, rtol=1e-6)


# --- errors --------------------------------------------------------------------------------


def test_missing_path(tmp_path, specs):
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "nope.npy", specs)


def test_wrong_extension(tmp_path, specs):
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(CalibrationError, match=r"data\.csv.*not a \.npy file"):
        load_calibration(tmp_path / "data.csv", specs)


@pytest.mark.parametrize("name", ["x.npy", "x.npz"])
def test_corrupt_file(tmp_path, specs, name):
    (tmp_path / name).write_bytes(b"\x00garbage bytes, not numpy\xff" * 3)
    with pytest.raises(CalibrationError, match=rf"cannot read .*{name}"):
        load_calibration(tmp_path / name, specs)


def test_truncated_npy(tmp_path, specs):
    np.save(tmp_path / "x.npy", _x(4))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibration(tmp_path / "x.npy", specs)


def test_pickled_object_array_refused(tmp_path, specs):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibration(tmp_path / "x.npy", specs)


def test_empty_dir(tmp_path, specs):
    with pytest.raises(CalibrationError, match="is empty"):
        load_calibration(tmp_path, specs)


def test_dir_with_only_txt(tmp_path, specs):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(CalibrationError, match=r"no \.npy/\.npz files or images \(found: readme\.txt\)"):
        load_calibration(tmp_path, specs)


def test_wrong_rank(tmp_path, specs):
    np.save(tmp_path / "x.npy", np.zeros((32, 4, 4), np.float32))
    with pytest.raises(CalibrationError, match=r"input 'x': expected shape \(N, 2, 4, 4\), got \(32, 4, 4\)"):
        load_calibration(tmp_path / "x.npy", specs)


def test_wrong_channel_dim(tmp_path, specs):
    np.save(tmp_path / "x.npy", np.zeros((8, 3, 4, 4), np.float32))
    with pytest.raises(CalibrationError, match=r"x\.npy: input 'x': expected shape \(N, 2, 4, 4\), got \(8, 3, 4, 4\)"):
        load_calibration(tmp_path / "x.npy", specs)


def test_uint8_for_float_input(tmp_path, specs):
    np.save(tmp_path / "x.npy", np.zeros((2, 2, 4, 4), np.uint8))
    with pytest.raises(CalibrationError, match="expected float32, got uint8; apply the model's preprocessing"):
        load_calibration(tmp_path / "x.npy", specs)


def test_nan(tmp_path, specs):
    x = _x(2)
    x[0, 0, 0, :3] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(CalibrationError, match="input 'x': contains 3 NaN and 0 Inf"):
        load_calibration(tmp_path / "x.npy", specs)


def test_inf(tmp_path, specs):
    x = _x(2)
    x[1, 1, 1, 1] = -np.inf
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(CalibrationError, match="input 'x': contains 0 NaN and 1 Inf"):
        load_calibration(tmp_path / "x.npy", specs)


def test_zero_samples(tmp_path, specs):
    np.save(tmp_path / "x.npy", np.zeros((0, 2, 4, 4), np.float32))
    with pytest.raises(CalibrationError, match="zero samples"):
        load_calibration(tmp_path / "x.npy", specs)


def test_npy_for_two_input_model(tmp_path, specs2):
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(CalibrationError, match=r"model has 2 inputs \('a', 'b'\)"):
        load_calibration(tmp_path / "a.npy", specs2)


def test_npz_missing_name(tmp_path, specs2):
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 3), np.float32), c=np.zeros((2, 3), np.float32))
    with pytest.raises(CalibrationError, match=r"d\.npz: missing input 'b' \(has 'a', 'c'\)"):
        load_calibration(tmp_path / "d.npz", specs2)


def test_mismatched_shapes_across_dir_files(tmp_path):
    spec = [InputSpec("x", (None, None), np.dtype(np.float32))]
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((2, 5), np.float32))
    with pytest.raises(CalibrationError, match=r"b\.npy: input 'x' has sample shape \(5,\), but a\.npy has \(3,\)"):
        load_calibration(tmp_path, spec)


def test_mismatched_shapes_across_dir_files_fixed_dims(tmp_path, specs):
    np.save(tmp_path / "a.npy", _x(2))
    np.save(tmp_path / "b.npy", np.zeros((2, 2, 4, 5), np.float32))
    with pytest.raises(CalibrationError, match=r"b\.npy: input 'x': expected shape"):
        load_calibration(tmp_path, specs)


def test_mismatched_n_across_inputs(tmp_path, specs2):
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 3), np.float32), b=np.zeros((4, 3), np.float32))
    with pytest.raises(CalibrationError, match=r"d\.npz: inputs have different sample counts \('a': 2, 'b': 4\)"):
        load_calibration(tmp_path / "d.npz", specs2)


def test_mismatched_n_per_file_even_if_totals_match(tmp_path, specs2):
    np.savez(tmp_path / "1.npz", a=np.zeros((2, 3), np.float32), b=np.zeros((3, 3), np.float32))
    np.savez(tmp_path / "2.npz", a=np.zeros((3, 3), np.float32), b=np.zeros((2, 3), np.float32))
    with pytest.raises(CalibrationError, match=r"1\.npz: inputs have different sample counts"):
        load_calibration(tmp_path, specs2)


@pytest.mark.parametrize("bad", [0, -1])
def test_max_samples_below_one(tmp_path, specs, bad):
    np.save(tmp_path / "x.npy", _x(2))
    with pytest.raises(CalibrationError, match="max_samples must be at least 1"):
        load_calibration(tmp_path / "x.npy", specs, max_samples=bad)


# --- non-float inputs ----------------------------------------------------------------------


def test_int_input_cast_and_kind_checked(tmp_path):
    spec = [InputSpec("ids", (None, 4), np.dtype(np.int64))]
    np.save(tmp_path / "ids.npy", np.arange(8, dtype=np.int32).reshape(2, 4))
    out = load_calibration(tmp_path / "ids.npy", spec)["ids"]
    assert out.dtype == np.int64
    np.save(tmp_path / "f.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(CalibrationError, match="expected int64, got float32"):
        load_calibration(tmp_path / "f.npy", spec)
