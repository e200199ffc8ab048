"""onnxprune prune: paths and options -> PruneConfig -> prune() -> progress, summary, files."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import click

import onnxprune.cli.options as shared
import onnxprune.cli.summary as summary
from onnxprune.cli.guard import guarded, progress_printer
from onnxprune.cli.options import CONTEXT, DEFAULTS, default
from onnxprune.config import (DEFAULT_MAX_DISAGREEMENT, DEFAULT_MAX_LOSS, DEFAULT_MAX_MAP_DISAGREEMENT,
                              DEFAULT_MAX_RELATIVE_ERROR)

EPS_L2 = click.option("--eps-l2", type=click.FloatRange(min=0), metavar="F",
                      help="GES ridge weight on the reconstruction: the main knob. Larger removes more channels. "
                           "Not given (and no budget): searched for, from "
                           f"{DEFAULTS.eps_l2:g}, for the sparsest model within --max-loss, --max-disagreement and "
                           "--max-relative-error on the held-out samples (about 3 prunes).")
GUARD = [
    click.option("--max-loss", type=click.FloatRange(0, 100, min_open=True, max_open=True), metavar="PT",
                 default=100 * DEFAULT_MAX_LOSS, show_default=True,
                 help="Fidelity bound for outputs with one axis of scores (classifiers): the top-1 loss, in "
                      "points, estimated without labels on the held-out samples (the original's probability of "
                      "its own class minus of the pruned model's, averaged). Bounds the search without "
                      "--eps-l2; with it or a budget, a warning when exceeded."),
    click.option("--max-disagreement", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="F",
                 default=DEFAULT_MAX_DISAGREEMENT, show_default=True,
                 help="Fidelity bound for the same outputs: the share of held-out top-1 decisions that may change "
                      "(binds on models less confident than accurate, where the estimate is low). Used as "
                      "--max-loss is."),
    click.option("--max-relative-error", type=click.FloatRange(min=0, min_open=True), metavar="F",
                 default=DEFAULT_MAX_RELATIVE_ERROR, show_default=True,
                 help="Fidelity bound for every other output (maps, boxes): ||pruned - original|| / ||original|| "
                      "on the held-out samples. Used as --max-loss is."),
    click.option("--max-map-disagreement", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="F",
                 default=DEFAULT_MAX_MAP_DISAGREEMENT, show_default=True,
                 help="Fidelity bound for outputs that hold score maps (a detector's class scores, a text map: "
                      "slices of values in [0, 1]): 1 - the overlap of the original's and the pruned model's "
                      "positives at thresholds 0.25 and 0.5. Used as --max-loss is."),
]
BUDGET = [
    click.option("--target-sparsity", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="S",
                 help="Budget: remove this fraction of the parameters (0.7 = 70 %). --eps-l2 is searched for "
                      "(starting from its value) until the result is within --tolerance."),
    click.option("--target-macs", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="S",
                 help="Budget: remove this fraction of the MACs instead; every layer's keep count is allocated "
                      "from error ladders recorded at --eps-l2 (see --allocation)."),
    click.option("--target-speedup", type=click.FloatRange(1, min_open=True), metavar="X",
                 help="Budget: make the model X times as fast at batch 1 (or the batch it fixes), as measured "
                      "with onnxruntime on this machine for every pruned model (one thread, the original and "
                      "the pruned model interleaved); keep counts allocated under a MAC budget that moves until "
                      "the speed-up is met (see --allocation). Default --tolerance for it: 2 pt of the latency."),
]
MEASURE = [
    click.option("--eval", "eval_path", type=click.Path(path_type=Path), metavar="PATH",
                 help="Report top-1 before and after on labelled data: an .npz with x (inputs) and y (integer "
                      "labels), or a folder with one sub-folder of images per class (label = index in sorted "
                      "folder names)."),
    click.option("--check", is_flag=True,
                 help="Report the max and mean absolute output difference, original vs pruned, on (at most 256) "
                      "calibration samples."),
    click.option("--bench", is_flag=True,
                 help="Report onnxruntime CPU latency before and after (1 thread, median of interleaved runs) "
                      "at batch 1 and --bench-batch."),
    click.option("--bench-batch", type=click.IntRange(min=1), metavar="N",
                 help="The larger batch of --bench (implies it)." + default("bench_batch")),
]
REPORT = click.option("--report", "report_path", type=click.Path(path_type=Path), metavar="FILE.json",
                      help="Also write the report (parameters, MACs, per-layer channels, timings) as JSON.")
OUTPUT = [
    click.option("--external-data", is_flag=True,
                 help="Write the weights to OUT.onnx.data beside OUT.onnx (always done when they pass protobuf's "
                      "2 GB limit). Models with external data are read from IN.onnx's directory either way."),
    click.option("--force", is_flag=True,
                 help="Allow OUT.onnx to be IN.onnx: the input is replaced, atomically, once pruning succeeded."),
]
VERBOSE = click.option("-v", "--verbose", is_flag=True,
                       help="After the run, print where the time went (forward passes, statistics, solver, refit, "
                            "...) and its ratio to one plain onnxruntime pass over the calibration set, which is "
                            "timed too.")


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
@shared.apply(shared.CALIBRATION, EPS_L2, GUARD, shared.SELECTION, BUDGET, shared.SEARCH, MEASURE, shared.IMAGES, REPORT,
              shared.SEED, OUTPUT, shared.ACTIVATION_MEMORY, shared.QUIET, VERBOSE)
def prune_command(in_path: Path, out_path: Path, **options) -> None:
    """Prune the channels of IN.onnx that the network can do without, reconstruct the remaining
    weights by GES regression on calibration data, and write the smaller model to OUT.onnx.

    Progress goes to stderr, the before/after summary to stdout.
    """
    guarded(lambda: _run(in_path, out_path, options["calib"], shared.config(options), options["report_path"],
                         options["quiet"], external_data=options["external_data"], force=options["force"],
                         measure={**_measure_options(options), "profile": options["verbose"]},
                         budget=_budget(options), strength=_strength(options)))


def _budget(options: dict) -> dict:
    """prune_to_budget()'s keywords: target_sparsity / target_macs and the search options."""
    return {"target_sparsity": options["target_sparsity"], "target_macs": options["target_macs"],
            "target_speedup": options["target_speedup"], "search": shared.search(options)}


