"""onnxprune: make trained CNNs smaller without retraining, by GES channel pruning of ONNX models."""

from onnxprune.api import prune
from onnxprune.config import PruneConfig
from onnxprune.errors import CalibrationError, ConfigError, ModelError, OnnxPruneError, OutputError
from onnxprune.report import LayerReport, Report

__all__ = ["prune", "PruneConfig", "Report", "LayerReport", "OnnxPruneError", "ModelError",
           "CalibrationError", "ConfigError", "OutputError"]
__version__ = "0.1.0"
