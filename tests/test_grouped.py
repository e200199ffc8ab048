"""Grouped (non-depthwise) Conv as a reader: its input channels are pruned group-consistently.

A Conv with g groups (1 < g < C_in) reads input group k into output group k only. It is a layer:
g regressions (one per group) in its unit's joint solve, the same count of input channels removed
from every group (``ChannelGraph.feasible``), a refit per group written back as (out, in/g, kh, kw).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnxprune
from builders import INPUT, OUTPUT, _Builder, random_inputs, run
from test_branches import _analysed

SIZE = 8


def _grouped_conv(b: _Builder, name: str, x: str, c_in: int, c_out: int, group: int, *, k: int = 1,
                  output: str | None = None) -> str:
    fan_in = c_in // group * k * k
    w = (b.rng.standard_normal((c_out, c_in // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    bias = (0.1 * b.rng.standard_normal(c_out)).astype(np.float32)
    return b.node("Conv", name, [x, b.const(f"{name}.weight", w), b.const(f"{name}.bias", bias)], output,
                  kernel_shape=[k, k], pads=[k // 2] * 4, group=group)


def _model(b: _Builder, name: str, out_shape: list, *, c_in: int = 3) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", c_in, SIZE, SIZE])]
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", *out_shape])]
    model = helper.make_model(helper.make_graph(b.nodes, name, inputs, outputs, initializer=b.initializers),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _classifier(group: int, c: int = 16, seed: int = 0) -> onnx.ModelProto:
    """conv1 (3 -> c, 3x3) -> BN -> ReLU -> gconv2 (c -> c, 3x3, group g) -> BN -> ReLU -> GAP -> fc."""
    b = _Builder(seed)
    x = b.node("Relu", "relu1", [b.bn("bn1", b.conv("conv1", INPUT, 3, c, bias=True), c)])
    x = b.node("Relu", "relu2", [b.bn("bn2", _grouped_conv(b, "gconv2", x, c, c, group, k=3), c)])
    x = b.node("Flatten", "flatten", [b.node("GlobalAveragePool", "gap", [x])], axis=1)
    b.gemm("fc", x, c, 10, output=OUTPUT)
    return _model(b, "grouped_classifier", [10])


def _zeroed_producer(group: int, zero: list[int], c: int = 8, seed: int = 0, later_reader: bool = False):
    """conv1 (3 -> c, bias) -> ReLU -> gconv2 (c -> c, 1x1, group g) -> output, with conv1's
    filters and biases ``zero`` exactly zero: those channels are 0 on every input. With
    ``later_reader`` a plain 1x1 conv reads conv1's output first and gconv2 is the unit's later
    reader (look-ahead statistics); the two are added into the output."""
    b = _Builder(seed)
    w = (b.rng.standard_normal((c, 3, 3, 3)) * np.sqrt(2.0 / 27)).astype(np.float32)
    bias = (0.1 * b.rng.standard_normal(c)).astype(np.float32)
    w[zero], bias[zero] = 0.0, 0.0
    x = b.node("Conv", "conv1", [INPUT, b.const("conv1.weight", w), b.const("conv1.bias", bias)],
               kernel_shape=[3, 3], pads=[1] * 4)
    x = b.node("Relu", "relu1", [x])
    if later_reader:
        plain = b.conv("conv2", x, c, c, k=1, pad=0, bias=True)
        b.node("Add", "add", [plain, _grouped_conv(b, "gconv3", x, c, c, group)], OUTPUT)
    else:
        _grouped_conv(b, "gconv2", x, c, c, group, output=OUTPUT)
    return _model(b, "zeroed_producer", [c, SIZE, SIZE])


def _weight(model: onnx.ModelProto, node_name: str) -> np.ndarray:
    node = next(n for n in model.graph.node if n.name == node_name)
    return onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == node.input[1]))


def _interface(model: onnx.ModelProto) -> list:
    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    return [(v.name, dims(v)) for v in list(model.graph.input) + list(model.graph.output)]


def _session_outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: x})[0]


@pytest.mark.parametrize("group", [2, 4])
def test_grouped_conv_input_channels_are_pruned_the_same_count_per_group(group):
    model = _classifier(group)
    x = random_inputs(model, 64)
    pruned, report = onnxprune.prune(model, x, rows_per_layer=2048, eps_l2=20.0)
    onnx.checker.check_model(pruned, full_check=True)
    assert _interface(pruned) == _interface(model)
    assert _session_outputs(pruned, x[:3]).shape == (3, 10)
    layers = {layer.name: layer for layer in report.layers}
    gconv = layers["gconv2"]
    assert gconv.frozen is None
    assert gconv.in_channels_after < 16 and gconv.in_channels_after % group == 0
    assert gconv.in_channels_after == layers["conv1"].channels_after
    weight = _weight(pruned, "gconv2")
    assert weight.shape == (gconv.channels_after, gconv.in_channels_after // group, 3, 3)
    assert gconv.channels_after % group == 0
    node = next(n for n in pruned.graph.node if n.name == "gconv2")
    assert next(a.i for a in node.attribute if a.name == "group") == group
    assert report.params_after < report.params_before


@pytest.mark.parametrize("group, zero", [(2, [1, 6]), (2, [0, 2, 5, 7]), (4, [0, 3, 5, 6])])
@pytest.mark.parametrize("selector", ["ges", "l1"])
def test_removing_zero_channels_before_a_grouped_conv_reproduces_the_outputs(group, zero, selector):
    """Only channels that are exactly zero go (the same count from each group, at different places
    in each): the per-group refit must give the original outputs back."""
    model = _zeroed_producer(group, zero)
    x = random_inputs(model, 48)
    options = {"selector": "l1", "keep_fraction": 1 - len(zero) / 8} if selector == "l1" else {"eps_l2": 1e-3}
    pruned, report = onnxprune.prune(model, x, rows_per_layer=4096, **options)
    onnx.checker.check_model(pruned, full_check=True)
    assert _interface(pruned) == _interface(model)
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv1"].channels_after == 8 - len(zero)
    assert _weight(pruned, "gconv2").shape == (8, (8 - len(zero)) // group, 1, 1)
    kept = [c for c in range(8) if c not in zero]
    np.testing.assert_array_equal(_weight(pruned, "conv1"), _weight(model, "conv1")[kept])
    x_test = random_inputs(model, 6, seed=5)
    np.testing.assert_allclose(run(pruned, x_test), run(model, x_test), rtol=1e-4, atol=1e-4)


def test_a_later_grouped_reader_gets_per_group_lookahead_statistics():
    model = _zeroed_producer(4, [1, 2, 4, 7], later_reader=True)
    x = random_inputs(model, 48)
    pruned, report = onnxprune.prune(model, x, rows_per_layer=4096, selector="l1", keep_fraction=0.5)
    onnx.checker.check_model(pruned, full_check=True)
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv1"].channels_after == 4
    assert _weight(pruned, "gconv3").shape == (8, 1, 1, 1)
    assert _weight(pruned, "conv2").shape == (8, 4, 1, 1)
    x_test = random_inputs(model, 6, seed=5)
    np.testing.assert_allclose(run(pruned, x_test), run(model, x_test), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("selector", ["ges", "l1"])
def test_groups_that_cannot_lose_as_many_keep_everything_exactly(selector):
    """The zero channels all sit in group 0: group 1 would lose none, so neither loses any."""
    model = _zeroed_producer(2, [0, 2])
    x = random_inputs(model, 48)
    options = {"selector": "l1", "keep_fraction": 0.75} if selector == "l1" else {"eps_l2": 1e-3}
    pruned, report = onnxprune.prune(model, x, rows_per_layer=4096, **options)
    onnx.checker.check_model(pruned, full_check=True)
    assert _weight(pruned, "gconv2").shape == (8, 4, 1, 1)
    assert _weight(pruned, "conv1").shape == (8, 3, 3, 3)
    x_test = random_inputs(model, 6, seed=5)
    np.testing.assert_allclose(run(pruned, x_test), run(model, x_test), rtol=1e-4, atol=1e-4)


def test_a_group_of_frozen_channels_freezes_the_other_groups_with_a_reason():
    """gconv2 (group 2) reads concat(input, conv1): group 0 is the graph input's channels, which
    cannot go, so conv1's channels in group 1 cannot go either, and the summary says why."""
    b = _Builder(0)
    x = b.node("Concat", "concat", [INPUT, b.node("Relu", "relu1", [b.conv("conv1", INPUT, 4, 4, bias=True)])],
               axis=1)
    x = b.node("Relu", "relu2", [_grouped_conv(b, "gconv2", x, 8, 8, 2, k=3)])
    x = b.node("Flatten", "flatten", [b.node("GlobalAveragePool", "gap", [x])], axis=1)
    b.gemm("fc", x, 8, 10, output=OUTPUT)
    model = _model(b, "frozen_group", [10], c_in=4)
    _, graph, channels = _analysed(model)
    conv1 = next(layer for layer in channels.layers if layer.name == "conv1")
    reason = channels.frozen[int(channels.classes(conv1.node.outputs[0].name)[0])]
    assert reason == ("grouped Conv 'gconv2' (group=2) reads them in 2 groups that must lose as many channels "
                      "each, and group 0 cannot lose any (channels come from graph input 'input')")
    gconv = next(layer for layer in channels.layers if layer.name == "gconv2")
    assert channels.frozen_reason(gconv) is not None
    x = random_inputs(model, 32, seed=1)
    pruned, report = onnxprune.prune(model, x, rows_per_layer=2048, eps_l2=20.0)
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv1"].channels_after == 4 and layers["gconv2"].in_channels_after == 8
    assert "group 0 cannot lose any" in layers["conv1"].kept["out"]
    assert layers["gconv2"].channels_after < 8  # its own outputs are still pruned, the same count per group
    assert _weight(pruned, "gconv2").shape[0] % 2 == 0
    assert run(pruned, x[:2]).shape == (2, 10)


