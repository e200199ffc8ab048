"""Command line: paths and options -> PruneConfig -> prune() / sweep() -> progress, summary, files, exit code.

group.py holds the command group (the console script's ``onnxprune.cli:main``), prune_command.py and
sweep_command.py the two commands, options.py the options they share (each defined once), guard.py
the exit codes. Heavy imports (onnx, onnxruntime, numpy) happen inside the command bodies so that
--help is instant.
"""

from onnxprune.cli.group import main

__all__ = ["main"]
