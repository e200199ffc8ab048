"""How a command's work ends: exit codes, one-line errors, and SIGTERM unwinding like Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable

import click


def guarded(action: Callable[[], None]) -> None:
    """Run a command's work: an OnnxPruneError is one line and exit 1, an interrupt exit 130, a bug
    of ours one line too (the traceback with ONNXPRUNE_DEBUG=1); SIGTERM unwinds like an interrupt
    (exit 143), so that temporary files go too."""
    with _sigterm_unwinds():
        _report_errors(action)


def _report_errors(action: Callable[[], None]) -> None:
    from onnxprune.errors import OnnxPruneError, first_line

    try:
        action()
    except OnnxPruneError as exc:
        click.echo(f"onnxprune: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        click.echo(f"onnxprune: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}; nothing was written",
                   err=True)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    except Exception as exc:  # a bug of ours: still one line and no file, the details on request
        if os.environ.get("ONNXPRUNE_DEBUG"):
            raise
        click.echo(f"onnxprune: internal error: {type(exc).__name__}: {first_line(exc)} (nothing was written; "
                   "rerun with ONNXPRUNE_DEBUG=1 for the traceback and please report it)", err=True)
        sys.exit(1)


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a timeout), raised where the program is, so that it unwinds as from Ctrl-C:
    the activations on disk and half-written files are removed on the way out."""


def _terminated(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM raises Terminated while the command runs (only the main thread may set handlers)."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def progress_printer(quiet: bool) -> Callable[[str], None] | None:
    """Progress lines go to stderr (none with --quiet)."""
    return None if quiet else (lambda line: click.echo(line, err=True))
