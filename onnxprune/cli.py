"""Command line: paths and options -> PruneConfig -> prune() -> progress, summary, files, exit code.

Heavy imports (onnx, onnxruntime, numpy) happen inside the command so that --help is instant.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import click

from onnxprune.config import PRICINGS, PruneConfig

DEFAULTS = PruneConfig()
IMAGE_OPTIONS = ("size", "scale", "mean", "std", "layout")


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command(
    "prune",
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  onnxprune models/lenet5_mnist.onnx lenet5_pruned.onnx --calib models/mnist_calib.npy
  onnxprune vgg16.onnx vgg16_half.onnx --calib calib.npy --target-sparsity 0.5 --eval test.npz
  onnxprune vgg16.onnx vgg16_small.onnx --calib calib/ --eps-l2 1 --report report.json
  onnxprune net.onnx net_small.onnx --calib x.npz --exclude /features/0/Conv --quiet
  onnxprune vgg16.onnx small.onnx --calib images/ --mean 0.4914,0.4822,0.4465 --std 0.2470,0.2435,0.2616 --eval test/ --bench

\b
Exit status: 0 on success, 1 when an input is unusable (the message says which and why),
2 on a usage error, 130 when interrupted. No output file is written unless pruning succeeded.

\b
'onnxprune IN OUT ...' is 'onnxprune prune IN OUT ...'. The other command:
  onnxprune sweep IN.onnx --calib PATH --eval PATH --out DIR   prune at several budgets: table and plot""",
)
@click.argument("in_path", metavar="IN.onnx", type=click.Path(path_type=Path))
@click.argument("out_path", metavar="OUT.onnx", type=click.Path(path_type=Path))
@click.option("--calib", "calib", required=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Calibration inputs, preprocessed exactly as the model expects: a .npy batch (single-input "
                   "models), a .npz keyed by graph input name, or a directory of such files (concatenated); "
                   "or a folder of images (flat or one sub-folder per class; see --size, --mean, --std).")
@click.option("--samples", type=click.IntRange(min=1), default=DEFAULTS.max_samples, show_default=True,
              help="Calibration samples to use; a random subset (see --seed) when there are more.")
@click.option("--eps-l2", type=click.FloatRange(min=0), default=DEFAULTS.eps_l2, show_default=True,
              help="GES ridge weight on the reconstruction: the main knob. Larger removes more channels.")
@click.option("--eps-entropy", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.eps_entropy,
              show_default=True, help="GES entropy weight; larger spreads the channel weights more evenly.")
@click.option("--threshold", type=click.FloatRange(min=0), default=DEFAULTS.threshold, show_default=True,
              help="Keep an input channel when its GES weight is at least this fraction of the uniform weight.")
@click.option("--param-weighting", type=click.FloatRange(min=0), default=DEFAULTS.param_weighting, show_default=True,
              help="Scale each layer's --eps-l2 by (parameters its channels control / model mean) to this power: "
                   "0 treats all layers alike, 1 prunes hardest where the parameters are.")
@click.option("--max-iter", type=click.IntRange(min=1), default=DEFAULTS.max_iter, show_default=True,
              help="GES iterations per layer at most; more iterations remove a few more channels.")
@click.option("--exclude", multiple=True, metavar="NODE",
              help="Never prune the input or output channels of this node (repeatable). Names are in the summary.")
@click.option("--min-keep", type=click.FloatRange(0, 1), default=DEFAULTS.min_keep, show_default=True, metavar="F",
              help="Every layer keeps at least this fraction of its output channels (those with the largest GES "
                   "weights), whatever --eps-l2 or the budget says.")
@click.option("--layer-eps", multiple=True, metavar="NODE=F",
              help="Multiply the --eps-l2 of the channels NODE produces (and of every channel tied to them) by F: "
                   "below 1 prunes them less, above 1 more (repeatable).")
@click.option("--pricing", type=click.Choice(PRICINGS),
              help="Price each layer's --eps-l2 (see --param-weighting) by the parameters or by the MACs its "
                   "channels control.  [default: macs with --target-macs, else params]")
@click.option("--target-sparsity", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="S",
              help="Budget: remove this fraction of the parameters (0.7 = 70 %). --eps-l2 is searched for "
                   "(starting from its value) until the result is within --tolerance.")
@click.option("--target-macs", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="S",
              help="Budget: remove this fraction of the MACs instead (prices --eps-l2 by MACs).")
@click.option("--tolerance", type=click.FloatRange(0, 50, min_open=True, max_open=True), metavar="PT",
              help="Budgets: how close to the target is close enough, in percentage points.  [default: 0.5]")
@click.option("--max-trials", type=click.IntRange(min=1), metavar="N",
              help="Budgets: prunes on all calibration samples at most, before giving up with the closest "
                   "fraction reached.  [default: 8]")
@click.option("--search-samples", type=click.IntRange(min=0), metavar="N",
              help="Budgets: bracket the target on a random subset of N calibration samples first (trials "
                   "without most of the statistics pass), then finish on all of them.  [default: 0: all samples]")
@click.option("--eval", "eval_path", type=click.Path(path_type=Path), metavar="PATH",
              help="Report top-1 before and after on labelled data: an .npz with x (inputs) and y (integer labels), "
                   "or a folder with one sub-folder of images per class (label = index in sorted folder names).")
@click.option("--check", is_flag=True,
              help="Report the max and mean absolute output difference, original vs pruned, on (at most 256) "
                   "calibration samples.")
@click.option("--bench", is_flag=True,
              help="Report onnxruntime CPU latency before and after (1 thread, median of interleaved runs) "
                   "at batch 1 and --bench-batch.")
@click.option("--bench-batch", type=click.IntRange(min=1), metavar="N",
              help="The larger batch of --bench (implies it).  [default: 64]")
@click.option("--size", metavar="H,W",
              help="Image folders: resize every image to this size (bilinear; one number for a square). "
                   "Without it images must already have the model's input size.")
@click.option("--scale", metavar="S",
              help="Image folders: multiply pixel values 0..255 by S, a number or a fraction.  [default: 1/255]")
@click.option("--mean", metavar="M[,M,M]",
              help="Image folders: subtract this per channel (RGB order) after --scale.  [default: 0]")
@click.option("--std", metavar="S[,S,S]",
              help="Image folders: then divide by this per channel.  [default: 1]")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"], case_sensitive=False),
              help="Image folders: the model input's layout; its channel count picks RGB (3) or grayscale (1).  "
                   "[default: NCHW]")
