"""Op coverage beyond the layers: producers nothing refits (ConvTranspose), Softmax over a
spatial axis, and the rule that every channel that stays says why in the report.

The zero-weight check (test_branches.remove_zeroed_channels) covers each new piece; here are the
facts it cannot see: which channels are frozen and why, the MACs and parameters a producer
controls, and the report's reasons.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxprune
from builders import random_inputs, run
from onnxprune.ops import RULES, node_macs
from onnxprune.pruning.allocation import _output_pixels
from test_branches import _analysed, assert_same_outputs, remove_zeroed_channels
from topologies import PIECES, build


def _node(graph, op):
    return next(node for node in graph.nodes if node.op == op)


@pytest.mark.parametrize("piece", ["conv_transpose", "conv_transpose_dw", "softmax_spatial"])
def test_zeroed_channels_through_new_ops(piece):
    reference, pruned, chosen = remove_zeroed_channels(build(["plain", piece, "plain"]), seed=3, fraction=0.5)
    assert chosen.size > 0
    assert_same_outputs(reference, pruned)


def test_conv_transpose_outputs_are_pruned_inputs_frozen_with_reason():
    _, graph, channels = _analysed(build(["plain", "conv_transpose"]))
    deconv = _node(graph, "ConvTranspose")
    out = channels.classes(deconv.outputs[0].name)
    assert out.size == 8 and not any(int(c) in channels.frozen for c in out)  # new channels, prunable
    reasons = {channels.frozen.get(int(c)) for c in channels.classes(deconv.inputs[0].name)}
    assert reasons == {f"ConvTranspose '{deconv.name}' reads them and is not refit"}
    producer = next(layer for layer in channels.layers if layer.name == "conv2")
    assert channels.output_kept_reason(producer) == f"ConvTranspose '{deconv.name}' reads them and is not refit"
    # The unit of its outputs is decided by the conv that reads them.
    unit = next(u for u in channels.units() if np.isin(out, u.classes).all())
    assert [layer.name for layer in unit.consumers] == ["conv6"]  # after deconv3, relu4, pool5


def test_conv_transpose_rows_count_in_params_and_macs():
    _, graph, channels = _analysed(build(["plain", "conv_transpose"]))
    deconv = _node(graph, "ConvTranspose")
    w = np.asarray(deconv.inputs[1].values)
    in_hw = channels.shapes[deconv.inputs[0].name][2:]
    # weight elements x input pixels: 8 x 8 x 2 x 2 weights, each used at 16 x 16 input pixels.
    assert node_macs(deconv, channels.shapes) == w.size * in_hw[0] * in_hw[1] == 256 * 256
    out = np.unique(channels.classes(deconv.outputs[0].name))
    reader = next(layer for layer in channels.layers if layer.name == "conv6")
    # Its weight rows, bias and BN entries, and the reader's columns.
    assert channels.params_controlled(out) == w.size + 8 + 4 * 8 + reader.weight.size
    scale = _output_pixels(channels.layers, channels.shapes)
    assert channels.params_controlled(out, scale) == w.size * 256 + reader.weight.size * scale["conv6"]


def test_non_depthwise_grouped_conv_transpose_freezes_with_reason():
    model = build(["plain", "conv_transpose"])
    node = next(n for n in model.graph.node if n.op_type == "ConvTranspose")
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    values = onnx.numpy_helper.to_array(weight)[:, :4]  # (8, 4, 2, 2), group 2: 8 outputs
    weight.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(values), weight.name))
    next(a for a in node.attribute if a.name == "group").i = 2
    _, _, channels = _analysed(model)
    assert any("grouped ConvTranspose (group=2" in r for r in channels.frozen.values())


@pytest.mark.parametrize("axis, prunable", [(3, True), (-1, True), (1, False)])
def test_softmax_passes_channels_only_off_the_channel_axis(axis, prunable):
    _, graph, channels = _analysed(build(["plain", ("softmax_spatial", {"axis": axis})]))
    softmax = _node(graph, "Softmax")
    classes = channels.classes(softmax.inputs[0].name)
    assert (int(classes[0]) not in channels.frozen) == prunable
    if not prunable:
        assert "normalises across channels" in channels.frozen[int(classes[0])]


def test_activation_rules_are_registered():
    for op in ("HardSwish", "HardSigmoid", "Mish", "Softmax", "LogSoftmax", "ConvTranspose"):
        assert op in RULES


def test_every_kept_channel_says_why():
    """A DBNet-style conv -> BN -> ReLU -> ConvTranspose: the conv keeps all its output channels
    because the ConvTranspose is not refit, and the report says so."""
    model = build(["plain", "conv_transpose", "plain"])
    x = random_inputs(model, 48)
    pruned, report = onnxprune.prune(model, x, rows_per_layer=2048, eps_l2=1e-6)  # GES keeps nearly all
    assert run(pruned, x[:2]).shape == (2, 10)
    for layer in report.layers:
        if layer.in_channels_after == layer.in_channels_before:
            assert layer.frozen or layer.kept.get("in"), layer
        if layer.channels_after == layer.channels_before:
            assert layer.kept.get("out"), layer
    layers = {layer.name: layer for layer in report.layers}
    assert "reads them and is not refit" in layers["conv2"].kept["out"]
    assert layers["fc"].kept["out"] == "tensor 'logits' is a graph output"
    assert "conv_transpose" in PIECES


def test_filter_norms_score_a_conv_transpose_outputs():
    """The L1 selector scores a producer nothing refits by its own filters: it keeps the strong ones."""
    model = build(["plain", "conv_transpose", "plain"])
    node = next(n for n in model.graph.node if n.op_type == "ConvTranspose")
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    values = onnx.numpy_helper.to_array(weight).copy()
    strong = [1, 2, 5, 6]
    values[:, strong] *= 50.0
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    pruned, _ = onnxprune.prune(model, random_inputs(model, 48), rows_per_layer=2048, selector="l1",
                                keep_fraction=0.5)
    kept = onnx.numpy_helper.to_array(next(i for i in pruned.graph.initializer if i.name == node.input[1]))
    np.testing.assert_array_equal(kept, values[:, strong])  # not refit: the strong filters, as they were


def _grouped_model():
    return build(["plain", "grouped", "plain"])  # plain -> Conv group 2 (8 -> 8) -> BN -> ReLU -> conv


def test_grouped_conv_outputs_are_pruned_the_same_count_per_group():
    reference, pruned, chosen = remove_zeroed_channels(_grouped_model(), seed=1, fraction=0.5)
    node = next(n for n in pruned.graph.node if n.op_type == "Conv" and n.name == "conv3")
    weight = next(i for i in pruned.graph.initializer if i.name == node.input[1])
    assert next(a.i for a in node.attribute if a.name == "group") == 2
    # 8 -> 4 outputs and 8 -> 4 inputs (2 of 4 per group): the same count from every group.
    assert list(weight.dims) == [4, 2, 3, 3]
    assert_same_outputs(reference, pruned)


def test_feasible_keeps_back_the_best_scored_per_group():
    _, graph, channels = _analysed(_grouped_model())
    grouped = next(n for n in graph.nodes if n.name == "conv3")
    out = channels.classes(grouped.outputs[0].name)  # groups: out[:4], out[4:]
    removed = np.array([out[0], out[1], out[2], out[5]])
    score = {int(out[0]): 3.0, int(out[1]): 1.0, int(out[2]): 2.0, int(out[5]): 0.0}
    # Group 0 would lose 3 and group 1 one: group 0 keeps back its two best (out[0], out[2]).
    np.testing.assert_array_equal(channels.feasible(removed, score), [out[1], out[5]])
    assert channels.feasible(removed).size == 2
    # Its inputs are read per group (it is refit group by group): prunable, the same count per group.
    inputs = channels.classes(grouped.inputs[0].name)
    assert not any(int(c) in channels.frozen for c in inputs)
    np.testing.assert_array_equal(channels.feasible(inputs[[0, 1, 4]], {int(c): 0.0 for c in inputs}),
                                  inputs[[1, 4]])  # ties: the first is kept back


def test_grouped_conv_prunes_end_to_end():
    model = _grouped_model()
    x = random_inputs(model, 64)
    pruned, report = onnxprune.prune(model, x, rows_per_layer=2048, eps_l2=50.0)
    onnx.checker.check_model(pruned, full_check=True)
    assert run(pruned, x[:4]).shape == (4, 10)
    node = next(n for n in pruned.graph.node if n.name == "conv3")
    weight = next(i for i in pruned.graph.initializer if i.name == node.input[1])
    assert weight.dims[0] < 8 and weight.dims[0] % 2 == 0, list(weight.dims)
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv3"].in_channels_after < 8 and layers["conv3"].in_channels_after % 2 == 0
    assert weight.dims[1] * 2 == layers["conv3"].in_channels_after
    assert report.macs_after < report.macs_before


def test_lrn_freezes_the_channels_it_reads_with_its_reason():
    from topologies import Net
    from builders import INPUT
    net = Net(0)
    x = net.conv_bn(INPUT, 3, 8)
    x = net.node("LRN", "lrn", [x], size=5)
    x = net.conv_bn(x, 8, 8)
    x = net.node("Flatten", "flatten", [net.node("GlobalAveragePool", "gap", [x])], axis=1)
    net.gemm("fc", x, 8, 10, output="logits")
    _, graph, channels = _analysed(net.model("lrn_net", (3, 16, 16), 10))
    lrn = _node(graph, "LRN")
    reasons = {channels.frozen.get(int(c)) for c in channels.classes(lrn.inputs[0].name)}
    assert reasons == {"LRN 'lrn': it normalises each channel by its 5 neighbouring channels"}
