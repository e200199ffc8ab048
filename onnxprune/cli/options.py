"""The options prune and sweep share, each defined once, and their translation to the library's
objects (PruneConfig, SearchOptions, Preprocessing).

Defaults come from PruneConfig's fields. The few owned by modules too heavy to import for --help
(they load numpy, onnx or onnxruntime) are shown from SHOWN_DEFAULTS, which tests/test_cli.py checks
against their owners.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import click

from onnxprune.config import PRICINGS, READER_CHANNELS, PruneConfig

DEFAULTS = PruneConfig()
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
IMAGE_OPTIONS = ("size", "scale", "mean", "std", "layout")

# Shown in --help only; the library applies them when the option is not given (None).
SHOWN_DEFAULTS = {
    "tolerance": "0.5; 2 with --target-speedup",  # budget.DEFAULT_TOLERANCE, in percentage points
    "max_trials": "8",  # SearchOptions.max_trials
    "search_samples": "0: all samples",  # SearchOptions.search_samples (None)
    "allocation": "ladder with --target-macs and --target-speedup, else price",  # SearchOptions.allocation (None)
    "bench_batch": "64",  # measure.evaluate.BENCH_BATCHES[-1]
    "scale": "1/255",  # calib.images.Preprocessing
    "mean": "0",
    "std": "1",
    "layout": "NCHW",
    "budgets": "0.5,0.6,0.7,0.8,0.9",  # search.sweep.DEFAULT_BUDGETS
}

Decorator = Callable[[Callable], Callable]


def default(name: str) -> str:
    """The '[default: ...]' that ends a help text whose default is not PruneConfig's."""
    return f"  [default: {SHOWN_DEFAULTS[name]}]"


def apply(*groups: Decorator | Sequence[Decorator]) -> Decorator:
    """One decorator of option decorators (and lists of them), listed in their --help order."""
    decorators = [d for group in groups for d in (group if isinstance(group, Sequence) else [group])]

    def decorate(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return decorate


CALIBRATION = [
    click.option("--calib", "calib", required=True, type=click.Path(path_type=Path), metavar="PATH",
                 help="Calibration inputs, preprocessed exactly as the model expects: a .npy batch (single-input "
                      "models), a .npz keyed by graph input name, or a directory of such files (concatenated); "
                      "or a folder of images (flat or one sub-folder per class; see --size, --mean, --std)."),
    click.option("--samples", type=click.IntRange(min=1), default=DEFAULTS.max_samples, show_default=True,
                 help="Calibration samples to use; a random subset (see --seed) when there are more."),
    click.option("--holdout", type=click.IntRange(min=0), default=DEFAULTS.holdout, show_default=True, metavar="N",
                 help="Calibration samples held out from the statistics to measure the pruned model's fidelity "
                      "(top-1 agreement and relative error against the original; no labels needed): taken from "
                      "beyond --samples when the data has them, else from them (1/4, at least 16 from 32 samples on). 0: none."),
]
SELECTION = [
    click.option("--eps-entropy", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.eps_entropy,
                 show_default=True, help="GES entropy weight; larger spreads the channel weights more evenly."),
    click.option("--threshold", type=click.FloatRange(min=0), default=DEFAULTS.threshold, show_default=True,
                 help="Keep an input channel when its GES weight is at least this fraction of the uniform weight."),
    click.option("--param-weighting", type=click.FloatRange(min=0), default=DEFAULTS.param_weighting,
                 show_default=True,
                 help="Scale each layer's --eps-l2 by (parameters its channels control / model mean) to this "
                      "power: 0 treats all layers alike, 1 prunes hardest where the parameters are."),
    click.option("--max-iter", type=click.IntRange(min=1), default=DEFAULTS.max_iter, show_default=True,
                 help="GES iterations per layer at most; more iterations remove a few more channels."),
    click.option("--max-features", type=click.IntRange(min=1), default=DEFAULTS.max_features, show_default=True,
                 metavar="N",
                 help="A layer whose regression is wider than N features (input channels x kernel taps) keeps "
                      "the channels it reads and its weights: its statistics would need an N x N Gram (VGG's "
                      "first Gemm on 7x7x512 = 25,088 features: 5 GB and hours of solving)."),
    click.option("--exclude", multiple=True, metavar="NODE",
                 help="Never prune the input or output channels of this node (repeatable). Names are in the "
                      "summary."),
    click.option("--min-keep", type=click.FloatRange(0, 1), default=DEFAULTS.min_keep, show_default=True,
                 metavar="F",
                 help="Every layer keeps at least this fraction of its output channels (those with the largest "
                      "GES weights), whatever --eps-l2 or the budget says."),
    click.option("--round-channels", type=click.IntRange(min=1), default=DEFAULTS.round_channels, show_default=True,
                 metavar="N",
                 help="Every pruned layer keeps a multiple of N output channels (or all of them), rounding the "
                      "selection up by the channels with the largest GES weights: inference kernels run fastest "
                      "on widths that fill their vector lanes (try 8 or 16). 1: as selected."),
    click.option("--layer-eps", multiple=True, metavar="NODE=F",
                 help="Multiply the --eps-l2 of the channels NODE produces (and of every channel tied to them) by "
                      "F: below 1 prunes them less, above 1 more (repeatable)."),
    click.option("--reader-channels", type=click.Choice(READER_CHANNELS), default=DEFAULTS.reader_channels,
                 show_default=True,
                 help="Channels several layers read (a residual stream, a fan-out): 'tied' removes a channel from "
                      "every writer and reader at once; 'own' lets each reader keep its own subset through a "
                      "Gather, and the shared tensor keeps its channels."),
    click.option("--pricing", type=click.Choice(PRICINGS),
                 help="Price each layer's --eps-l2 (see --param-weighting) by the parameters or by the MACs its "
                      "channels control.  [default: macs with --target-macs or --target-speedup, else params]"),
]
SEARCH = [
    click.option("--tolerance", type=click.FloatRange(0, 50, min_open=True, max_open=True), metavar="PT",
                 help="Budgets: how close to the target is close enough, in percentage points."
                      + default("tolerance")),
    click.option("--max-trials", type=click.IntRange(min=1), metavar="N",
                 help="Budgets: prunes on all calibration samples at most, before giving up with the closest "
                      "fraction reached." + default("max_trials")),
    click.option("--search-samples", type=click.IntRange(min=0), metavar="N",
                 help="Budgets: bracket the target on a random subset of N calibration samples first (trials "
                      "without most of the statistics pass), then finish on all of them."
                      + default("search_samples")),
    click.option("--allocation", type=click.Choice(["ladder", "price"]),
                 help="MAC and speed-up budgets: 'ladder' records every unit's refit error at each keep count "
                      "in one walk, allocates the counts that add the least error for the MACs removed, and "
                      "prunes to them in a second walk (a speed-up: more walks, until the measured speed-up "
                      "is met); 'price' searches --eps-l2 priced by MACs, as for --target-sparsity."
                      + default("allocation")),
]
IMAGES = [
    click.option("--size", metavar="H,W",
                 help="Image folders: resize every image to this size (bilinear; one number for a square). "
                      "Without it images must already have the model's input size."),
    click.option("--scale", metavar="S",
                 help="Image folders: multiply pixel values 0..255 by S, a number or a fraction." + default("scale")),
    click.option("--mean", metavar="M[,M,M]",
                 help="Image folders: subtract this per channel (RGB order) after --scale." + default("mean")),
    click.option("--std", metavar="S[,S,S]", help="Image folders: then divide by this per channel." + default("std")),
    click.option("--layout", type=click.Choice(["NCHW", "NHWC"], case_sensitive=False),
                 help="Image folders: the model input's layout; its channel count picks RGB (3) or grayscale (1)."
                      + default("layout")),
]
SEED = click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
                    help="Seed for the calibration subset and pixel sampling; same seed, same result.")
