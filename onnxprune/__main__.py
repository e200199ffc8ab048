"""python -m onnxprune: the same command as the onnxprune console script."""

from onnxprune.cli import main

main(prog_name="onnxprune")
