"""The onnxprune command group: prune (the default command) and sweep."""

from __future__ import annotations

import click

from onnxprune.cli.options import CONTEXT
from onnxprune.cli.prune_command import prune_command
from onnxprune.cli.sweep_command import sweep_command


class _DefaultToPrune(click.Group):
    """'onnxprune IN OUT ...' stays the prune command: arguments that do not start with a command
    name go to 'prune' (and so does --help, whose answer is prune's, naming the other commands)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["prune", *args]
        return super().parse_args(ctx, args)


main = _DefaultToPrune("onnxprune", commands=[prune_command, sweep_command], context_settings=CONTEXT,
                       help="Prune the channels of an ONNX CNN (onnxprune prune) or sweep budgets (onnxprune sweep).")
