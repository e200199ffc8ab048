"""prune(): the stages in order. Load -> analyse -> per layer: record, solve, rewrite -> export -> verify."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from onnxprune.calib.data import calibration_from_arrays, input_specs, load_calibration
from onnxprune.calib.record import layer_statistics
from onnxprune.calib.runner import SegmentRunner
from onnxprune.config import PruneConfig
from onnxprune.errors import ModelError
from onnxprune.graph.analysis import InputChannels, Layer, analyse, output_gain
from onnxprune.graph.io import check_model, export, load_model, to_graph
from onnxprune.graph.rules import per_channel_params
from onnxprune.report import LayerReport, Report, count_params, node_macs, peak_memory_mb
from onnxprune.rewrite import remove_channels, set_weights
from onnxprune.solve.ges import GesOptions, select_channels, solve_ges
from onnxprune.solve.problem import LayerProblem, normalise
from onnxprune.solve.refit import refit
from onnxprune.verify import verify_model

log = logging.getLogger(__name__)

Calibration = str | os.PathLike | np.ndarray | Mapping[str, np.ndarray]


def prune(model: onnx.ModelProto | str | os.PathLike, calib: Calibration, config: PruneConfig | None = None, *,
          progress: Callable[[str], None] | None = None, **options) -> tuple[onnx.ModelProto, Report]:
    """Prune the channels a network can do without and reconstruct the rest.

    Parameters
    ----------
    model : an ONNX ModelProto or the path of a .onnx file.
    calib : calibration inputs: a .npy/.npz file or directory of them, an array (single-input
        models) or a mapping from graph input name to array.
    config : a PruneConfig; keyword ``options`` override its fields (``prune(m, x, eps_l2=0.1)``).
    progress : called with one line per layer as the work advances.

    Returns
    -------
    (pruned ModelProto, Report). The pruned model has passed onnx.checker and run in onnxruntime.
    """
    started = time.perf_counter()
    config = replace(config or PruneConfig(), **options)
    say = progress or (lambda line: None)
    model = load_model(model) if isinstance(model, (str, os.PathLike)) else check_model(model)
    specs = input_specs(model)
    if isinstance(calib, (str, os.PathLike)):
        feeds = load_calibration(Path(calib), specs, max_samples=config.max_samples, seed=config.seed)
    else:
        feeds = calibration_from_arrays(calib, specs, max_samples=config.max_samples, seed=config.seed)
    shapes = tensor_shapes(model)
    original, pruned = to_graph(model), to_graph(model)
    groups, skipped = analyse(pruned, shapes, config.exclude)
    if not groups:
        raise ModelError("the model has no Conv, Gemm or MatMul layer with constant weights to prune")
    original_layers = {node.name: Layer(node) for node in original.nodes}
    params_before = count_params(pruned)
    macs_before = {node.name: node_macs(node, shapes) for node in pruned.nodes}
    in_before = {group.consumer.name: group.consumer.in_channels for group in groups}
    out_before = {group.consumer.name: group.consumer.out_channels for group in groups}

    layer_eps = layer_eps_l2(groups, config)
    rng = np.random.default_rng(config.seed)
    runner_original = SegmentRunner(original, feeds, batch_size=config.batch_size)
    runner_pruned = SegmentRunner(pruned, feeds, batch_size=config.batch_size)
    seconds: dict[str, float] = {}
    timings = {"statistics": 0.0, "solve": 0.0}
    for index, group in enumerate(groups, start=1):
        layer_start = time.perf_counter()
        name = group.consumer.name
        runner_original.advance_to(name)
        runner_pruned.advance_to(name)
        note = _prune_layer(group, original_layers[name], runner_pruned, runner_original, config,
                            layer_eps.get(name, config.eps_l2), rng, timings)
        seconds[name] = time.perf_counter() - layer_start
        say(f"[{index}/{len(groups)}] {name}: {note}, {seconds[name]:.1f}s")
    timings["forward"] = runner_original.seconds + runner_pruned.seconds

    result = export(pruned, model)
    verify_model(result, model, {k: v[: min(8, len(v))] for k, v in feeds.items()})
    before = {"params": params_before, "macs": macs_before, "in": in_before, "out": out_before}
    report = _build_report(result, groups, original_layers, before, seconds, timings, skipped, started)
    return result, report


def _prune_layer(group: InputChannels, original: Layer, runner_pruned: SegmentRunner, runner_original: SegmentRunner,
                 config: PruneConfig, eps_l2: float, rng: np.random.Generator, timings: dict[str, float]) -> str:
    """Record, select, refit and rewrite one layer; return a progress note."""
    input_name = group.consumer.node.inputs[0].name
    x_pruned, x_original = runner_pruned.cache[input_name], runner_original.cache[input_name]
    if not group.prunable and (x_pruned is x_original or np.array_equal(x_pruned, x_original)):
        return f"unchanged input, kept as is ({group.frozen})"
    t0 = time.perf_counter()
    problem = layer_statistics(original, x_pruned, x_original, block=group.block,
                               rows_per_layer=config.rows_per_layer, batch_size=config.batch_size, rng=rng)
    t1 = time.perf_counter()
    keep, iterations = choose_channels(problem, group, config, eps_l2)
    prior = original.weight.reshape(original.out_channels, -1) if config.refit_prior else None
    weight, bias = refit(problem, keep, ridge=config.ridge, prior=prior)
    timings["statistics"] += t1 - t0
    timings["solve"] += time.perf_counter() - t1
    if not keep.all():
        remove_channels(group, keep)
        _slice_cached(runner_pruned, group, keep)
    shape = group.consumer.weight.shape
    set_weights(group.consumer, weight.reshape(shape[:1] + (-1,) + shape[2:]), bias)
    how = f"GES {iterations} iterations" if group.prunable else f"refit only, frozen: {group.frozen}"
    return f"{problem.n_channels} -> {int(keep.sum())} input channels ({problem.n_samples} rows, {how})"


def _build_report(result: onnx.ModelProto, groups: list[InputChannels], original_layers: dict[str, Layer],
                  before: dict, seconds: dict[str, float], timings: dict[str, float], skipped: dict[str, str],
                  started: float) -> Report:
    final_shapes = tensor_shapes(result)
    final_graph = to_graph(result)
    layers = []
    for group in groups:
        name = group.consumer.name
        layers.append(LayerReport(
            name=name, op_type=group.consumer.node.op,
            channels_before=before["out"][name], channels_after=group.consumer.out_channels,
            in_channels_before=before["in"][name], in_channels_after=group.consumer.in_channels,
            params_before=_layer_params(original_layers[name]), params_after=_layer_params(group.consumer),
            macs_before=before["macs"][name], macs_after=node_macs(group.consumer.node, final_shapes),
            seconds=round(seconds.get(name, 0.0), 3), frozen=group.frozen,
        ))
    return Report(
        params_before=before["params"], params_after=count_params(final_graph),
        macs_before=sum(before["macs"].values()),
        macs_after=sum(node_macs(node, final_shapes) for node in final_graph.nodes),
        seconds=round(time.perf_counter() - started, 3), peak_memory_mb=peak_memory_mb(), layers=layers,
        skipped=skipped, timings={k: round(v, 3) for k, v in timings.items()},
    )


def params_per_channel(group: InputChannels) -> float:
    """Parameters that one input channel of the group costs: a producer filter (with its bias and
    per-channel vectors on the path) plus the consumer's weights that read the channel."""
    consumer = group.consumer.weight.size / group.n_channels
    producer = group.producer.weight.size / group.producer.out_channels + 1 if group.producer else 0.0
    path = sum(t.values.size for node in group.path for t in per_channel_params(node)) / group.n_channels
    return consumer + producer + path


