"""The one exception hierarchy of onnxprune.

Every message names the file, node or tensor at fault, what was expected and what was found,
so that the CLI can print it as a single line and exit non-zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnxprune.report import Trial


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if empty), so errors stay one line."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class OnnxPruneError(Exception):
    """Base class: anything onnxprune refuses to do, with a one-line reason."""


class ModelError(OnnxPruneError):
    """The input model cannot be read, checked or analysed."""


class CalibrationError(OnnxPruneError):
    """The calibration data is missing, malformed or does not fit the model."""


class ConfigError(OnnxPruneError):
    """An option value is out of range or inconsistent with another."""


class OutputError(OnnxPruneError):
    """The pruned model cannot be written where asked."""


class BudgetError(ConfigError):
    """The budget was not reached within the tolerance; ``closest`` is the nearest trial on all samples."""

    def __init__(self, message: str, closest: Trial | None = None) -> None:
        super().__init__(message)
        self.closest = closest
