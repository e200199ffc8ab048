"""Graph analysis and rewriting, driven by hand: remove known-zero channels and get the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from builders import INPUT, OUTPUT, conv_bn_relu_chain, lenet_like, matmul_head, random_inputs, run, with_unsupported_op
from onnxprune.api import tensor_shapes
from onnxprune.graph.channels import analyse_channels
from onnxprune.graph.io import check_model, export, to_graph
from onnxprune.pruning.rewrite import remove_classes, set_weights

ZERO = {"conv2": [1, 5], "fc": [3, 7, 10]}


def _analysed(model: onnx.ModelProto, exclude: frozenset[str] = frozenset()):
    model = check_model(model)
    graph = to_graph(model)
    channels = analyse_channels(graph, tensor_shapes(model), exclude)
    return model, graph, channels, {layer.name: layer for layer in channels.layers}


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _drop_zero_channels(graph, channels, layers) -> None:
    """Remove exactly the zeroed input channels of conv2 and fc (channels of conv1's and conv2's outputs)."""
    removed = np.concatenate([channels.classes("conv1_out")[ZERO["conv2"]], channels.classes("conv2_out")[ZERO["fc"]]])
    remove_classes(channels, graph, removed)


def test_removing_zero_channels_reproduces_outputs():
    original = conv_bn_relu_chain(zero_in_channels=ZERO)
    model, graph, channels, layers = _analysed(original)
    assert channels.frozen_reason(layers["conv2"]) is None and channels.frozen_reason(layers["fc"]) is None
    # fc reads 16 features (a 4x4 map) of each of conv2's 12 channels, in channel-major blocks.
    np.testing.assert_array_equal(channels.input_classes(layers["fc"]), np.repeat(channels.classes("conv2_out"), 16))

    _drop_zero_channels(graph, channels, layers)
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
    model, graph, _, layers = _analysed(original)
    fc = layers["fc"]
    set_weights(fc, fc.weight, np.zeros(fc.out_channels, dtype=np.float32))
    pruned = export(graph, model)
    onnx.checker.check_model(pruned, full_check=True)
    node = next(n for n in pruned.graph.node if n.name == "fc")
    assert node.op_type == "Gemm"
    x = random_inputs(original, 5)
    np.testing.assert_allclose(run(pruned, x), run(original, x), rtol=1e-5, atol=1e-5)


def test_analysis_chain_units_are_single_layers():
    _, _, channels, layers = _analysed(conv_bn_relu_chain())
    assert list(layers) == ["conv1", "conv2", "fc"]
    assert not channels.skipped
    reason = channels.frozen_reason(layers["conv1"])
    assert "graph input" in reason and "'input'" in reason
    units = channels.units()
    assert [[layer.name for layer in unit.consumers] for unit in units] == [["conv2"], ["fc"]]
    assert [len(unit.classes) for unit in units] == [8, 12]
    # conv2 reads conv1's channels through bn1 and relu1: the same ids.
    np.testing.assert_array_equal(channels.input_classes(layers["conv2"]), channels.classes("conv1_out"))


def test_analysis_lenet_like():
    _, _, channels, layers = _analysed(lenet_like())
    assert list(layers) == ["conv1", "conv2", "fc1", "fc2"]
    assert channels.frozen_reason(layers["conv1"]) is not None
    assert all(channels.frozen_reason(layers[name]) is None for name in ("conv2", "fc1", "fc2"))
    assert channels.input_classes(layers["fc1"]).size == 72 and np.unique(channels.input_classes(layers["fc1"])).size == 8


def test_analysis_transpose_freezes_following_conv():
    _, _, channels, layers = _analysed(with_unsupported_op())
    assert "graph input" in channels.frozen_reason(layers["conv1"])
    reason = channels.frozen_reason(layers["conv2"])
    assert "Transpose" in reason and "'transpose'" in reason
    # Behind the Transpose the channel chain conv2 -> relu2 -> gap -> flatten -> fc is fine.
    assert channels.frozen_reason(layers["fc"]) is None


@pytest.mark.parametrize("exclude", ["conv1", "conv2"])
def test_analysis_exclude_freezes_both_sides(exclude):
    _, _, channels, layers = _analysed(conv_bn_relu_chain(), frozenset({exclude}))
    assert exclude in channels.frozen_reason(layers["conv2"])
    assert (channels.frozen_reason(layers["fc"]) is None) == (exclude == "conv1")