def layer_eps_l2(groups: list[InputChannels], config: PruneConfig) -> dict[str, float]:
    """eps_l2 per consumer: scaled by (parameters the group controls / model mean) ** param_weighting.

    A group controls the parameters of its producer and consumer that its channels carry. With
    param_weighting = 0 every layer pays the same price; with 1 a group that controls ten times
    the parameters prunes under ten times the pressure, which moves the pruning to where the
    parameters are (the wide late layers of a VGG, both sides of LeNet's big fc1) and spares the
    small early layers whose errors every later layer inherits.
    """
    costs = {g.consumer.name: params_per_channel(g) * g.n_channels for g in groups if g.prunable}
    if not costs:
        return {}
    mean = float(np.mean(list(costs.values())))
    return {name: config.eps_l2 * (cost / mean) ** config.param_weighting for name, cost in costs.items()}


def choose_channels(problem: LayerProblem, group: InputChannels, config: PruneConfig,
                    eps_l2: float) -> tuple[np.ndarray, int]:
    """GES selection for a prunable group (keep mask, iterations); all channels for a frozen one."""
    if not group.prunable:
        return np.ones(problem.n_channels, dtype=bool), 0
    normalised = normalise(problem, output_gain(group.consumer))
    options = GesOptions(eps_entropy=config.eps_entropy, eps_l2=eps_l2, max_iter=config.max_iter, tol=config.tol)
    result = solve_ges([normalised], options)
    return select_channels(result.weights, threshold=config.threshold), result.n_iter


def _slice_cached(runner: SegmentRunner, group: InputChannels, keep: np.ndarray) -> None:
    """Drop the removed channels from cached activations on the path, as if the network had run pruned."""
    before_flatten = [group.producer.node.outputs[0]] + [node.outputs[0] for node in group.path]
    for tensor in before_flatten:
        if tensor.name in runner.cache:
            runner.cache[tensor.name] = np.ascontiguousarray(runner.cache[tensor.name][:, keep])
    if group.flatten is not None and group.flatten.outputs[0].name in runner.cache:
        features = np.repeat(keep, group.block)
        name = group.flatten.outputs[0].name
        runner.cache[name] = np.ascontiguousarray(runner.cache[name][:, features])


def _layer_params(layer: Layer) -> int:
    node = layer.node
    return sum(int(np.asarray(t.values).size) for t in node.inputs[1:] if hasattr(t, "values"))


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Shapes known after shape inference: ints for fixed dims, None for symbolic ones."""
    shapes = {}
    for info in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                      for d in info.type.tensor_type.shape.dim)
    return shapes
