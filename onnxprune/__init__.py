"""onnxprune: make trained CNNs smaller without retraining, by GES channel pruning of ONNX models.

The public names load lazily (PEP 562): ``import onnxprune`` (and so ``onnxprune --help``) does not
import onnx, onnxruntime, onnx-graphsurgeon, SciPy or NumPy; the first use of a name imports the
module that defines it. ``from onnxprune import prune, PruneConfig`` works as for eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> the module that defines it
_HOMES = {
    "prune": "onnxprune.api",
    "prune_to_budget": "onnxprune.api",
    "PruneResult": "onnxprune.api",
    "calibration_feeds": "onnxprune.api",
    "prune_safely": "onnxprune.api",
    "calibration_sets": "onnxprune.api",
    "FidelityBound": "onnxprune.search.guard",
    "measure_fidelity": "onnxprune.measure.fidelity",
    "Fidelity": "onnxprune.report",
    "OutputFidelity": "onnxprune.report",
    "GuardReport": "onnxprune.report",
    "Measurements": "onnxprune.measure.measurements",
    "PruneConfig": "onnxprune.config",
    "Report": "onnxprune.report",
    "LayerReport": "onnxprune.report",
    "OnnxPruneError": "onnxprune.errors",
    "ModelError": "onnxprune.errors",
    "CalibrationError": "onnxprune.errors",
    "ConfigError": "onnxprune.errors",
    "OutputError": "onnxprune.errors",
    "Preprocessing": "onnxprune.calib.images",
    "evaluate": "onnxprune.measure.evaluate",
    "load_eval_data": "onnxprune.measure.evaluate",
    "EvalData": "onnxprune.measure.evaluate",
    "output_difference": "onnxprune.measure.evaluate",
    "benchmark": "onnxprune.measure.evaluate",
    "Accuracy": "onnxprune.report",
    "OutputCheck": "onnxprune.report",
    "Latency": "onnxprune.report",
    "BudgetError": "onnxprune.errors",
    "SearchOptions": "onnxprune.search.budget",
    "SearchReport": "onnxprune.report",
    "Trial": "onnxprune.report",
    "sweep": "onnxprune.search.sweep",
    "SweepResult": "onnxprune.search.sweep",
    "SweepPoint": "onnxprune.search.sweep",
    "save_model": "onnxprune.graph.io",
}

__all__ = list(_HOMES)
__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from onnxprune.api import PruneResult, calibration_feeds, calibration_sets, prune, prune_safely, prune_to_budget
    from onnxprune.measure.fidelity import measure_fidelity
    from onnxprune.search.guard import FidelityBound
    from onnxprune.measure.measurements import Measurements
    from onnxprune.calib.images import Preprocessing
    from onnxprune.config import PruneConfig
    from onnxprune.errors import BudgetError, CalibrationError, ConfigError, ModelError, OnnxPruneError, OutputError
    from onnxprune.graph.io import save_model
    from onnxprune.measure.evaluate import EvalData, benchmark, evaluate, load_eval_data, output_difference
    from onnxprune.report import (Accuracy, Fidelity, GuardReport, LayerReport, Latency, OutputCheck, OutputFidelity,
                                  Report, SearchReport, Trial)
    from onnxprune.search.budget import SearchOptions
    from onnxprune.search.sweep import SweepPoint, SweepResult, sweep


def __getattr__(name: str):
    """Import a public name's module on first use and cache the name in this module."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'onnxprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