@click.option("--report", "report_path", type=click.Path(path_type=Path), metavar="FILE.json",
              help="Also write the report (parameters, MACs, per-layer channels, timings) as JSON.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
              help="Seed for the calibration subset and pixel sampling; same seed, same result.")
@click.option("--external-data", is_flag=True,
              help="Write the weights to OUT.onnx.data beside OUT.onnx (always done when they pass protobuf's 2 GB "
                   "limit). Models with external data are read from IN.onnx's directory either way.")
@click.option("--force", is_flag=True,
              help="Allow OUT.onnx to be IN.onnx: the input is replaced, atomically, once pruning succeeded.")
@click.option("--activation-memory", type=click.FloatRange(min=0), default=DEFAULTS.activation_memory_mb,
              show_default=True, metavar="MB",
              help="Layer activations (all calibration samples, both networks) held in memory at most; the rest "
                   "go to a temporary directory ($TMPDIR), removed at the end. 'inf': never use the disk.")
@click.option("-q", "--quiet", is_flag=True, help="No per-layer progress and no table: one result line.")
@click.option("-v", "--verbose", is_flag=True,
              help="After the run, print where the time went (forward passes, statistics, solver, refit, ...) "
                   "and its ratio to one plain onnxruntime pass over the calibration set, which is timed too.")
