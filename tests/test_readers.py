"""Readers of shared channels pick their own (``--reader-channels own``): a Gather in front of each
reader of a residual stream, the reader's columns decided by its own regression, the stream kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxprune
from builders import random_inputs, run
from onnxprune.config import PruneConfig
from onnxprune.errors import ConfigError
from onnxprune.graph.channels import analyse_channels
from onnxprune.graph.io import export
from onnxprune.pruning.readers import insert_selections, readers_of_shared_channels, unread_classes
from onnxprune.pruning.rewrite import remove_classes
from test_branches import _analysed, assert_same_outputs
from topologies import build

RESIDUAL = ["residual", ("residual", {"stride": 2, "c_out": 12}), "residual"]


def _prune(model, mode, **options):
    x = random_inputs(model, 48)
    config = PruneConfig(reader_channels=mode, holdout=0, **options)
    return onnxprune.prune(model, x, config), x


def test_gather_output_channels_are_its_own_and_its_input_is_kept_with_reason():
    _, graph, channels = _analysed(build(["plain", "channel_gather"]))
    gather = next(node for node in graph.nodes if node.op == "Gather")
    out = channels.classes(gather.outputs[0].name)
    assert out.size == 5 and not any(int(c) in channels.frozen for c in out)
    assert np.unique(out).size == 5  # a channel taken twice is two channels of the output
    reasons = {channels.frozen.get(int(c)) for c in channels.classes(gather.inputs[0].name)}
    assert reasons == {f"Gather '{gather.name}' picks from them by position for its readers"}
    unit = next(u for u in channels.units() if np.isin(out, u.classes).all())
    assert [layer.node.inputs[0].name for layer in unit.consumers] == [gather.outputs[0].name]


def test_the_readers_of_a_residual_stream_are_the_units_shared_consumers():
    _, graph, channels = _analysed(build(RESIDUAL))
    shared = [u for u in channels.units() if len(u.consumers) > 1]
    assert shared  # the stage streams
    names = readers_of_shared_channels(channels)
    assert sorted(names) == sorted(layer.name for u in shared for layer in u.consumers)
    shapes = dict(channels.shapes)
    added = insert_selections(graph, shapes, names)
    nodes = {node.name: node for node in graph.nodes}
    for layer_name, gather_name in zip(names, added):
        assert nodes[layer_name].inputs[0] is nodes[gather_name].outputs[0]
        assert np.array_equal(nodes[gather_name].inputs[1].values, np.arange(shapes[nodes[gather_name].inputs[0].name][1]))


def test_own_readers_keep_the_stream_and_drop_reader_columns():
    model = build(RESIDUAL)
    (tied, tied_report), x = _prune(model, "tied", eps_l2=2.0)
    (own, own_report), _ = _prune(model, "own", eps_l2=2.0)
    onnx.checker.check_model(own, full_check=True)
    assert [o.name for o in own.graph.output] == [o.name for o in model.graph.output]
    assert not any(node.op_type == "Gather" for node in tied.graph.node)
    gathers = [node for node in own.graph.node if node.op_type == "Gather"]
    assert gathers
    layers = {layer.name: layer for layer in own_report.layers}
    widths = {v.name: v.type.tensor_type.shape.dim[1].dim_value for v in own.graph.value_info}
    indices = {init.name: onnx.numpy_helper.to_array(init) for init in own.graph.initializer}
    for gather in gathers:
        # Each reader behind a Gather reads its own subset of the stream, which keeps the union.
        reader = next(node for node in own.graph.node if gather.output[0] in node.input)
        taken = indices[gather.input[1]]
        assert layers[reader.name].in_channels_after == taken.size < layers[reader.name].in_channels_before
        assert np.unique(taken).size == taken.size and taken.max() < widths[gather.input[0]]
    reference = run(model, x)
    error = np.linalg.norm(run(own, x) - reference) / np.linalg.norm(reference)
    assert error < 0.5


def test_shared_channels_no_reader_takes_leave_their_writers_exactly():
    model, graph, channels = _analysed(build(RESIDUAL))
    shapes = dict(channels.shapes)
    insert_selections(graph, shapes, readers_of_shared_channels(channels))
    channels = analyse_channels(graph, shapes)
    # Every reader of the first stream (8 channels) stops reading channels 1 and 3: zero its columns.
    gathers = [node for node in graph.nodes if node.op == "Gather" and shapes[node.inputs[0].name][1] == 8]
    assert len(gathers) >= 2
    chosen = []
    for gather in gathers:
        chosen.extend(channels.classes(gather.outputs[0].name)[[1, 3]])
        reader = gather.outputs[0].outputs[0]
        weight = np.array(reader.inputs[1].values)
        weight[:, [1, 3]] = 0.0
        reader.inputs[1].values = weight
    reference = export(graph, model)
    stream = channels.classes(gathers[0].inputs[0].name)
    assert unread_classes(channels, graph).size == 0  # every Gather still takes every channel
    remove_classes(channels, graph, np.array(chosen))
    unread = unread_classes(channels, graph)
    assert sorted(unread) == sorted(int(c) for c in stream[[1, 3]])
    remove_classes(channels, graph, unread)
    pruned = export(graph, model)
    assert all(shapes[g.inputs[0].name][1] == 8 for g in gathers)  # it was 8 wide...
    assert channels.maps[gathers[0].inputs[0].name].size == 6  # ...and its writers lost the two
    assert_same_outputs(reference, pruned)


def test_selections_that_take_every_channel_are_removed():
    model = build(RESIDUAL)
    (own, report), x = _prune(model, "own", selector="l1", keep_fraction=1.0)
    assert not any(node.op_type == "Gather" for node in own.graph.node)
    assert report.params_after == report.params_before
    np.testing.assert_allclose(run(own, x), run(model, x), rtol=1e-3, atol=1e-3)


def test_an_unknown_reader_mode_is_refused():
    with pytest.raises(ConfigError, match="reader_channels"):
        PruneConfig(reader_channels="loose")
