"""Channel shuffles (ShuffleNet) become tied Gathers, so channels are pruned through them."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from builders import INPUT, OUTPUT, _Builder, quick_prune, random_inputs, run
from onnxprune.graph.io import to_graph
from onnxprune.graph.shapes import tensor_shapes
from onnxprune.graph.shuffle import shuffle_indices, shuffles_as_gathers


def shuffled_model(zero_positions=(), groups: int = 2, seed: int = 0) -> onnx.ModelProto:
    """conv1 (3 -> 8) -> bn1 -> relu1 -> channel shuffle (groups) -> conv2 (8 -> 8, 2 groups) -> relu2
    -> GlobalAveragePool -> flatten -> fc (10). ``zero_positions``: conv2 input channels (after the
    shuffle) whose weights are 0."""
    b = _Builder(seed)
    x = b.node("Relu", "relu1", [b.bn("bn1", b.conv("conv1", INPUT, 3, 8), 8)])
    x = b.node("Reshape", "shuffle_split", [x, b.const("split_shape", np.array([0, groups, 8 // groups, 8, 8]))])
    x = b.node("Transpose", "shuffle_swap", [x], perm=[0, 2, 1, 3, 4])
    x = b.node("Reshape", "shuffle_merge", [x, b.const("merge_shape", np.array([0, 8, 8, 8]))])
    w = (b.rng.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32)
    for position in zero_positions:  # group g of conv2 reads positions 4g .. 4g + 3
        w[4 * (position // 4):4 * (position // 4) + 4, position % 4] = 0.0
    x = b.node("Conv", "conv2", [x, b.const("conv2.weight", w)], kernel_shape=[3, 3], pads=[1] * 4, group=2)
    x = b.node("GlobalAveragePool", "pool", [b.node("Relu", "relu2", [x])])
    x = b.node("Flatten", "flatten", [x], axis=1)
    b.gemm("fc", x, 8, 10, output=OUTPUT)
    return b.model("shuffled", (3, 8, 8), 10)


@pytest.mark.parametrize("groups, channels", [(2, 8), (3, 12), (4, 232)])
def test_indices_are_the_reshape_transpose_reshape_permutation(groups, channels):
    expected = np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)
    np.testing.assert_array_equal(shuffle_indices(groups, channels), expected)


def test_the_rewritten_graph_computes_the_same_outputs():
    model = shuffled_model()
    graph = to_graph(model)
    assert shuffles_as_gathers(graph, tensor_shapes(model)) == 1
    assert {n.op for n in graph.nodes}.isdisjoint({"Transpose", "Reshape"})
    rewritten = gs.export_onnx(graph)
    x = random_inputs(model, 4, seed=3)
    np.testing.assert_allclose(run(rewritten, x), run(model, x), rtol=1e-5, atol=1e-5)


def test_a_reshape_that_is_not_a_shuffle_is_left_alone():
    model = shuffled_model()
    for node in model.graph.node:
        if node.name == "shuffle_swap":
            node.attribute[0].ints[:] = [0, 1, 2, 4, 3]  # swaps H and W instead
    graph = to_graph(model)
    assert shuffles_as_gathers(graph, tensor_shapes(model)) == 0


def test_zero_weight_channels_leave_through_the_shuffle_and_outputs_are_reproduced():
    # Positions 1 and 6 after a 2-group shuffle of 8 channels are conv1's channels 4 and 3.
    original = shuffled_model(zero_positions=(1, 6))
    calib = random_inputs(original, 256, seed=1)
    pruned, report = quick_prune(original, calib, eps_l2=1e-3, ridge=0.0, param_weighting=0.0)
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv2"].in_channels_after <= 6
    w1_before = next(onnx.numpy_helper.to_array(t) for t in original.graph.initializer if t.name == "conv1.weight")
    w1_after = next(onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer if t.name == "conv1.weight")
    kept = {int(np.flatnonzero(np.all(w1_before == row, axis=(1, 2, 3)))[0]) for row in w1_after}
    assert not kept & {3, 4}, f"conv1 kept {sorted(kept)}"
    assert "Gather" in {n.op_type for n in pruned.graph.node}
    x = random_inputs(original, 64, seed=2)
    np.testing.assert_allclose(run(pruned, x), run(original, x), rtol=1e-3, atol=1e-3)