def prune_command(in_path: Path, out_path: Path, **options) -> None:
    """Prune the channels of IN.onnx that the network can do without, reconstruct the remaining
    weights by GES regression on calibration data, and write the smaller model to OUT.onnx.

    Progress goes to stderr, the before/after summary to stdout.
    """
    _guarded(lambda: _run(in_path, out_path, options["calib"], _config(options), options["report_path"],
                          options["quiet"], external_data=options["external_data"], force=options["force"],
                          measure={**_measure_options(options), "profile": options["verbose"], **_budget(options)}))


def _guarded(action: Callable[[], None]) -> None:
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


def _config(options: dict) -> PruneConfig:
    """The PruneConfig of the pruning options (those prune and sweep share)."""
    return PruneConfig(eps_l2=options.get("eps_l2", DEFAULTS.eps_l2), eps_entropy=options["eps_entropy"],
                       threshold=options["threshold"], max_samples=options["samples"],
                       param_weighting=options["param_weighting"], max_iter=options["max_iter"],
                       exclude=frozenset(options["exclude"]), seed=options["seed"],
                       activation_memory_mb=options["activation_memory"], min_keep=options["min_keep"],
                       layer_eps=_layer_eps(options["layer_eps"]), pricing=options["pricing"])


def _layer_eps(values: tuple[str, ...]) -> dict[str, float]:
    from onnxprune.errors import ConfigError

    factors = {}
    for value in values:
        name, _, factor = value.rpartition("=")  # node names may hold '=', the factor does not
        try:
            factors[name] = float(factor)
        except ValueError:
            name = ""
        if not name or not factors[name] >= 0:
            raise ConfigError(f"--layer-eps {value}: expected NODE=F with a factor F >= 0, e.g. /features/0/Conv=0.5")
    return factors


def _search(options: dict):
    """The budget search options given (None when none was)."""
    from onnxprune.search.budget import SearchOptions

    given = {"tolerance": None if options["tolerance"] is None else options["tolerance"] / 100,
             "max_trials": options["max_trials"], "search_samples": options["search_samples"]}
    given = {name: value for name, value in given.items() if value is not None}
    if given.get("search_samples") == 0:
        given["search_samples"] = None
    return SearchOptions(**given) if given else None


def _budget(options: dict) -> dict:
    """prune()'s budget keywords: target_sparsity / target_macs and the search options."""
    return {"target_sparsity": options["target_sparsity"], "target_macs": options["target_macs"],
            "search": _search(options)}


def _run(in_path: Path, out_path: Path, calib: Path, config: PruneConfig, report_path: Path | None, quiet: bool,
         *, external_data: bool = False, force: bool = False, measure: dict | None = None) -> None:
    from onnxprune.api import prune
    from onnxprune.errors import OutputError
    from onnxprune.graph.io import check_writable, save_model, write_text

    if out_path.resolve() == in_path.resolve() and not force:
        raise OutputError(f"{out_path}: is the input model; write the pruned model to another path "
                          "(or pass --force to replace the input)")
    if report_path is not None and report_path.resolve() in (in_path.resolve(), out_path.resolve()):
        raise OutputError(f"{report_path}: the report would overwrite {'IN' if report_path.resolve() == in_path.resolve() else 'OUT'}.onnx; choose another path")
    data_path = out_path.with_name(out_path.name + ".data") if external_data else None
    for path in (out_path, data_path, report_path):
        if path is not None:
            check_writable(path)
    progress = None if quiet else (lambda line: click.echo(line, err=True))
    model, report = prune(in_path, calib, config, progress=progress, **(measure or {}))
    data_path = save_model(model, out_path, external_data=external_data)
    if report_path is not None:
        write_text(report.to_json(), report_path)
    if quiet:
        click.echo(f"{out_path}: parameters {report.params_before:,} -> {report.params_after:,} "
                   f"({report.params_removed:.1%} removed), MACs {report.macs_removed:.1%} removed, "
                   f"{report.seconds:.1f}s{report.measurement_note()}"
                   + (f"; budget: {report.search_note()}" if report.search is not None else ""))
    else:
        click.echo(report.summary())
        click.echo(f"written: {out_path}" + (f", weights: {data_path}" if data_path else "")
                   + (f", report: {report_path}" if report_path else ""))
    if measure and measure.get("profile"):
        from onnxprune.measure.timing import breakdown

        click.echo(breakdown(report.timings, report.seconds, report.activations))