ACTIVATION_MEMORY = click.option(
    "--activation-memory", type=click.FloatRange(min=0), default=DEFAULTS.activation_memory_mb, show_default=True,
    metavar="MB", help="Layer activations (all calibration samples, both networks) held in memory at most; the "
                       "rest go to a temporary directory ($TMPDIR), removed at the end. 'inf': never use the disk.")
QUIET = click.option("-q", "--quiet", is_flag=True, help="No per-layer progress and no table: one result line.")

# Every option sweep takes from prune, in prune's order.
SHARED = [*CALIBRATION, *SELECTION, *SEARCH, *IMAGES, SEED, ACTIVATION_MEMORY, QUIET]


def config(options: dict) -> PruneConfig:
    """The PruneConfig of the pruning options (sweep has no single --eps-l2: the default then)."""
    eps_l2 = options.get("eps_l2")  # prune without --eps-l2 searches it, from the default
    return PruneConfig(eps_l2=DEFAULTS.eps_l2 if eps_l2 is None else eps_l2, eps_entropy=options["eps_entropy"],
                       threshold=options["threshold"], max_samples=options["samples"],
                       param_weighting=options["param_weighting"], max_iter=options["max_iter"],
                       exclude=frozenset(options["exclude"]), seed=options["seed"],
                       max_features=options["max_features"],
                       activation_memory_mb=options["activation_memory"], min_keep=options["min_keep"],
                       round_channels=options["round_channels"],
                       holdout=options["holdout"],
                       layer_eps=layer_eps(options["layer_eps"]), pricing=options["pricing"],
                       reader_channels=options["reader_channels"])


def layer_eps(values: tuple[str, ...]) -> dict[str, float]:
    """--layer-eps NODE=F values as {node: factor}."""
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


def search(options: dict):
    """The budget search options given (None when none was)."""
    from onnxprune.search.budget import SearchOptions

    given = {"tolerance": None if options["tolerance"] is None else options["tolerance"] / 100,
             "max_trials": options["max_trials"], "search_samples": options["search_samples"],
             "allocation": options.get("allocation")}
    given = {name: value for name, value in given.items() if value is not None}
    if given.get("search_samples") == 0:
        given["search_samples"] = None
    return SearchOptions(**given) if given else None


def preprocessing(options: dict):
    """The image folder preprocessing given (None when no image option was)."""
    from onnxprune.calib.images import Preprocessing

    given = {name: options[name] for name in IMAGE_OPTIONS if options.get(name) is not None}
    return Preprocessing(**given) if given else None
