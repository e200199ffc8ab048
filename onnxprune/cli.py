"""Command line: paths and options -> PruneConfig -> prune() -> progress, summary, files, exit code.

Heavy imports (onnx, onnxruntime, numpy) happen inside the command so that --help is instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from onnxprune.config import PruneConfig

DEFAULTS = PruneConfig()


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  onnxprune models/lenet5_mnist.onnx lenet5_pruned.onnx --calib models/mnist_calib.npy
  onnxprune vgg16.onnx vgg16_small.onnx --calib calib/ --eps-l2 1 --report report.json
  onnxprune net.onnx net_small.onnx --calib x.npz --exclude /features/0/Conv --quiet
  onnxprune vgg16.onnx small.onnx --calib images/ --mean 0.4914,0.4822,0.4465 --std 0.2470,0.2435,0.2616 --eval test/ --bench

\b
Exit status: 0 on success, 1 when an input is unusable (the message says which and why),
2 on a usage error, 130 when interrupted. No output file is written unless pruning succeeded.""",
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
def main(in_path: Path, out_path: Path, calib: Path, samples: int, eps_l2: float, eps_entropy: float,
         threshold: float, param_weighting: float, max_iter: int, exclude: tuple[str, ...],
         report_path: Path | None, seed: int, external_data: bool, force: bool, activation_memory: float,
         quiet: bool, verbose: bool,
         eval_path: Path | None, check: bool, bench: bool, bench_batch: int | None, **image_options: str | None) -> None:
    """Prune the channels of IN.onnx that the network can do without, reconstruct the remaining
    weights by GES regression on calibration data, and write the smaller model to OUT.onnx.

    Progress goes to stderr, the before/after summary to stdout.
    """
    from onnxprune.errors import OnnxPruneError, first_line

    try:
        config = PruneConfig(eps_l2=eps_l2, eps_entropy=eps_entropy, threshold=threshold, max_samples=samples,
                             param_weighting=param_weighting, max_iter=max_iter, exclude=frozenset(exclude), seed=seed,
                             activation_memory_mb=activation_memory)
        measure = {**_measure_options(eval_path, check, bench, bench_batch, image_options), "profile": verbose}
        _run(in_path, out_path, calib, config, report_path, quiet, external_data=external_data, force=force,
             measure=measure)
    except OnnxPruneError as exc:
        click.echo(f"onnxprune: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("onnxprune: interrupted; nothing was written", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug of ours: still one line and no file, the details on request
        if os.environ.get("ONNXPRUNE_DEBUG"):
            raise
        click.echo(f"onnxprune: internal error: {type(exc).__name__}: {first_line(exc)} (nothing was written; "
                   "rerun with ONNXPRUNE_DEBUG=1 for the traceback and please report it)", err=True)
        sys.exit(1)


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
                   f"{report.seconds:.1f}s{report.measurement_note()}")
    else:
        click.echo(report.summary())
        click.echo(f"written: {out_path}" + (f", weights: {data_path}" if data_path else "")
                   + (f", report: {report_path}" if report_path else ""))
    if measure and measure.get("profile"):
        from onnxprune.timing import breakdown

        click.echo(breakdown(report.timings, report.seconds, report.activations))


def _measure_options(eval_path: Path | None, check: bool, bench: bool, bench_batch: int | None,
                     image_options: dict[str, str | None]) -> dict:
    """prune()'s keyword arguments for --eval, --check, --bench and the image preprocessing options."""
    from onnxprune.calib.images import Preprocessing

    given = {name: value for name, value in image_options.items() if value is not None}
    return {"eval": eval_path, "check": check, "bench": (bench_batch or True) if bench or bench_batch else False,
            "preprocessing": Preprocessing(**given) if given else None}


if __name__ == "__main__":  # pragma: no cover
    main()
