"""Evaluation: top-1 against an independent computation, output difference, latency, --eval/--check/--bench."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import onnxprune
from builders import INPUT, lenet_like, random_inputs, run
from onnxprune.cli import main
from onnxprune.cli.summary import summary as cli_summary
from onnxprune.errors import CalibrationError, ConfigError, ModelError
from onnxprune.measure.evaluate import benchmark, evaluate, load_eval_data, output_difference

FAST = dict(max_iter=5, rows_per_layer=512)


def _data(n: int = 40, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    model = lenet_like()
    x = random_inputs(model, n, seed=seed)
    # Labels that the model gets right about half the time, so top-1 is neither 0 nor 1.
    y = run(model, x).argmax(axis=1)
    y[::2] = (y[::2] + 1) % 10
    return x, y.astype(np.int64)


def _fixed_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in (fixed.graph.input[0], fixed.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    return fixed


def test_top1_equals_numpy_and_handles_a_fixed_batch(tmp_path):
    model = lenet_like()
    x, y = _data(43)
    expected = float(np.mean(run(model, x).argmax(axis=1) == y))
    assert 0.3 < expected < 0.7
    assert evaluate(model, (x, y)) == expected
    assert evaluate(model, (x, y), batch_size=8) == expected  # 43 is not a multiple of 8
    np.savez(tmp_path / "eval.npz", x=x, y=y.astype(np.uint8))
    onnx.save(model, tmp_path / "m.onnx")
    assert evaluate(tmp_path / "m.onnx", tmp_path / "eval.npz") == expected
    # Batch fixed at 4 in the graph: batches of exactly 4, the last one padded and the padding ignored.
    assert evaluate(_fixed_batch(model, 4), (x, y)) == expected


def test_output_difference_and_benchmark():
    model = lenet_like()
    other = lenet_like(seed=7)
    x = random_inputs(model, 30)
    same = output_difference(model, model, {INPUT: x})
    assert (same.max_abs_diff, same.mean_abs_diff, same.argmax_agreement, same.samples) == (0.0, 0.0, 1.0, 30)
    diff = output_difference(model, other, {INPUT: x}, max_samples=20, batch_size=8)
    a, b = run(model, x[:20]).astype(np.float64), run(other, x[:20]).astype(np.float64)
    assert diff.samples == 20
    assert diff.max_abs_diff == pytest.approx(np.abs(a - b).max(), rel=1e-6)
    assert diff.mean_abs_diff == pytest.approx(np.abs(a - b).mean(), rel=1e-6)
    assert diff.argmax_agreement == np.mean(a.argmax(1) == b.argmax(1))

    latencies = benchmark(model, other, {INPUT: x}, batches=(1, 50), repeats=(2, 4), seconds=0.01)
    assert [t.batch for t in latencies] == [1, 50]  # more than the 30 samples: they are repeated
    assert all(t.ms_before > 0 and t.ms_after > 0 and 2 <= t.repeats <= 4 and t.threads == 1 for t in latencies)
    assert [t.batch for t in benchmark(_fixed_batch(model, 3), model, {INPUT: x}, repeats=(1, 1))] == [3]


def test_prune_reports_measurements(tmp_path):
    model = lenet_like()
    calib = random_inputs(model, 64, seed=2)
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        measurements = onnxprune.Measurements(eval=(x, y), check=True, bench=8)
        measurements.score_original(model)
        pruned, report = onnxprune.prune(model, calib, eps_l2=2, **FAST)
        report = measurements.add_to(report, model, pruned, {INPUT: calib})
    assert report.accuracy.samples == len(y)
    assert report.accuracy.top1_before == np.mean(run(model, x).argmax(1) == y)
    assert report.accuracy.top1_after == np.mean(run(pruned, x).argmax(1) == y)
    a, b = run(model, calib).astype(np.float64), run(pruned, calib).astype(np.float64)
    assert report.check.max_abs_diff == pytest.approx(np.abs(a - b).max(), rel=1e-6)
    assert [t.batch for t in report.latency] == [1, 8]
    assert "measure" in report.timings
    as_json = json.loads(report.to_json())
    assert as_json["accuracy"]["top1_after"] == report.accuracy.top1_after
    assert {"max_abs_diff", "mean_abs_diff", "argmax_agreement"} <= set(as_json["check"])
    assert as_json["latency"][1]["batch"] == 8
    summary = cli_summary(report)
    assert "top-1:" in summary and "outputs:" in summary and "latency:    batch 8:" in summary


def test_eval_fails_before_pruning(tmp_path, monkeypatch):
    import onnxprune.pruning.once

    def never(*args, **kwargs):
        raise AssertionError("pruning started although the evaluation data is unusable")

    monkeypatch.setattr(onnxprune.pruning.once, "Pruner", never)
    x, y = _data()
    y[3] = 10
    with pytest.raises(CalibrationError, match="label 10 is out of range for the model's 10 classes"):
        onnxprune.Measurements(eval=(x, y)).score_original(lenet_like())
    onnx.save(lenet_like(), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "test.npz", x=x, y=y)
    result = CliRunner().invoke(main, [str(tmp_path / "m.onnx"), str(tmp_path / "out.onnx"), "--calib",
                                       str(tmp_path / "x.npy"), "--eval", str(tmp_path / "test.npz")])
    assert result.exit_code == 1 and "label 10 is out of range" in result.output
    assert not (tmp_path / "out.onnx").exists()


def test_bad_bench_and_non_classifier():
    with pytest.raises(ConfigError, match="bench must be"):
        onnxprune.Measurements(bench=0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 4, 4])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 4, 4])
    identity = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [out]),
                                 opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    data = np.zeros((3, 2, 4, 4), np.float32)
    with pytest.raises(ModelError, match=r"top-1 needs the model's first output to be \(N, classes\)"):
        evaluate(identity, (data, np.zeros(3, np.int64)))


def test_load_eval_data_from_class_folders(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for cls, n in (("b_second", 2), ("a_first", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_eval_data(tmp_path, lenet_like(), preprocessing=onnxprune.Preprocessing(mean=0.5))
    assert data.labels.tolist() == [0, 0, 0, 1, 1] and data.feeds[INPUT].shape == (5, 1, 12, 12)


# --- through the CLI ---------------------------------------------------------------------------


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_eval_matches_independent_evaluation_of_the_written_file(tmp_path):
    model = lenet_like()
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", random_inputs(model, 64, seed=2))
    x, y = _data()
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    out = tmp_path / "small.onnx"
    result = _invoke(tmp_path / "m.onnx", out, "--calib", tmp_path / "calib.npy", "--eval", tmp_path / "eval.npz",
                     "--check", "--bench-batch", 4, "--eps-l2", 2, "--max-iter", 5, "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["accuracy"]["top1_after"] == np.mean(run(onnx.load(out), x).argmax(1) == y)
    assert report["accuracy"]["source"] == "eval.npz"
    assert [t["batch"] for t in report["latency"]] == [1, 4]  # --bench-batch implies --bench
    assert report["fidelity"]["samples"] == 16  # held out from the 64 (at least 16 from 32 on)
    assert report["check"]["samples"] == 64 - 16  # the check runs on the statistics' samples
    assert f"top-1:      {report['accuracy']['top1_before']:.2%} -> " in result.stdout


def _npz(**arrays):
    def make(tmp):
        np.savez(tmp / "bad.npz", **arrays)
        return tmp / "bad.npz"
    return make


X, Y = _data(8)
BAD_EVAL = {
    "x-shape": (_npz(x=np.zeros((8, 1, 10, 10), np.float32), y=Y), "bad.npz: input 'input': expected shape (N, 1, 12, 12)"),
    "y-float": (_npz(x=X, y=Y.astype(np.float32)), "labels y must be integers, got float32"),
    "y-2d": (_npz(x=X, y=Y[:, None]), "labels y must have shape (N,)"),
    "length": (_npz(x=X, y=Y[:5]), "x has 8 samples but y has 5 labels"),
    "out-of-range": (_npz(x=X, y=np.full(8, 12)), "label 12 is out of range for the model's 10 classes"),
    "negative": (_npz(x=X, y=np.full(8, -1)), "label -1 is negative"),
    "no-y": (_npz(x=X), "no labels 'y' (has 'x')"),
    "no-x": (_npz(inputs=X, y=Y), "no inputs 'x'"),
    "nan": (_npz(x=np.full_like(X, np.nan), y=Y), "NaN"),
    "npy": (lambda tmp: (np.save(tmp / "e.npy", X), tmp / "e.npy")[1], "is neither an .npz with x and y nor a folder"),
    "missing": (lambda tmp: tmp / "nope.npz", "nope.npz' does not exist"),
    "flat-folder": (lambda tmp: _flat_folder(tmp), "is flat; evaluation needs one sub-folder per class"),
}


def _flat_folder(tmp):
    from PIL import Image

    (tmp / "flat").mkdir()
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp / "flat" / "a.png")
    return tmp / "flat"


@pytest.mark.parametrize("make, expected", BAD_EVAL.values(), ids=BAD_EVAL.keys())
def test_bad_eval_data_one_error_line(tmp_path, make, expected):
    onnx.save(lenet_like(), tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", X)
    out = tmp_path / "out.onnx"
    result = _invoke(tmp_path / "m.onnx", out, "--calib", tmp_path / "calib.npy", "--eval", make(tmp_path))
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:") and expected in lines[0], result.stderr
    assert not out.exists()
