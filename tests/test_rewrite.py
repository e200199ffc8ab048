"""Graph analysis and rewriting, driven by hand: remove known-zero channels and get the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from builders import INPUT, OUTPUT, conv_bn_relu_chain, lenet_like, matmul_head, random_inputs, run, with_unsupported_op
from onnxprune.api import tensor_shapes
from onnxprune.graph.analysis import analyse
from onnxprune.graph.io import check_model, export, to_graph
from onnxprune.rewrite import remove_channels, set_weights

ZERO = {"conv2": [1, 5], "fc": [3, 7, 10]}


def _groups(model: onnx.ModelProto):
    model = check_model(model)
    graph = to_graph(model)
    groups, skipped = analyse(graph, tensor_shapes(model))
    return model, graph, {g.consumer.name: g for g in groups}, skipped


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _drop_zero_channels(graph, groups) -> None:
    """Remove exactly the zeroed input channels of conv2 and fc, keeping everything else as it was."""
    conv2, fc = groups["conv2"], groups["fc"]

    keep = np.ones(conv2.n_channels, dtype=bool)
    keep[ZERO["conv2"]] = False
    remove_channels(conv2, keep)
    weight = conv2.consumer.weight
    set_weights(conv2.consumer, weight[:, keep], np.zeros(weight.shape[0], dtype=np.float32))

    keep = np.ones(fc.n_channels, dtype=bool)
    keep[ZERO["fc"]] = False
    remove_channels(fc, keep)
    weight = fc.consumer.weight  # (out, in) with in = channels * block after the Flatten
    blocks = weight.reshape(weight.shape[0], fc.n_channels, fc.block)
    set_weights(fc.consumer, blocks[:, keep].reshape(weight.shape[0], -1), fc.consumer.bias)


def test_removing_zero_channels_reproduces_outputs():
    original = conv_bn_relu_chain(zero_in_channels=ZERO)
    model, graph, groups, _ = _groups(original)
    assert groups["conv2"].prunable and groups["fc"].prunable
    assert groups["fc"].block == 16 and groups["fc"].n_channels == 12
    assert [n.name for n in groups["fc"].path] == ["bn2", "relu2", "pool"]

    _drop_zero_channels(graph, groups)
    pruned = export(graph, model)
    onnx.checker.check_model(pruned, full_check=True)

    # Weights shrank exactly by the removed channels, and so did the BatchNormalization between.
    assert _initializer(pruned, "conv1.weight").shape == (6, 3, 3, 3)
    assert _initializer(pruned, "bn1.scale").shape == (6,)
    assert _initializer(pruned, "conv2.weight").shape == (9, 6, 3, 3)
    assert _initializer(pruned, "bn2.var").shape == (9,)
    assert _initializer(pruned, "fc.weight").shape == (10, 9 * 16)
    kept1 = np.setdiff1d(np.arange(8), ZERO["conv2"])
    np.testing.assert_array_equal(_initializer(pruned, "conv1.weight"), _initializer(original, "conv1.weight")[kept1])

    # Same interface, batch still dynamic.
    assert [i.name for i in pruned.graph.input] == [INPUT]
    assert [o.name for o in pruned.graph.output] == [OUTPUT]
    batch = pruned.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch" and not batch.HasField("dim_value")

    for n in (1, 7):
        x = random_inputs(original, n, seed=n)
        got = run(pruned, x)
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, run(original, x), rtol=1e-5, atol=1e-5)


def test_set_weights_on_matmul_becomes_gemm_with_same_outputs():
    original = matmul_head()
    model, graph, groups, _ = _groups(original)
    fc = groups["fc"]
    set_weights(fc.consumer, fc.consumer.weight, np.zeros(fc.consumer.out_channels, dtype=np.float32))
    pruned = export(graph, model)
    onnx.checker.check_model(pruned, full_check=True)
    node = next(n for n in pruned.graph.node if n.name == "fc")
    assert node.op_type == "Gemm"
    x = random_inputs(original, 5)
    np.testing.assert_allclose(run(pruned, x), run(original, x), rtol=1e-5, atol=1e-5)


def test_analysis_chain_groups_are_prunable():
    _, _, groups, skipped = _groups(conv_bn_relu_chain())
    assert list(groups) == ["conv1", "conv2", "fc"]
    assert not skipped
    assert "graph input" in groups["conv1"].frozen and "'input'" in groups["conv1"].frozen
    assert groups["conv1"].producer is None
    for name, producer in (("conv2", "conv1"), ("fc", "conv2")):
        assert groups[name].prunable, groups[name].frozen
        assert groups[name].producer.name == producer
    assert groups["conv2"].block == 9 and groups["conv2"].n_channels == 8
    assert [n.name for n in groups["conv2"].path] == ["bn1", "relu1"]
    assert groups["conv2"].flatten is None and groups["fc"].flatten.name == "flatten"


def test_analysis_lenet_like():
    _, _, groups, _ = _groups(lenet_like())
    assert list(groups) == ["conv1", "conv2", "fc1", "fc2"]
    assert not groups["conv1"].prunable
    assert all(groups[name].prunable for name in ("conv2", "fc1", "fc2"))
    assert groups["fc1"].block == 9 and groups["fc1"].n_channels == 8
    assert groups["fc2"].block == 1 and groups["fc2"].flatten is None


def test_analysis_transpose_freezes_following_conv():
    _, _, groups, _ = _groups(with_unsupported_op())
    assert "graph input" in groups["conv1"].frozen
    assert not groups["conv2"].prunable
    assert "Transpose" in groups["conv2"].frozen and "'transpose'" in groups["conv2"].frozen
    # Behind the Transpose the channel chain conv2 -> relu2 -> gap -> flatten -> fc is fine.
    assert groups["fc"].prunable and groups["fc"].producer.name == "conv2"


@pytest.mark.parametrize("exclude", ["conv1", "conv2"])
def test_analysis_exclude_freezes_both_sides(exclude):
    model = check_model(conv_bn_relu_chain())
    groups, _ = analyse(to_graph(model), tensor_shapes(model), frozenset({exclude}))
    by_name = {g.consumer.name: g for g in groups}
    assert not by_name["conv2"].prunable and exclude in by_name["conv2"].frozen
    assert by_name["fc"].prunable == (exclude == "conv1")
