"""One prune with one configuration: analyse, walk, export, verify, and the report of what it gained."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.config import PruneConfig
from onnxprune.errors import ModelError
from onnxprune.graph.channels import ChannelGraph, analyse_channels
from onnxprune.graph.io import export, to_graph
from onnxprune.graph.shapes import input_sizes, tensor_shapes
from onnxprune.graph.shuffle import shuffles_as_gathers
from onnxprune.measure.counts import count_params
from onnxprune.measure.memory import peak_memory_mb
from onnxprune.measure.verify import verify_model
from onnxprune.ops import Layer, node_macs
from onnxprune.pruning.allocation import unit_eps_l2
from onnxprune.pruning.reuse import TrialMemo
from onnxprune.pruning.readers import give_readers_own_channels, settle_selections
from onnxprune.pruning.walk import Pruner, UnitEps
from onnxprune.pruning.costs import Ladders
from onnxprune.report import KEPT_BY_GROUPS, KEPT_BY_SELECTION, LayerReport, Report


def prune_once(model: onnx.ModelProto, feeds: dict[str, np.ndarray], config: PruneConfig,
                say: Callable[[str], None], started: float | None = None, *,
                unit_eps: UnitEps = unit_eps_l2, memo: TrialMemo | None = None,
                keep_counts: dict[int, int] | None = None,
                ladders: Ladders | None = None) -> tuple[onnx.ModelProto, Report]:
    """One walk with one configuration: the pruned, verified model and its report. ``unit_eps``
    prices each unit's ε_L2 (see :class:`onnxprune.pruning.walk.Pruner`); ``memo`` carries what
    does not depend on the strength from one trial of a search to the next; ``keep_counts`` (per
    unit index) replace GES's threshold, and ``ladders`` records what an allocation needs
    (search/allocate.py)."""
    started = time.perf_counter() if started is None else started
    sizes = input_sizes(model, feeds)  # symbolic H/W counted at the calibration data's size
    shapes = tensor_shapes(model, sizes)
    original, pruned = to_graph(model), to_graph(model)
    for graph in (original, pruned):
        shuffles_as_gathers(graph, shapes)
    channels = analyse_channels(pruned, shapes, config.exclude, config.max_features)
    selections = []
    if config.reader_channels == "own":
        channels, selections = give_readers_own_channels(original, pruned, channels, shapes, config.exclude,
                                                         config.max_features)
    if not channels.layers:
        raise ModelError("the model has no Conv, Gemm or MatMul layer with constant weights to prune")
    before = {
        "params": count_params(gs.import_onnx(model)),  # as given (to_graph turns shared copies into constants)
        "macs": {node.name: node_macs(node, shapes) for node in pruned.nodes},
        "in": {layer.name: layer.in_channels for layer in channels.layers},
        "out": {layer.name: layer.out_channels for layer in channels.layers},
    }
    seconds: dict[str, float] = {}
    with Pruner(original, pruned, channels, feeds, config, unit_eps=unit_eps, keep_counts=keep_counts,
                ladders=ladders) as pruner:  # its disk files go, whatever happens
        pruner.gather_lookahead(memo)
        for index, layer in enumerate(channels.layers, start=1):
            layer_start = time.perf_counter()
            note = pruner.step(layer)
            seconds[layer.name] = time.perf_counter() - layer_start
            say(f"[{index}/{len(channels.layers)}] {layer.name}: {note}, {seconds[layer.name]:.1f}s")
    timings = pruner.all_timings()

    export_start = time.perf_counter()
    if selections:
        say(settle_selections(pruned, channels, selections))
    result = export(pruned, model)
    verify_start = time.perf_counter()
    verify_model(result, model, {k: v[: min(8, len(v))] for k, v in feeds.items()})
    timings.update(export=verify_start - export_start, verify=time.perf_counter() - verify_start)
    report = _build_report(result, channels, pruner.original_layers, before, seconds, timings, started, sizes,
                           pruner.kept_by_constraint)
    report = replace(report, activations=pruner.store.summary())
    return result, report


def _build_report(result: onnx.ModelProto, channels: ChannelGraph, original_layers: dict[str, Layer],
                  before: dict, seconds: dict[str, float], timings: dict[str, float], started: float,
                  sizes: dict[str, list], kept_by_constraint: set[int]) -> Report:
    final_shapes = tensor_shapes(result, sizes)
    final_graph = to_graph(result)
    layers = []
    for layer in channels.layers:
        name = layer.name
        frozen = channels.frozen_reason(layer)
        kept = {}  # every channel that stays says why
        if frozen is None and layer.in_channels == before["in"][name]:
            kept["in"] = KEPT_BY_SELECTION
        if layer.out_channels == before["out"][name]:
            kept["out"] = channels.output_kept_reason(layer) or _kept_reason(channels, layer, kept_by_constraint)
        layers.append(LayerReport(
            name=name, op_type=original_layers[name].node.op,
            channels_before=before["out"][name], channels_after=layer.out_channels,
            in_channels_before=before["in"][name], in_channels_after=layer.in_channels,
            params_before=_layer_params(original_layers[name]), params_after=_layer_params(layer),
            macs_before=before["macs"][name], macs_after=node_macs(layer.node, final_shapes),
            seconds=round(seconds.get(name, 0.0), 3), frozen=frozen, kept=kept,
        ))
    return Report(
        params_before=before["params"], params_after=count_params(final_graph),
        macs_before=sum(before["macs"].values()),
        macs_after=sum(node_macs(node, final_shapes) for node in final_graph.nodes),
        seconds=round(time.perf_counter() - started, 3), peak_memory_mb=peak_memory_mb(), layers=layers,
        skipped=channels.skipped, timings={k: round(v, 3) for k, v in timings.items()}, input_shapes=sizes,
    )


def _kept_reason(channels: ChannelGraph, layer: Layer, kept_by_constraint: set[int]) -> str:
    """Why every output channel of a layer that could lose some stays: the selection, or the groups."""
    classes = channels.classes(layer.node.outputs[0].name)
    if classes is not None and kept_by_constraint.intersection(int(c) for c in np.unique(classes)):
        return KEPT_BY_GROUPS
    return KEPT_BY_SELECTION


def _layer_params(layer: Layer) -> int:
    node = layer.node
    return sum(int(np.asarray(t.values).size) for t in node.inputs[1:] if hasattr(t, "values"))
