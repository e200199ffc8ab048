"""The library's entry points: prune() with one strength, prune_to_budget() searching it for a budget.

Both load and validate the model and the calibration data, then hand one prune to
:func:`onnxprune.pruning.once.prune_once` (load -> analyse -> per layer: record, solve, rewrite ->
export -> verify). Measurements (top-1, output difference, latency) are separate:
:class:`onnxprune.Measurements`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx

from onnxprune.calib.data import (CalibrationSets, calibration_from_arrays, input_specs, load_calibration,
                                  loaded_samples, split_held_out)
from onnxprune.calib.images import Preprocessing, check_preprocessing, is_image_folder, load_image_calibration
from onnxprune.config import PruneConfig
from onnxprune.errors import ConfigError
from onnxprune.graph.io import check_model, load_model
from onnxprune.graph.shapes import tensor_shapes  # noqa: F401  (the tests' and tools' historical import)
from onnxprune.measure.evaluate import latency_removed
from onnxprune.measure.fidelity import FidelityMeter, measure_fidelity
from onnxprune.measure.memory import peak_memory_mb
from onnxprune.pruning.once import prune_once
from onnxprune.pruning.reuse import TrialMemo
from onnxprune.report import Report
from onnxprune.search.budget import History, SearchOptions, budget_from, find_budget
from onnxprune.search.guard import FidelityBound, find_guarded

Calibration = str | os.PathLike | np.ndarray | Mapping[str, np.ndarray] | CalibrationSets
ModelSource = onnx.ModelProto | str | os.PathLike


class PruneResult(NamedTuple):
    """The pruned model (it has passed onnx.checker and run in onnxruntime) and what pruning gained."""

    model: onnx.ModelProto
    report: Report


def prune(model: ModelSource, calib: Calibration, config: PruneConfig | None = None, *,
          progress: Callable[[str], None] | None = None, preprocessing: Preprocessing | None = None,
          **overrides) -> PruneResult:
    """Prune the channels a network can do without and reconstruct the rest.

    Parameters
    ----------
    model : an ONNX ModelProto or the path of a .onnx file.
    calib : calibration inputs: a .npy/.npz file or directory of them, a folder of images (see
        ``preprocessing``), an array (single-input models), a mapping from graph input name to
        array, or the CalibrationSets of :func:`calibration_sets` (already split and validated).
        ``config.holdout`` of the samples are held out from the statistics to measure
        ``report.fidelity``.
    config : a PruneConfig (defaults: ``PruneConfig()``).
    progress : called with one line per layer as the work advances.
    preprocessing : how an image folder given as ``calib`` becomes inputs; refused for other data.
    overrides : PruneConfig fields, shorthand for ``dataclasses.replace(config, **overrides)``
        (``prune(m, x, eps_l2=0.1)``): the same fields, validated the same way.

    Returns
    -------
    PruneResult(model, report); it unpacks as ``model, report = prune(...)``.
    """
    started = time.perf_counter()
    config = _config(config, overrides, metric=None)
    model, sets = _inputs(model, calib, config, preprocessing)
    pruned, report = prune_once(model, sets.fit, config, progress or (lambda line: None), started)
    return _with_fidelity(PruneResult(pruned, report), model, sets, config, started)


def prune_safely(model: ModelSource, calib: Calibration, config: PruneConfig | None = None, *,
                 bound: FidelityBound | None = None, progress: Callable[[str], None] | None = None,
                 preprocessing: Preprocessing | None = None, **overrides) -> PruneResult:
    """Prune as hard as the held-out fidelity allows: ε_L2 is searched for (from ``config.eps_l2``)
    for the sparsest model whose estimated top-1 loss against the original on the held-out
    calibration samples is at most ``bound.max_loss`` (outputs with one axis of scores; see
    :mod:`onnxprune.measure.fidelity`), and whose other outputs' relative error is at most
    ``bound.max_relative_error`` (``report.guard`` lists the trials). This is the CLI's
    default when neither --eps-l2 nor a budget is given. Without held-out samples (``holdout`` 0,
    or fewer than 32 calibration samples) nothing can be checked: it prunes once at ``config.eps_l2``
    and ``report.guard`` is None. With too few of them to bound a classifier's disagreement it
    prunes once more at a cautious quarter of it (``report.guard.samples_needed`` says how many
    would do). Other arguments as for :func:`prune`.
    """
    started = time.perf_counter()
    config = _config(config, overrides, metric=None)
    model, sets = _inputs(model, calib, config, preprocessing)
    say = progress or (lambda line: None)
    if not _samples(sets.held):
        pruned, report = prune_once(model, sets.fit, config, say, started)
        return _with_fidelity(PruneResult(pruned, report), model, sets, config, started)
    meter = FidelityMeter(model, sets.held, batch_size=config.batch_size)
    pruned, report = find_guarded(bound or FidelityBound(), config, sets.fit, partial(prune_once, model, memo=TrialMemo()),
                                  meter, say)
    return PruneResult(pruned, replace(report, seconds=round(time.perf_counter() - started, 3),
                                       peak_memory_mb=peak_memory_mb()))


def prune_to_budget(model: ModelSource, calib: Calibration, config: PruneConfig | None = None, *,
                    target_sparsity: float | None = None, target_macs: float | None = None,
                    target_speedup: float | None = None,
                    search: SearchOptions | None = None, history: History | None = None,
                    progress: Callable[[str], None] | None = None, preprocessing: Preprocessing | None = None,
                    **overrides) -> PruneResult:
    """Prune to a budget: the fraction of the parameters (``target_sparsity``) or of the MACs
    (``target_macs``) to remove, or a speed-up (``target_speedup``, 2 = twice as fast: every trial's
    batch-1 onnxruntime latency measured on this machine against the original's). A MAC or
    speed-up budget allocates every unit's keep count from error ladders recorded at
    ``config.eps_l2`` (``search.allocation``, search/allocate.py); a parameter budget searches
    eps_l2 from ``config.eps_l2`` on. Either stops within ``search.tolerance`` of the target
    (``Report.search`` lists the walks or trials); a budget that cannot be met raises
    :class:`onnxprune.BudgetError`, which names the closest fraction reached. A MAC or speed-up
    budget prices eps_l2 by MACs (``pricing``) unless told otherwise.

    ``search`` holds the search's options (tolerance, trials, calibration subset); ``history`` the
    earlier trials of searches on the same model and data (a sweep shares one). Other arguments as
    for :func:`prune`.
    """
    started = time.perf_counter()
    budget = budget_from(target_sparsity, target_macs, search, target_speedup)
    if budget is None:
        raise ConfigError("prune_to_budget needs target_sparsity, target_macs or target_speedup "
                          "(prune() takes a fixed eps_l2)")
    config = _config(config, overrides, metric=budget.metric)
    model, sets = _inputs(model, calib, config, preprocessing)
    pruned, report = find_budget(budget, config, sets.fit, partial(prune_once, model, memo=TrialMemo()),
                                 progress or (lambda line: None), history=history,
                                 latency=lambda pruned_model: latency_removed(model, pruned_model, sets.fit))
    return _with_fidelity(PruneResult(pruned, report), model, sets, config, started)


def calibration_feeds(model: onnx.ModelProto, calib: Calibration, config: PruneConfig | None = None, *,
                      preprocessing: Preprocessing | None = None) -> dict[str, np.ndarray]:
    """The validated calibration inputs that pruning's statistics use (see :func:`calibration_sets`)."""
    return calibration_sets(model, calib, config, preprocessing=preprocessing).fit


def calibration_sets(model: onnx.ModelProto, calib: Calibration, config: PruneConfig | None = None, *,
                     preprocessing: Preprocessing | None = None) -> CalibrationSets:
    """The validated calibration inputs, split: ``fit``, the ``config.max_samples`` that the
    statistics use, and ``held``, the ``config.holdout`` held out to measure fidelity (from beyond
    max_samples when the data has them, else 1/4 of the samples, at least 16 from 32 on), drawn with ``config.seed``.
    Feeding them back to prune() gives the same result."""
    config = config or PruneConfig()
    if isinstance(calib, CalibrationSets):
        return calib
    check_preprocessing(preprocessing, calib)
    specs = input_specs(model)
    subset = {"max_samples": loaded_samples(config.max_samples, config.holdout), "seed": config.seed}
    if not isinstance(calib, (str, os.PathLike)):
        data = calibration_from_arrays(calib, specs, **subset)
    elif is_image_folder(calib):
        data = load_image_calibration(calib, specs, preprocessing, **subset)
    else:
        data = load_calibration(Path(calib), specs, **subset)
    return split_held_out(data, config.max_samples, config.holdout, config.seed)


def _config(config: PruneConfig | None, overrides: dict, *, metric: str | None) -> PruneConfig:
    config = replace(config or PruneConfig(), **overrides)
    if config.pricing is None:  # a MAC or latency budget is won where the MACs are
        config = replace(config, pricing="macs" if metric in ("macs", "latency") else "params")
    return config


def _inputs(model: ModelSource, calib: Calibration, config: PruneConfig,
            preprocessing: Preprocessing | None) -> tuple[onnx.ModelProto, CalibrationSets]:
    model = load_model(model) if isinstance(model, (str, os.PathLike)) else check_model(model)
    return model, calibration_sets(model, calib, config, preprocessing=preprocessing)


def _samples(feeds: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(feeds.values()))) if feeds else 0


def _with_fidelity(result: PruneResult, original: onnx.ModelProto, sets: CalibrationSets, config: PruneConfig,
                   started: float) -> PruneResult:
    """The result with its held-out fidelity, the wall time and peak memory read after measuring it."""
    start = time.perf_counter()
    fidelity = measure_fidelity(original, result.model, sets.held, batch_size=config.batch_size)
    report = result.report
    timings = {**report.timings, "fidelity": round(time.perf_counter() - start, 3)} if fidelity else report.timings
    return PruneResult(result.model, replace(report, fidelity=fidelity, timings=timings,
                                             seconds=round(time.perf_counter() - started, 3),
                                             peak_memory_mb=peak_memory_mb()))
