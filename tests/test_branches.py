"""Channel groups through residual Adds, Concat, Split/Slice, depthwise convs, Mul, Pad and Resize.

The central check: zero every weight column that reads a chosen set of prunable channels, remove
those channels with the rewrite, and the pruned model must give the same outputs. It exercises
every coupling rule's bookkeeping (which tensors share channels, and what each op must edit).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onnxprune
from builders import INPUT, OUTPUT, random_inputs, run
from onnxprune.api import tensor_shapes
from onnxprune.graph.channels import analyse_channels
from onnxprune.graph.io import check_model, export, to_graph
from onnxprune.measure.counts import count_params
from onnxprune.pruning.rewrite import remove_classes
from topologies import ARCHITECTURES, PIECES, build


def _analysed(model: onnx.ModelProto):
    model = check_model(model)
    graph = to_graph(model)
    return model, graph, analyse_channels(graph, tensor_shapes(model))


def remove_zeroed_channels(model: onnx.ModelProto, seed: int = 0, fraction: float = 0.4):
    """(model with the chosen channels' reader columns zeroed, the same with those channels removed)."""
    model, graph, channels = _analysed(model)
    rng = np.random.default_rng(seed)
    chosen = []
    for unit in channels.units():
        n = len(unit.classes)
        if n > 1:
            chosen.extend(rng.choice(unit.classes, size=max(1, int(fraction * n)), replace=False))
    chosen = np.array(chosen, dtype=np.int64)
    for layer in channels.layers:
        classes = channels.input_classes(layer)
        if classes is None:
            continue
        columns = np.isin(classes, chosen)
        weight = np.array(layer.weight_tensor.values)
        if layer.groups > 1:  # (out, in/g, kh, kw): the rows of group k read the channels of group k
            blocks = weight.reshape((layer.groups, -1) + weight.shape[1:])
            for block, mask in zip(blocks, columns.reshape(layer.groups, -1)):
                block[:, mask] = 0.0
            layer.weight_tensor.values = blocks.reshape(weight.shape)
            continue
        in_axis = 1 - layer.rule.out_axis(layer.node)
        index = [slice(None)] * weight.ndim
        index[in_axis] = columns
        weight[tuple(index)] = 0.0
        layer.weight_tensor.values = weight
    reference = export(graph, model)
    remove_classes(channels, graph, chosen)
    return reference, export(graph, model), chosen


def assert_same_outputs(reference: onnx.ModelProto, pruned: onnx.ModelProto, n: int = 4) -> None:
    onnx.checker.check_model(pruned, full_check=True)
    x = random_inputs(reference, n, seed=1)
    np.testing.assert_allclose(run(pruned, x), run(reference, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("piece", sorted(PIECES))
def test_removing_zeroed_channels_keeps_outputs(piece):
    reference, pruned, chosen = remove_zeroed_channels(build(["plain", piece, "plain"]))
    assert chosen.size > 0
    assert count_params(to_graph(pruned)) < count_params(to_graph(reference))
    assert_same_outputs(reference, pruned)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architectures_keep_outputs_for_kept_channels(name):
    reference, pruned, chosen = remove_zeroed_channels(ARCHITECTURES[name]())
    assert chosen.size > 0
    assert_same_outputs(reference, pruned)


def test_residual_stage_is_one_unit_with_every_reader():
    _, _, channels = _analysed(build(["residual", "residual", ("residual", {"c_out": 12, "stride": 2})]))
    units = {tuple(layer.name for layer in unit.consumers): unit for unit in channels.units()}
    # The stem's output, both identity Adds and what reads them: the convs of all three blocks'
    # first layers and the last block's 1x1 shortcut.
    stage = next(unit for names, unit in units.items() if len(names) == 4)
    assert [layer.name for layer in stage.consumers] == ["conv2", "conv6", "conv10", "conv12"]
    assert len(stage.classes) == 8


def test_concat_unit_spans_the_dense_block():
    _, _, channels = _analysed(build([("dense", {"layers": 3})], stem=6))
    readers = {layer.name: channels.input_classes(layer) for layer in channels.layers}
    # Each 1x1 bottleneck reads every channel concatenated before it; 6 + 4 + 4 + 4 reach the head.
    assert [readers[n].size for n in ("conv2", "conv5", "conv8")] == [6, 10, 14]
    assert readers["fc"].size == 18
    unit = next(u for u in channels.units() if any(layer.name == "fc" for layer in u.consumers))
    assert {layer.name for layer in unit.consumers} == {"conv2", "conv5", "conv8", "fc"}
    assert len(unit.classes) == 18


def test_a_channel_shuffle_is_pruned_through():
    model = build(["plain", "shuffle"])
    pruned, report = onnxprune.prune(model, random_inputs(model, 32), rows_per_layer=2048, eps_l2=4.0)
    frozen = [layer.name for layer in report.layers if layer.frozen and "graph input" not in layer.frozen]
    assert not frozen, [layer.frozen for layer in report.layers]
    assert report.params_after < report.params_before
    assert "Gather" in {node.op_type for node in pruned.graph.node}
    assert run(pruned, random_inputs(model, 2)).shape == (2, 10)


@pytest.mark.parametrize("piece, reason", [
    ("nhwc_round_trip", "moves the channel axis"),
])
def test_unsupported_coupling_freezes_with_a_reason(piece, reason):
    model = build(["plain", piece])
    _, _, channels = _analysed(model)
    reasons = [channels.frozen_reason(layer) or "" for layer in channels.layers]
    assert any(reason in r for r in reasons), reasons
    pruned, report = onnxprune.prune(model, random_inputs(model, 32), rows_per_layer=2048)
    assert any(reason in (layer.frozen or "") for layer in report.layers)
    assert run(pruned, random_inputs(model, 2)).shape == (2, 10)


def test_shared_bias_behind_identity_is_pruned_per_reader():
    """The TorchScript exporter shares a BatchNormalization bias between two layers through an Identity."""
    model = build([("residual", {"c_out": 12, "stride": 2})])
    bias = next(i for i in model.graph.initializer if i.name == "conv4_bn.bias")
    model.graph.node.insert(0, onnx.helper.make_node("Identity", [bias.name], ["conv4_bn.bias_copy"], name="copy"))
    shortcut_bn = next(n for n in model.graph.node if n.name == "conv4_bn")
    shortcut_bn.input[2] = "conv4_bn.bias_copy"
    next(n for n in model.graph.node if n.name == "conv3_bn").input[2] = bias.name
    reference, pruned, chosen = remove_zeroed_channels(model)
    assert chosen.size > 0
    assert_same_outputs(reference, pruned)


def test_architectures_prune_end_to_end():
    for name, make in ARCHITECTURES.items():
        model = make()
        x = random_inputs(model, 64)
        pruned, report = onnxprune.prune(model, x, rows_per_layer=4096, eps_l2=4.0)
        assert report.params_after < report.params_before, name
        out = run(pruned, x[:8])
        assert out.shape == (8, 10) and np.isfinite(out).all(), name
        assert [i.name for i in pruned.graph.input] == [INPUT] and [o.name for o in pruned.graph.output] == [OUTPUT]


piece_lists = st.lists(st.sampled_from(sorted(PIECES)), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=piece_lists, seed=st.integers(0, 1000), eps_l2=st.sampled_from([0.5, 4.0, 50.0]))
def test_random_branchy_graphs(pieces, seed, eps_l2):
    model = build(pieces, seed=seed)
    reference, pruned, _ = remove_zeroed_channels(model, seed=seed)
    assert_same_outputs(reference, pruned, n=2)
    x = random_inputs(model, 24, seed=seed)
    pruned, _ = onnxprune.prune(model, x, rows_per_layer=1024, eps_l2=eps_l2, seed=seed)
    out = run(pruned, x[:3])
    assert out.shape == (3, 10) and np.isfinite(out).all()
