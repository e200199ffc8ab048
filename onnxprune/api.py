"""prune(): the stages in order. Load -> analyse -> per layer: record, solve, rewrite -> export -> verify."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.calib.data import InputSpec, calibration_from_arrays, input_specs, load_calibration
from onnxprune.calib.images import Preprocessing, is_image_folder, load_image_calibration
from onnxprune.search.budget import History, SearchOptions, budget_from, find_budget
from onnxprune.config import PruneConfig
from onnxprune.errors import ConfigError, ModelError
from onnxprune.pruning.walk import Pruner
from onnxprune.graph.channels import ChannelGraph, analyse_channels
from onnxprune.graph.io import check_model, export, load_model, to_graph
from onnxprune.graph.shapes import input_sizes, tensor_shapes
from onnxprune.measure.evaluate import (BENCH_BATCHES, EvalSource, benchmark, check_labels, load_eval_data,
                                  output_difference, top1)
from onnxprune.measure.counts import count_params
from onnxprune.ops import Layer, node_macs
from onnxprune.measure.memory import peak_memory_mb
from onnxprune.report import Accuracy, LayerReport, Report
from onnxprune.measure.timing import forward_pass_seconds
from onnxprune.measure.verify import verify_model

log = logging.getLogger(__name__)

Calibration = str | os.PathLike | np.ndarray | Mapping[str, np.ndarray]


def prune(model: onnx.ModelProto | str | os.PathLike, calib: Calibration, config: PruneConfig | None = None, *,
          progress: Callable[[str], None] | None = None, eval: EvalSource | None = None, check: bool = False,
          bench: bool | int = False, preprocessing: Preprocessing | None = None, profile: bool = False,
          target_sparsity: float | None = None, target_macs: float | None = None, search: SearchOptions | None = None,
          history: History | None = None, **options) -> tuple[onnx.ModelProto, Report]:
    """Prune the channels a network can do without and reconstruct the rest.

    Parameters
    ----------
    model : an ONNX ModelProto or the path of a .onnx file.
    calib : calibration inputs: a .npy/.npz file or directory of them, a folder of images (see
        ``preprocessing``), an array (single-input models) or a mapping from graph input name to array.
    config : a PruneConfig; keyword ``options`` override its fields (``prune(m, x, eps_l2=0.1)``).
    progress : called with one line per layer as the work advances.
    eval : labelled data to report top-1 before and after on (``Report.accuracy``): an .npz with
        x and y, a folder with one sub-folder of images per class, an (x, y) pair or an EvalData
        from :func:`onnxprune.load_eval_data`. Read and scored on the original model before pruning
        starts, so that unusable data fails at once.
    check : report the outputs' max and mean absolute difference on calibration samples (``Report.check``).
    bench : report onnxruntime latency before and after (``Report.latency``) at batch 1 and 64;
        an int N instead of True benchmarks batch 1 and N.
    preprocessing : how image folders (``calib`` or ``eval``) become inputs; defaults to
        :class:`onnxprune.Preprocessing`'s defaults. Refused when neither is an image folder.
    profile : also time one plain onnxruntime pass of the original model over the calibration
        set (``Report.timings["forward_once"]``, not part of ``seconds``), the yardstick of the
        time breakdown that :func:`onnxprune.measure.timing.breakdown` prints (--verbose).
    target_sparsity, target_macs : a budget, the fraction of the parameters (or of the MACs) to
        remove: eps_l2 is searched for, from ``config.eps_l2`` on, until the pruned model is within
        ``search.tolerance`` of it (``Report.search`` lists the trials); a budget that cannot be met
        raises :class:`onnxprune.BudgetError`, which names the closest fraction reached. A MAC
        budget prices eps_l2 by MACs (``pricing``) unless told otherwise.
    search : :class:`onnxprune.SearchOptions` of a budget: tolerance, trials, calibration subset.
    history : earlier trials of budget searches on the same model and data (a sweep shares one).

    Returns
    -------
    (pruned ModelProto, Report). The pruned model has passed onnx.checker and run in onnxruntime.
    """
    started = time.perf_counter()
    budget = budget_from(target_sparsity, target_macs, search)
    config = replace(config or PruneConfig(), **options)
    if config.pricing is None:
        config = replace(config, pricing="macs" if budget is not None and budget.metric == "macs" else "params")
    say = progress or (lambda line: None)
    batches = _bench_batches(bench)
    model = load_model(model) if isinstance(model, (str, os.PathLike)) else check_model(model)
    specs = input_specs(model)
    _check_preprocessing(preprocessing, calib, eval)
    feeds = _calibration(calib, specs, config, preprocessing)
    eval_data, top1_before, measure_start = None, None, time.perf_counter()
    if eval is not None:
        eval_data = load_eval_data(eval, specs, preprocessing=preprocessing)
        check_labels(model, eval_data)
        say(f"top-1 of the original model on {len(eval_data):,} samples of {eval_data.source}")
        top1_before = top1(model, eval_data)
    measure_seconds = time.perf_counter() - measure_start
    if budget is None:
        result, report = _prune_once(model, feeds, config, say, started)
    else:
        result, report = find_budget(budget, config, feeds, partial(_prune_once, model), say, history=history)
        report = replace(report, seconds=round(time.perf_counter() - started, 3))
    measure_start, measured = time.perf_counter(), {}
    if eval_data is not None:
        say("top-1 of the pruned model")
        measured["accuracy"] = Accuracy(len(eval_data), top1_before, top1(result, eval_data), eval_data.source)
    if check:
        say("output difference on calibration samples")
        measured["check"] = output_difference(model, result, feeds)
    if batches:
        say(f"latency at batch {', '.join(map(str, batches))}")
        measured["latency"] = benchmark(model, result, feeds, batches=batches)
    if measured:  # the wall time covers the measurements too, and the timings say how much they took
        measure_seconds += time.perf_counter() - measure_start
        report = replace(report, **measured, seconds=round(time.perf_counter() - started, 3),
                         timings={**report.timings, "measure": round(measure_seconds, 3)})
    if profile:  # after the wall time was taken: the baseline is not part of the run
        once = forward_pass_seconds(model, feeds, config.batch_size)
        report = replace(report, timings={**report.timings, "forward_once": round(once, 3)})
    # Read last: the high-water mark then covers --eval, --check, --bench and the profile pass too.
    return result, replace(report, peak_memory_mb=peak_memory_mb())


def _prune_once(model: onnx.ModelProto, feeds: dict[str, np.ndarray], config: PruneConfig,
                say: Callable[[str], None], started: float | None = None) -> tuple[onnx.ModelProto, Report]:
    """One walk with one configuration: the pruned, verified model and its report."""
    started = time.perf_counter() if started is None else started
    sizes = input_sizes(model, feeds)  # symbolic H/W counted at the calibration data's size
    shapes = tensor_shapes(model, sizes)
    original, pruned = to_graph(model), to_graph(model)
    channels = analyse_channels(pruned, shapes, config.exclude)
    if not channels.layers:
        raise ModelError("the model has no Conv, Gemm or MatMul layer with constant weights to prune")
    before = {
        "params": count_params(gs.import_onnx(model)),  # as given (to_graph turns shared copies into constants)
        "macs": {node.name: node_macs(node, shapes) for node in pruned.nodes},
        "in": {layer.name: layer.in_channels for layer in channels.layers},
        "out": {layer.name: layer.out_channels for layer in channels.layers},
    }
    seconds: dict[str, float] = {}
    with Pruner(original, pruned, channels, feeds, config) as pruner:  # its activations on disk go, whatever happens
        for index, layer in enumerate(channels.layers, start=1):
            layer_start = time.perf_counter()
            note = pruner.step(layer)
            seconds[layer.name] = time.perf_counter() - layer_start
            say(f"[{index}/{len(channels.layers)}] {layer.name}: {note}, {seconds[layer.name]:.1f}s")
    timings = pruner.all_timings()

    export_start = time.perf_counter()
    result = export(pruned, model)
    verify_start = time.perf_counter()
    verify_model(result, model, {k: v[: min(8, len(v))] for k, v in feeds.items()})
    timings.update(export=verify_start - export_start, verify=time.perf_counter() - verify_start)
    report = _build_report(result, channels, pruner.original_layers, before, seconds, timings, started, sizes)
    report = replace(report, activations=pruner.store.summary())
    return result, report


def _check_preprocessing(preprocessing: Preprocessing | None, *sources) -> None:
    paths = [s for s in sources if isinstance(s, (str, os.PathLike))]
    if preprocessing is not None and not any(is_image_folder(s) for s in paths):
        # Silently ignoring it would let a user believe their arrays were normalised.
        raise ConfigError("image preprocessing (--size, --mean, --std, --scale, --layout) applies to image "
                          "folders only, and neither the calibration nor the evaluation data is one")


def _calibration(calib: Calibration, specs: list[InputSpec], config: PruneConfig,
                 preprocessing: Preprocessing | None) -> dict[str, np.ndarray]:
    """Validated calibration feeds from any accepted source."""
    subset = {"max_samples": config.max_samples, "seed": config.seed}
    if not isinstance(calib, (str, os.PathLike)):
        return calibration_from_arrays(calib, specs, **subset)
    if is_image_folder(calib):
        return load_image_calibration(calib, specs, preprocessing, **subset)
    return load_calibration(Path(calib), specs, **subset)


def _bench_batches(bench: bool | int) -> tuple[int, ...]:
    if bench is False or bench is None:
        return ()
    if bench is True:
        return BENCH_BATCHES
    if not isinstance(bench, (int, np.integer)) or bench < 1:
        raise ConfigError(f"bench must be True, False or a batch size >= 1, got {bench!r}")
    return (1, int(bench)) if bench > 1 else (1,)


def _build_report(result: onnx.ModelProto, channels: ChannelGraph, original_layers: dict[str, Layer],
                  before: dict, seconds: dict[str, float], timings: dict[str, float], started: float,
                  sizes: dict[str, list]) -> Report:
    final_shapes = tensor_shapes(result, sizes)
    final_graph = to_graph(result)
    layers = []
    for layer in channels.layers:
        name = layer.name
        layers.append(LayerReport(
            name=name, op_type=original_layers[name].node.op,
            channels_before=before["out"][name], channels_after=layer.out_channels,
            in_channels_before=before["in"][name], in_channels_after=layer.in_channels,
            params_before=_layer_params(original_layers[name]), params_after=_layer_params(layer),
            macs_before=before["macs"][name], macs_after=node_macs(layer.node, final_shapes),
            seconds=round(seconds.get(name, 0.0), 3), frozen=channels.frozen_reason(layer),
        ))
    return Report(
        params_before=before["params"], params_after=count_params(final_graph),
        macs_before=sum(before["macs"].values()),
        macs_after=sum(node_macs(node, final_shapes) for node in final_graph.nodes),
        seconds=round(time.perf_counter() - started, 3), peak_memory_mb=peak_memory_mb(), layers=layers,
        skipped=channels.skipped, timings={k: round(v, 3) for k, v in timings.items()}, input_shapes=sizes,
    )


def _layer_params(layer: Layer) -> int:
    node = layer.node
    return sum(int(np.asarray(t.values).size) for t in node.inputs[1:] if hasattr(t, "values"))
