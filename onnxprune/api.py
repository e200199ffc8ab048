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

from onnxprune.calib.data import calibration_from_arrays, input_specs, load_calibration
from onnxprune.calib.images import Preprocessing, check_preprocessing, is_image_folder, load_image_calibration
from onnxprune.config import PruneConfig
from onnxprune.errors import ConfigError
from onnxprune.graph.io import check_model, load_model
from onnxprune.graph.shapes import tensor_shapes  # noqa: F401  (the tests' and tools' historical import)
from onnxprune.measure.memory import peak_memory_mb
from onnxprune.pruning.once import prune_once
from onnxprune.report import Report
from onnxprune.search.budget import History, SearchOptions, budget_from, find_budget

Calibration = str | os.PathLike | np.ndarray | Mapping[str, np.ndarray]
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
        ``preprocessing``), an array (single-input models) or a mapping from graph input name to array.
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
    model, feeds = _inputs(model, calib, config, preprocessing)
    pruned, report = prune_once(model, feeds, config, progress or (lambda line: None), started)
    return PruneResult(pruned, replace(report, peak_memory_mb=peak_memory_mb()))


def prune_to_budget(model: ModelSource, calib: Calibration, config: PruneConfig | None = None, *,
                    target_sparsity: float | None = None, target_macs: float | None = None,
                    search: SearchOptions | None = None, history: History | None = None,
                    progress: Callable[[str], None] | None = None, preprocessing: Preprocessing | None = None,
                    **overrides) -> PruneResult:
    """Prune to a budget: the fraction of the parameters (``target_sparsity``) or of the MACs
    (``target_macs``) to remove. eps_l2 is searched for, from ``config.eps_l2`` on, until the pruned
    model is within ``search.tolerance`` of the target (``Report.search`` lists the trials); a
    budget that cannot be met raises :class:`onnxprune.BudgetError`, which names the closest
    fraction reached. A MAC budget prices eps_l2 by MACs (``pricing``) unless told otherwise.

    ``search`` holds the search's options (tolerance, trials, calibration subset); ``history`` the
    earlier trials of searches on the same model and data (a sweep shares one). Other arguments as
    for :func:`prune`.
    """
    started = time.perf_counter()
    budget = budget_from(target_sparsity, target_macs, search)
    if budget is None:
        raise ConfigError("prune_to_budget needs target_sparsity or target_macs (prune() takes a fixed eps_l2)")
    config = _config(config, overrides, metric=budget.metric)
    model, feeds = _inputs(model, calib, config, preprocessing)
    pruned, report = find_budget(budget, config, feeds, partial(prune_once, model), progress or (lambda line: None),
                                 history=history)
    return PruneResult(pruned, replace(report, seconds=round(time.perf_counter() - started, 3),
                                       peak_memory_mb=peak_memory_mb()))


def calibration_feeds(model: onnx.ModelProto, calib: Calibration, config: PruneConfig | None = None, *,
                      preprocessing: Preprocessing | None = None) -> dict[str, np.ndarray]:
    """The validated calibration inputs that pruning uses (the ``config.max_samples`` subset drawn
    with ``config.seed``), for measurements on the same samples; feeding them back to prune()
    gives the same result."""
    config = config or PruneConfig()
    check_preprocessing(preprocessing, calib)
    specs = input_specs(model)
    subset = {"max_samples": config.max_samples, "seed": config.seed}
    if not isinstance(calib, (str, os.PathLike)):
        return calibration_from_arrays(calib, specs, **subset)
    if is_image_folder(calib):
        return load_image_calibration(calib, specs, preprocessing, **subset)
    return load_calibration(Path(calib), specs, **subset)


def _config(config: PruneConfig | None, overrides: dict, *, metric: str | None) -> PruneConfig:
    config = replace(config or PruneConfig(), **overrides)
    if config.pricing is None:  # a MAC budget is won where the MACs are
        config = replace(config, pricing="macs" if metric == "macs" else "params")
    return config


def _inputs(model: ModelSource, calib: Calibration, config: PruneConfig,
            preprocessing: Preprocessing | None) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    model = load_model(model) if isinstance(model, (str, os.PathLike)) else check_model(model)
    return model, calibration_feeds(model, calib, config, preprocessing=preprocessing)
