"""onnxprune: make trained CNNs smaller without retraining, by GES channel pruning of ONNX models."""

from onnxprune.api import prune
from onnxprune.search.budget import BudgetError, SearchOptions
from onnxprune.calib.images import Preprocessing
from onnxprune.config import PruneConfig
from onnxprune.errors import CalibrationError, ConfigError, ModelError, OnnxPruneError, OutputError
from onnxprune.measure.evaluate import EvalData, benchmark, evaluate, load_eval_data, output_difference
from onnxprune.report import Accuracy, LayerReport, Latency, OutputCheck, Report, SearchReport, Trial
from onnxprune.search.sweep import SweepPoint, SweepResult, sweep

__all__ = ["prune", "PruneConfig", "Report", "LayerReport", "OnnxPruneError", "ModelError",
           "CalibrationError", "ConfigError", "OutputError", "Preprocessing", "evaluate", "load_eval_data",
           "EvalData", "output_difference", "benchmark", "Accuracy", "OutputCheck", "Latency",
           "BudgetError", "SearchOptions", "SearchReport", "Trial", "sweep", "SweepResult", "SweepPoint"]
__version__ = "0.1.0"
