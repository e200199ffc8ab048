"""End to end through the public API: onnxprune.prune(model, calib, **options) -> (ModelProto, Report)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxprune
from builders import (INPUT, OUTPUT, conv_bn_relu_chain, lenet_like, matmul_head, quick_prune, random_inputs, run,
                      with_unsupported_op)
from onnxprune.cli.summary import summary as cli_summary


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _layers(report) -> dict:
    return {layer.name: layer for layer in report.layers}


def _check_interface(pruned: onnx.ModelProto, original: onnx.ModelProto, n: int = 5) -> np.ndarray:
    onnx.checker.check_model(pruned, full_check=True)
    assert [i.name for i in pruned.graph.input] == [INPUT]
    assert [o.name for o in pruned.graph.output] == [OUTPUT]
    x = random_inputs(original, n, seed=99)
    out = run(pruned, x)
    assert out.shape == run(original, x).shape == (n, 10)
    assert np.all(np.isfinite(out))
    return out


def test_zero_weight_channels_are_removed_and_outputs_reproduced():
    zero = {"conv2": [1, 5], "fc": [3, 7]}
    original = conv_bn_relu_chain(zero_in_channels=zero)
    # The fc regression has 12 * 16 = 192 features: the calibration set must have more samples
    # than that for the unregularised (ridge=0) refit to recover the weights exactly.
    calib = random_inputs(original, 256, seed=1)
    pruned, report = quick_prune(original, calib, eps_l2=1e-3, ridge=0.0, param_weighting=0.0)
    layers = _layers(report)

    assert layers["conv2"].in_channels_before == 8
    assert layers["conv2"].in_channels_before - layers["conv2"].in_channels_after >= len(zero["conv2"])
    assert layers["conv1"].channels_after == layers["conv2"].in_channels_after
    assert layers["fc"].in_channels_before == 12 * 16
    assert layers["fc"].in_channels_before - layers["fc"].in_channels_after >= 16 * len(zero["fc"])
    assert layers["conv2"].channels_after == layers["fc"].in_channels_after // 16

    # conv1 is frozen (graph input) and only loses output rows: which rows tells which channels were kept.
    w1_before, w1_after = _initializer(original, "conv1.weight"), _initializer(pruned, "conv1.weight")
    kept = [int(np.flatnonzero(np.all(w1_before == row, axis=(1, 2, 3)))[0]) for row in w1_after]
    assert not set(kept) & set(zero["conv2"]), f"GES kept zero-weight channels: kept {kept}"

    _check_interface(pruned, original)
    x = random_inputs(original, 64, seed=2)  # held out: not the calibration samples
    np.testing.assert_allclose(run(pruned, x), run(original, x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("build", [conv_bn_relu_chain, lenet_like], ids=["chain", "lenet_like"])
def test_strong_pruning_gives_a_valid_smaller_model(build):
    original = build()
    calib = random_inputs(original, 32, seed=1)
    pruned, report = quick_prune(original, calib, eps_l2=3.0)
    _check_interface(pruned, original)
    assert report.params_after < report.params_before
    assert report.macs_after <= report.macs_before

    data = report.to_dict()
    assert {"params_before", "params_after", "macs_before", "macs_after", "seconds", "layers"} <= set(data)
    assert [layer["name"] for layer in data["layers"]] == [n.name for n in original.graph.node
                                                          if n.op_type in ("Conv", "Gemm")]
    for layer in data["layers"]:
        assert {"name", "op_type", "channels_before", "channels_after"} <= set(layer)
        assert 1 <= layer["channels_after"] <= layer["channels_before"]
    assert data["layers"][-1]["channels_after"] == 10  # the logits are never pruned
    assert data["params_before"] == sum(onnx.numpy_helper.to_array(t).size for t in original.graph.initializer)
    assert data["params_after"] == sum(onnx.numpy_helper.to_array(t).size for t in pruned.graph.initializer)
    assert "parameters:" in cli_summary(report)
    assert isinstance(report.to_json(), str)


def test_model_path_and_progress(tmp_path):
    original = lenet_like()
    path = tmp_path / "m.onnx"
    onnx.save(original, path)
    lines = []
    pruned, report = quick_prune(str(path), random_inputs(original, 16, seed=1), eps_l2=1.0, progress=lines.append)
    _check_interface(pruned, original)
    assert len(lines) == len(report.layers)
    assert lines[0].startswith("[1/4] conv1")


def test_transpose_model_prunes_and_reports_frozen_reason():
    original = with_unsupported_op()
    pruned, report = quick_prune(original, random_inputs(original, 32, seed=1), eps_l2=3.0)
    _check_interface(pruned, original)
    layers = _layers(report)
    assert "Transpose" in layers["conv2"].frozen
    # Frozen input channels also freeze the producer's outputs.
    assert layers["conv1"].channels_after == layers["conv1"].channels_before == 8
    assert layers["conv2"].in_channels_after == layers["conv2"].in_channels_before
    summary = cli_summary(report)
    assert "not pruned:" in summary
    assert "input channels of conv2" in summary and "Transpose 'transpose'" in summary


def test_matmul_head_prunes_and_runs():
    original = matmul_head()
    calib = random_inputs(original, 64, seed=1)
    pruned, report = quick_prune(original, calib, eps_l2=1e-3, ridge=0.0, param_weighting=0.0)
    _check_interface(pruned, original)
    assert _layers(report)["fc"].in_channels_before == 8
    x = random_inputs(original, 32, seed=3)
    np.testing.assert_allclose(run(pruned, x), run(original, x), rtol=1e-3, atol=1e-3)


def test_same_seed_same_bytes():
    original = lenet_like()
    calib = random_inputs(original, 32, seed=1)
    first, report1 = quick_prune(original, calib, eps_l2=1.0, seed=3)
    second, report2 = quick_prune(original, calib, eps_l2=1.0, seed=3)
    assert first.SerializeToString() == second.SerializeToString()
    assert [l.in_channels_after for l in report1.layers] == [l.in_channels_after for l in report2.layers]


def test_calibration_mapping_and_bad_options():
    original = matmul_head()
    calib = {INPUT: random_inputs(original, 16, seed=1)}
    _check_interface(quick_prune(original, calib)[0], original)
    with pytest.raises(onnxprune.ConfigError, match="eps_entropy"):
        onnxprune.prune(original, calib, eps_entropy=0)
    with pytest.raises(onnxprune.CalibrationError, match="expected shape"):
        onnxprune.prune(original, np.zeros((4, 3, 8), np.float32))


def test_every_channel_that_stays_says_why_in_the_summary():
    original = with_unsupported_op()
    calib = random_inputs(original, 32, seed=1)
    _, report = quick_prune(original, calib, eps_l2=3.0)
    layers = _layers(report)
    # conv1's outputs are frozen by what reads them (the channel axis moves), not by a choice.
    assert "Transpose 'to_nhwc'" in layers["conv1"].kept["out"]
    assert "output channels of conv1: Transpose 'to_nhwc'" in cli_summary(report)
    # At a negligible strength the selector keeps everything, and says so.
    _, gentle = quick_prune(conv_bn_relu_chain(), random_inputs(conv_bn_relu_chain(), 32, seed=1), eps_l2=1e-9)
    assert gentle.params_after == gentle.params_before
    assert "kept whole: " in cli_summary(gentle) and "the selector kept every channel" in cli_summary(gentle)