def _strength(options: dict) -> dict:
    """Whether --eps-l2 was given, and the fidelity bounds (the search's, or the warning's)."""
    return {"eps_given": options["eps_l2"] is not None, "max_loss": options["max_loss"] / 100,
            "max_disagreement": options["max_disagreement"],
            "max_relative_error": options["max_relative_error"],
            "max_map_disagreement": options["max_map_disagreement"]}


def _measure_options(options: dict) -> dict:
    """Measurements' keyword arguments for --eval, --check, --bench and the image preprocessing options."""
    bench, bench_batch = options["bench"], options["bench_batch"]
    return {"eval": options["eval_path"], "check": options["check"],
            "bench": (bench_batch or True) if bench or bench_batch else False,
            "preprocessing": shared.preprocessing(options)}


def _run(in_path: Path, out_path: Path, calib: Path, config, report_path: Path | None, quiet: bool,
         *, external_data: bool = False, force: bool = False, measure: dict | None = None,
         budget: dict | None = None, strength: dict | None = None) -> None:
    from onnxprune.api import calibration_sets, prune, prune_safely, prune_to_budget
    from onnxprune.calib.images import check_preprocessing, is_image_folder
    from onnxprune.errors import OutputError
    from onnxprune.graph.io import check_writable, load_model, save_model, write_text
    from onnxprune.measure.measurements import Measurements
    from onnxprune.search.budget import budget_from
    from onnxprune.search.guard import FidelityBound

    if out_path.resolve() == in_path.resolve() and not force:
        raise OutputError(f"{out_path}: is the input model; write the pruned model to another path "
                          "(or pass --force to replace the input)")
    if report_path is not None and report_path.resolve() in (in_path.resolve(), out_path.resolve()):
        raise OutputError(f"{report_path}: the report would overwrite {'IN' if report_path.resolve() == in_path.resolve() else 'OUT'}.onnx; choose another path")
    data_path = out_path.with_name(out_path.name + ".data") if external_data else None
    for path in (out_path, data_path, report_path):
        if path is not None:
            check_writable(path)
    measure, budget, strength = measure or {}, budget or {}, strength or {"eps_given": True}
    bound = FidelityBound(**{k: v for k, v in strength.items() if k != "eps_given"})
    say = progress_printer(quiet)
    started = time.perf_counter()
    budget_from(budget.get("target_sparsity"), budget.get("target_macs"), budget.get("search"),
                budget.get("target_speedup"))  # refused early
    original = load_model(in_path)
    preprocessing = measure.get("preprocessing")
    check_preprocessing(preprocessing, calib, measure.get("eval"))
    measurements = Measurements(**measure)
    measurements.score_original(original, say)  # unusable labelled data fails before any pruning
    sets = calibration_sets(original, calib, config, preprocessing=preprocessing if is_image_folder(calib) else None)
    budgeted = any(budget.get(name) is not None for name in ("target_sparsity", "target_macs", "target_speedup"))
    if budgeted:
        model, report = prune_to_budget(original, sets, config, progress=say, **budget)
    elif strength["eps_given"]:
        model, report = prune(original, sets, config, progress=say)
    else:
        model, report = prune_safely(original, sets, config, bound=bound, progress=say)
    report = measurements.add_to(replace(report, seconds=round(time.perf_counter() - started, 3)), original,
                                 model, sets.fit, batch_size=config.batch_size, say=say)
    data_path = save_model(model, out_path, external_data=external_data)
    if report_path is not None:
        write_text(report.to_json(), report_path)
    if quiet:
        click.echo(summary.result_line(report, out_path))
    else:
        click.echo(summary.summary(report))
        click.echo(f"written: {out_path}" + (f", weights: {data_path}" if data_path else "")
                   + (f", report: {report_path}" if report_path else ""))
    # The guard searched the strength only without --eps-l2 and without a budget.
    warning = summary.fidelity_warning(report, bound, searched=not strength["eps_given"] and not budgeted)
    if warning:
        click.echo(f"onnxprune: warning: {warning}", err=True)
    if measure and measure.get("profile"):
        click.echo(summary.breakdown(report.timings, report.seconds, report.activations))
