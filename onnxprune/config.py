"""All pruning options in one frozen dataclass, validated once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from onnxprune.errors import ConfigError

# The fidelity bounds of the default strength search (search/guard.py), here so that the CLI's
# --help shows them without importing it. Calibrated in docs/fidelity.md.
DEFAULT_MAX_LOSS = 0.005  # estimated top-1 loss, a fraction (0.5 pt)
DEFAULT_MAX_DISAGREEMENT = 0.02  # share of changed top-1 decisions
DEFAULT_MAX_RELATIVE_ERROR = 0.05
DEFAULT_MAX_MAP_DISAGREEMENT = 0.05  # 1 - Dice overlap of thresholded score maps (detectors, text maps)
SELECTORS = ("ges", "l1", "lasso")  # see onnxprune/solve/selectors.py
PRICINGS = ("params", "macs")
READER_CHANNELS = ("tied", "own")  # see onnxprune/pruning/readers.py


@dataclass(frozen=True)
class PruneConfig:
    """Options of :func:`onnxprune.prune`.

    The CLI exposes eps_l2, eps_entropy, threshold, max_samples (--samples), exclude and seed;
    the other fields tune the internals and are set from Python.

    Attributes
    ----------
    eps_entropy : weight of the entropy term  +eps * sum w log w  (> 0; larger spreads w out).
    eps_l2 : ridge weight on Lambda; the main sparsity knob (larger removes more channels).
    threshold : keep input channel c when n_channels * w_c >= threshold (1 = the uniform weight).
    param_weighting : each layer's eps_l2 is scaled by (parameters its channel group controls /
        model mean) to this power: 0 treats all layers alike, 1 prunes hardest where the
        parameters are (see docs/method.md for the measurements).
    max_samples : calibration samples used (a random subset when there are more; None = all).
    holdout : calibration samples held out from the statistics to measure the pruned model's
        fidelity (``Report.fidelity``): taken from beyond max_samples when the data has them,
        otherwise from the samples themselves (1/4 of them, at least 16 from 32 on); 0 = none.
    rows_per_layer : regression rows (output pixels over all images) sampled per Conv layer.
    ridge : relative ridge of the final least-squares refit of the kept channels.
    refit_prior : shrink the refit towards the original layer's weights (True) or towards 0.
    exclude : node names whose input and output channels are never pruned.
    min_keep : every layer keeps at least this fraction of its output channels (0 = no floor):
        when the selection keeps fewer, the channels with the largest scores are kept as well.
    round_channels : every pruned layer keeps a multiple of this many output channels (or all of
        them), rounding the selection up by the channels with the largest scores; 1 = as selected.
        Inference kernels run fastest on widths that fill their vector lanes (often 8 or 16).
    layer_eps : node name -> factor on the eps_l2 of the channels that node produces (and every
        channel tied to them): below 1 prunes them less, above 1 more.
    pricing : what a unit's eps_l2 is priced by (see param_weighting): "params", or "macs" to move
        the pruning to where the multiply-accumulates are; None: "macs" under a MAC budget
        (prune_to_budget(target_macs=...)), "params" otherwise.
    selector : how a unit's channels are chosen: "ges" (the method), or, for comparisons, "l1"
        (filter L1 norms, Li et al. 2017) or "lasso" (He et al. 2017); all share the refit.
    keep_fraction : every unit keeps this fraction of its channels, the top ones by the selector's
        score (required by "l1" and "lasso"; with "ges" it replaces the threshold). None: GES's
        own threshold decides how many.
    seed : seed for the calibration subset and the pixel sampling.
    batch_size : images per onnxruntime call and per statistics batch.
    activation_memory_mb : the cached layer-boundary activations (both networks, all samples) kept
        in memory at most; beyond it they go to files in a temporary directory, read back batch by
        batch, so memory does not grow with the samples. Same results either way; inf = never spill.
    activation_dir : where that temporary directory is made (None: the system's, $TMPDIR).
    reader_channels : channels that several layers read (a residual stream, a fan-out): "tied",
        removed from every writer and reader at once, or "own", each reader picks its own subset
        through a Gather and the shared tensor keeps its channels (pruning/readers.py).
    max_features : a layer whose regression is wider (input channels x kernel taps, per group) is
        neither solved nor refit: the channels it reads are kept and its weights stay as they are
        (VGG's first Gemm on 7 x 7 x 512 = 25,088 features would need a 5 GB Gram and hours).
    max_iter, tol : GES iteration limit, and the largest change of n*w_c that counts as converged.
    """

    eps_entropy: float = 1e-3
    eps_l2: float = 0.8
    threshold: float = 0.5
    param_weighting: float = 1.0
    max_samples: int | None = 1024
    holdout: int = 1024
    rows_per_layer: int = 32768
    ridge: float = 1e-3
    refit_prior: bool = True
    exclude: frozenset[str] = field(default_factory=frozenset)
    min_keep: float = 0.0
    round_channels: int = 1
    layer_eps: Mapping[str, float] = field(default_factory=dict)
    pricing: str | None = None
    selector: str = "ges"
    keep_fraction: float | None = None
    seed: int = 0
    batch_size: int = 128
    activation_memory_mb: float = 256.0
    activation_dir: str | None = None
    max_features: int = 16384
    max_iter: int = 20
    tol: float = 1e-3
    reader_channels: str = "tied"

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", frozenset(self.exclude))
        object.__setattr__(self, "layer_eps", dict(self.layer_eps))
        self.validate()

    def validate(self) -> None:
        positive = {"eps_entropy": self.eps_entropy, "rows_per_layer": self.rows_per_layer,
                    "max_features": self.max_features,
                    "batch_size": self.batch_size, "max_iter": self.max_iter, "tol": self.tol}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        for name, value in {"eps_l2": self.eps_l2, "threshold": self.threshold, "ridge": self.ridge,
                            "param_weighting": self.param_weighting,
                            "activation_memory_mb": self.activation_memory_mb}.items():
            if not value >= 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if self.holdout < 0:
            raise ConfigError(f"holdout must be >= 0, got {self.holdout}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"max_samples must be >= 1, got {self.max_samples}")
        if not 0 <= self.min_keep <= 1:
            raise ConfigError(f"min_keep must be a fraction in [0, 1], got {self.min_keep}")
        if not (isinstance(self.round_channels, int) and self.round_channels >= 1):
            raise ConfigError(f"round_channels must be an integer >= 1, got {self.round_channels!r}")
        for name, factor in self.layer_eps.items():
            if not factor >= 0:
                raise ConfigError(f"layer_eps['{name}'] must be >= 0, got {factor}")
        if self.pricing is not None and self.pricing not in PRICINGS:
            raise ConfigError(f"pricing must be one of {', '.join(PRICINGS)}, got {self.pricing!r}")
        if self.reader_channels not in READER_CHANNELS:
            raise ConfigError(f"reader_channels must be one of {', '.join(READER_CHANNELS)}, "
                              f"got {self.reader_channels!r}")
        if self.selector not in SELECTORS:
            raise ConfigError(f"selector must be one of {', '.join(SELECTORS)}, got {self.selector!r}")
        if self.keep_fraction is not None and not 0 < self.keep_fraction <= 1:
            raise ConfigError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.selector != "ges" and self.keep_fraction is None:
            raise ConfigError(f"selector {self.selector!r} ranks channels but does not say how many: give keep_fraction")