def test_grouped_conv_in_a_shufflenet_unit_prunes_into_a_valid_model():
    """ShuffleNet v1: the residual stream is read by grouped 1x1 convs, and a channel shuffle
    (Reshape, Transpose, Reshape) sits between a block's two grouped convs: the shuffle becomes a
    Gather (graph/shuffle.py), so the shuffled channels are pruned too; the stream and both
    grouped convs' inputs lose the same count per group."""
    b = _Builder(1)
    c, g = 8, 2
    stream = b.node("Relu", "stem_act", [b.bn("stem_bn", b.conv("stem", INPUT, 3, c, bias=True), c)])
    for block in range(2):
        y = b.node("Relu", f"b{block}_a1", [b.bn(f"b{block}_bn1", _grouped_conv(b, f"b{block}_g1", stream, c, c, g), c)])
        y = b.node("Reshape", f"b{block}_r1", [y, b.const(f"b{block}.s1", np.array([0, g, c // g, SIZE, SIZE]))])
        y = b.node("Transpose", f"b{block}_t", [y], perm=[0, 2, 1, 3, 4])
        y = b.node("Reshape", f"b{block}_r2", [y, b.const(f"b{block}.s2", np.array([0, c, SIZE, SIZE]))])
        y = b.bn(f"b{block}_bn2", _grouped_conv(b, f"b{block}_g2", y, c, c, g), c)
        stream = b.node("Relu", f"b{block}_out", [b.node("Add", f"b{block}_add", [y, stream])])
    x = b.node("Flatten", "flatten", [b.node("GlobalAveragePool", "gap", [stream])], axis=1)
    b.gemm("fc", x, c, 10, output=OUTPUT)
    model = _model(b, "shuffle_unit", [10])
    x = random_inputs(model, 48)
    pruned, report = onnxprune.prune(model, x, rows_per_layer=2048, eps_l2=20.0)
    onnx.checker.check_model(pruned, full_check=True)
    assert run(pruned, x[:2]).shape == (2, 10)
    layers = {layer.name: layer for layer in report.layers}
    assert layers["b1_g1"].frozen is None and layers["b1_g1"].in_channels_after < c
    assert layers["b0_g2"].frozen is None and layers["b0_g2"].in_channels_after < c
    for name in ("b0_g1", "b1_g1", "b0_g2", "b1_g2"):
        weight = _weight(pruned, name)
        assert weight.shape[0] % g == 0 and weight.shape[1] * g == layers[name].in_channels_after


def test_nearest_feasible_decision_may_spend_a_few_kept_channels():
    """Groups 0-2 would lose two channels each and group 3 none: keeping back six costs more than
    also removing group 3's two worst-scored channels (SPARE_COST each), which the program finds;
    without spares it keeps back, and it never empties a tensor."""
    _, _, channels = _analysed(_classifier(4))
    gconv = next(layer for layer in channels.layers if layer.name == "gconv2")
    inputs = channels.classes(gconv.node.inputs[0].name)  # 16 channels, groups of 4
    removed = inputs[[0, 1, 4, 5, 8, 9]]
    score = {int(c): float(i) for i, c in enumerate(inputs)}
    score[int(inputs[14])] = -1.0  # group 3's worst two: 12 and 14
    assert channels.feasible(removed, score).size == 0
    chosen = channels.feasible(removed, score, spare=inputs[12:])
    np.testing.assert_array_equal(chosen, inputs[[0, 1, 4, 5, 8, 9, 12, 14]])
    # Three groups losing all four: each group loses three (its best-scored one stays), never four,
    # which would empty the tensor.
    chosen = channels.feasible(inputs[:12], score, spare=inputs[12:])
    np.testing.assert_array_equal(chosen, inputs[[0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14]])


def test_min_keep_floor_holds_with_grouped_readers():
    """The nearest equal decision never spends a channel the --min-keep floor keeps."""
    model = _classifier(4)
    x = random_inputs(model, 64)
    _, report = onnxprune.prune(model, x, rows_per_layer=2048, eps_l2=20.0, min_keep=0.75)
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv1"].channels_after >= 12 and layers["gconv2"].in_channels_after % 4 == 0


def test_a_layer_kept_whole_by_the_groups_says_so():
    """One zero channel in one group of two: removing it alone would leave the groups unequal,
    and keeping it back is nearer than removing a live channel from the other group. The report
    must name the groups, not the selector, as why conv1 keeps every channel."""
    from onnxprune.report import KEPT_BY_GROUPS
    model = _zeroed_producer(2, [1])
    x = random_inputs(model, 48)
    pruned, report = onnxprune.prune(model, x, rows_per_layer=4096, eps_l2=1e-3)
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv1"].channels_after == 8
    assert layers["conv1"].kept["out"] == KEPT_BY_GROUPS
