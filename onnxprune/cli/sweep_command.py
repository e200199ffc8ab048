"""onnxprune sweep: prune at several budgets (or ε_L2 values), print the table, write table and plot."""

from __future__ import annotations

import os
from pathlib import Path

import click

import onnxprune.cli.options as shared
from onnxprune.cli.guard import guarded, progress_printer
from onnxprune.cli.options import CONTEXT, default


@click.command(
    "sweep",
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  onnxprune sweep vgg16.onnx --calib calib.npy --eval test.npz --out sweep/
  onnxprune sweep vgg16.onnx --calib calib.npy --eval test.npz --out sweep/ --budgets 0.3,0.5 --metric macs
  onnxprune sweep vgg16.onnx --calib calib.npy --eval test.npz --out sweep/ --eps-l2 0.1,0.4,1.6 --show-point 2

\b
Exit status as for prune; a budget that cannot be reached is a row with its error, not a failure.""",
)
@click.argument("in_path", metavar="IN.onnx", type=click.Path(path_type=Path))
@click.option("--eval", "eval_path", required=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Labelled data every pruned model is scored on: an .npz with x and y, or a folder with one "
                   "sub-folder of images per class.")
@shared.apply(shared.SHARED)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Where sweep.csv, sweep.json and sweep.png go (made if missing; its parent must exist).")
@click.option("--budgets", metavar="S,S,...",
              help="Fractions of the --metric to remove, one pruned model each." + default("budgets"))
@click.option("--metric", type=click.Choice(["params", "macs"]), default="params", show_default=True,
              help="What the budgets count: parameters (--target-sparsity) or MACs (--target-macs).")
@click.option("--eps-l2", "eps_values", metavar="L,L,...",
              help="Sweep these --eps-l2 values instead of budgets (no search: one prune each).")
@click.option("--show-point", type=click.IntRange(min=1), metavar="N",
              help="The row whose kept channels per layer the plot shows.  [default: the most pruned point "
                   "within 1 pt of the original top-1]")
@click.option("--no-plot", is_flag=True, help="Write the table only (no matplotlib needed).")
@click.option("--save-models", is_flag=True, help="Also write every pruned model, as DIR/point-N.onnx.")
def sweep_command(in_path: Path, eval_path: Path, out_dir: Path, budgets: str | None, metric: str,
                  eps_values: str | None, show_point: int | None, no_plot: bool, save_models: bool, **options) -> None:
    """Prune IN.onnx at several budgets (or --eps-l2 values), score each pruned model on --eval,
    and write the trade-off to DIR: sweep.csv and sweep.json (a row per point: target, eps_l2,
    parameters and MACs removed, top-1, loss), and sweep.png (top-1 against the parameters and
    the MACs removed, and the channels each layer keeps at one point).

    Progress goes to stderr, the table to stdout. Pruning options as for 'onnxprune prune'.
    """
    guarded(lambda: _sweep(in_path, eval_path, out_dir, budgets, metric, eps_values, show_point, not no_plot,
                           save_models, options))


def _sweep(in_path: Path, eval_path: Path, out_dir: Path, budgets: str | None, metric: str, eps_values: str | None,
           show_point: int | None, plot: bool, save_models: bool, options: dict) -> None:
    """Parse, check the output directory, sweep, write the table and the plot, print the table."""
    from onnxprune.errors import OutputError
    from onnxprune.search.sweep import sweep

    budgets = _fractions(budgets, "--budgets", below_one=True)
    eps_values = _fractions(eps_values, "--eps-l2", below_one=False)
    if plot:
        from onnxprune.cli.plot import require_matplotlib

        require_matplotlib()  # before the long part, not after it
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory")
    if not out_dir.parent.is_dir():
        raise OutputError(f"{out_dir}: its parent directory {out_dir.parent} does not exist")
    out_dir.mkdir(exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise OutputError(f"{out_dir}: is not writable")
    result = sweep(in_path, options["calib"], shared.config(options), eval=eval_path, metric=metric, budgets=budgets,
                   eps_values=eps_values, search=shared.search(options),
                   preprocessing=shared.preprocessing(options), models_dir=out_dir if save_models else None,
                   progress=progress_printer(options["quiet"]))
    paths = result.write(out_dir)
    if plot:
        from onnxprune.cli.plot import write_plot

        paths.append(write_plot(result, out_dir, show_point))
    click.echo(result.to_csv(), nl=False)
    click.echo(f"written: {', '.join(map(str, paths))}")


def _fractions(text: str | None, option: str, *, below_one: bool) -> list[float] | None:
    """A comma-separated list of numbers (fractions in (0, 1) for budgets, >= 0 for eps_l2)."""
    from onnxprune.errors import ConfigError

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not (0 < v < 1 if below_one else v >= 0) for v in values):
        what = "fractions between 0 and 1, e.g. 0.5,0.7,0.9" if below_one else "values >= 0, e.g. 0.2,0.8,3"
        raise ConfigError(f"{option} {text}: expected comma-separated {what}")
    return values