def _measure_options(options: dict) -> dict:
    """prune()'s keyword arguments for --eval, --check, --bench and the image preprocessing options."""
    bench, bench_batch = options["bench"], options["bench_batch"]
    return {"eval": options["eval_path"], "check": options["check"],
            "bench": (bench_batch or True) if bench or bench_batch else False, "preprocessing": _preprocessing(options)}


def _preprocessing(options: dict):
    from onnxprune.calib.images import Preprocessing

    given = {name: options[name] for name in IMAGE_OPTIONS if options.get(name) is not None}
    return Preprocessing(**given) if given else None


SWEEP_SHARED = ("calib", "samples", "eps_entropy", "threshold", "param_weighting", "max_iter", "exclude", "min_keep",
                "layer_eps", "pricing", "tolerance", "max_trials", "search_samples", "size", "scale", "mean", "std",
                "layout", "seed", "activation_memory", "quiet")


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
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Where sweep.csv, sweep.json and sweep.png go (made if missing; its parent must exist).")
@click.option("--budgets", metavar="S,S,...",
              help="Fractions of the --metric to remove, one pruned model each.  [default: 0.5,0.6,0.7,0.8,0.9]")
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
    _guarded(lambda: _sweep(in_path, eval_path, out_dir, budgets, metric, eps_values, show_point, not no_plot,
                            save_models, options))


def _sweep(in_path: Path, eval_path: Path, out_dir: Path, budgets: str | None, metric: str, eps_values: str | None,
           show_point: int | None, plot: bool, save_models: bool, options: dict) -> None:
    """Parse, check the output directory, sweep, write the table and the plot, print the table."""
    from onnxprune.errors import OutputError
    from onnxprune.search.sweep import sweep

    budgets = _fractions(budgets, "--budgets", below_one=True)
    eps_values = _fractions(eps_values, "--eps-l2", below_one=False)
    if plot:
        from onnxprune.plot import require_matplotlib

        require_matplotlib()  # before the long part, not after it
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory")
    if not out_dir.parent.is_dir():
        raise OutputError(f"{out_dir}: its parent directory {out_dir.parent} does not exist")
    out_dir.mkdir(exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise OutputError(f"{out_dir}: is not writable")
    progress = None if options["quiet"] else (lambda line: click.echo(line, err=True))
    result = sweep(in_path, options["calib"], _config(options), eval=eval_path, metric=metric, budgets=budgets,
                   eps_values=eps_values, search=_search(options),
                   preprocessing=_preprocessing(options), models_dir=out_dir if save_models else None,
                   progress=progress)
    paths = result.write(out_dir, plot=plot, show_point=show_point)
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


for _param in reversed(prune_command.params):  # the pruning options, the same objects as prune's
    if _param.name in SWEEP_SHARED:
        sweep_command.params.insert(2, _param)


class _DefaultToPrune(click.Group):
    """'onnxprune IN OUT ...' stays the prune command: arguments that do not start with a command
    name go to 'prune' (and so does --help, whose answer is prune's, naming the other commands)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["prune", *args]
        return super().parse_args(ctx, args)


main = _DefaultToPrune("onnxprune", commands=[prune_command, sweep_command], context_settings=CONTEXT,
                       help="Prune the channels of an ONNX CNN (onnxprune prune) or sweep budgets (onnxprune sweep).")


if __name__ == "__main__":  # pragma: no cover
    main()
