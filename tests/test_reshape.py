"""A Reshape that keeps the batch and channel axes ((N, C, H, W) -> (N, C, H*W) and back) passes channels."""

from __future__ import annotations


import numpy as np
import onnx

from builders import INPUT, OUTPUT, _Builder, quick_prune, random_inputs, run


def spatial_reshapes(target_channels: int | str = 8, zero_in=(), seed: int = 0) -> onnx.ModelProto:
    """conv1 (3 -> 8) -> relu1 -> Reshape (N, 8, 64) -> Reshape (N, 8, 8, 8) -> conv2 (8 -> 8) -> relu2
    -> GlobalAveragePool -> flatten -> fc (10). ``target_channels``: the channel entry of the first
    Reshape's target (8, or 0 / -1)."""
    b = _Builder(seed)
    x = b.node("Relu", "relu1", [b.conv("conv1", INPUT, 3, 8)])
    x = b.node("Reshape", "merge", [x, b.const("merge_shape", np.array([0, target_channels, 64]))])
    x = b.node("Reshape", "split", [x, b.const("split_shape", np.array([-1, 8, 8, 8]))])
    x = b.node("Relu", "relu2", [b.conv("conv2", x, 8, 8, zero_in=zero_in)])
    x = b.node("Flatten", "flatten", [b.node("GlobalAveragePool", "pool", [x])], axis=1)
    b.gemm("fc", x, 8, 10, output=OUTPUT)
    return b.model("spatial_reshapes", (3, 8, 8), 10)


def test_zero_weight_channels_leave_through_the_reshapes_and_outputs_are_reproduced():
    original = spatial_reshapes(zero_in=(2, 5))
    calib = random_inputs(original, 256, seed=1)
    pruned, report = quick_prune(original, calib, eps_l2=1e-3, ridge=0.0, param_weighting=0.0)
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv2"].frozen is None
    assert layers["conv1"].channels_after <= 6
    x = random_inputs(original, 64, seed=2)
    np.testing.assert_allclose(run(pruned, x), run(original, x), rtol=1e-3, atol=1e-3)
    targets = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer if t.name.endswith("_shape")}
    assert int(targets["merge_shape"][1]) == layers["conv1"].channels_after
    assert int(targets["split_shape"][1]) == layers["conv1"].channels_after


def test_a_copied_or_inferred_channel_entry_is_left_as_it_is():
    for entry in (0, -1):
        original = spatial_reshapes(target_channels=entry, zero_in=(2, 5))
        pruned, report = quick_prune(original, random_inputs(original, 256, seed=1), eps_l2=1e-3, ridge=0.0,
                                param_weighting=0.0)
        targets = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
        assert int(targets["merge_shape"][1]) == entry
        x = random_inputs(original, 8, seed=2)
        np.testing.assert_allclose(run(pruned, x), run(original, x), rtol=1e-3, atol=1e-3)
