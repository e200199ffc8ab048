"""What pruning gained: parameters, MACs and channels before and after, measurements and timings.

The data only (to_dict / to_json); the CLI prints it (onnxprune/cli/summary.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


# LayerReport.kept's reason when nothing forced the channels to stay: the selector chose them all.
KEPT_BY_SELECTION = "the selector kept every channel at this strength (eps_l2, keep fraction or allocated count)"
# ... and when it did not, but a grouped Conv reading them needs every group to lose the same count.
KEPT_BY_GROUPS = ("the selector dropped some, but a grouped Conv reading them must lose the same count in every "
                  "group, and the nearest such decision keeps them all")


@dataclass(frozen=True)
class LayerReport:
    name: str
    op_type: str
    channels_before: int  # output channels (filters / neurons)
    channels_after: int
    in_channels_before: int
    in_channels_after: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    seconds: float = 0.0
    frozen: str | None = None  # why this layer's input channels were not pruned
    kept: dict[str, str] = field(default_factory=dict)  # why all "in"/"out" channels stay when `frozen` does not say


@dataclass(frozen=True)
class Accuracy:
    """Top-1 of the original and the pruned model on labelled data (fractions of ``samples``)."""

    samples: int
    top1_before: float
    top1_after: float
    source: str = ""


@dataclass(frozen=True)
class OutputCheck:
    """How far the pruned model's outputs are from the original's on calibration samples."""

    samples: int
    max_abs_diff: float  # over every element of every output
    mean_abs_diff: float
    argmax_agreement: float | None = None  # same arg-max of the first output; None unless it is (N, classes)


@dataclass(frozen=True)
class OutputFidelity:
    """How far one output of the pruned model is from the original's on the held-out samples."""

    name: str
    relative_error: float  # ||pruned - original|| / ||original||, over all held-out samples
    # Share of samples whose arg-max is the original's, for outputs with one axis of scores
    # ((N, classes), (N, classes, 1, 1), ...); None for other outputs (maps, boxes).
    top1_agreement: float | None = None
    # For the same outputs: mean of p(original's top-1) - p(pruned model's top-1), p the original's
    # class probabilities: the top-1 lost if the labels followed them (measure/fidelity.py).
    loss_estimate: float | None = None
    # For other outputs with slices of scores in [0, 1] (a detector's class scores, a text map): the
    # Dice overlap of the original's and the pruned model's thresholded positives (MapAgreement).
    map_agreement: float | None = None


@dataclass(frozen=True)
class Fidelity:
    """The pruned model against the original on calibration samples held out from the statistics:
    no labels needed. ``disagreement`` is the largest share of changed top-1 decisions over the
    outputs that have them (None without such an output), ``relative_error`` the largest over all,
    ``loss_estimate`` the largest estimated top-1 loss, ``map_agreement`` the lowest overlap of
    thresholded score maps (see OutputFidelity)."""

    samples: int
    outputs: list[OutputFidelity]
    disagreement: float | None
    relative_error: float
    loss_estimate: float | None = None
    map_agreement: float | None = None


@dataclass(frozen=True)
class Latency:
    """Median onnxruntime CPU latency of one run of a batch, original vs pruned (interleaved runs)."""

    batch: int
    ms_before: float
    ms_after: float
    threads: int
    repeats: int


@dataclass(frozen=True)
class Trial:
    """One prune of a budget search: its eps_l2, on how many calibration samples, and what it removed."""

    eps_l2: float
    samples: int
    params_removed: float
    macs_removed: float
    seconds: float
    disagreement: float | None = None  # held-out fidelity of the trial (strength searches)
    relative_error: float | None = None
    loss_estimate: float | None = None
    map_agreement: float | None = None
    latency_removed: float | None = None  # measured at batch 1 (latency budgets): 1 - 1 / speed-up
    allocated: bool = False  # a walk that kept allocated counts (MAC budgets, search/allocate.py)


@dataclass(frozen=True)
class GuardReport:
    """How the default strength was chosen: the sparsest trial whose held-out fidelity stayed
    within the bounds (``met`` False when no trial did: then the most faithful one)."""

    max_loss: float  # estimated top-1 loss, a fraction
    max_disagreement: float
    max_relative_error: float
    eps_l2: float
    met: bool
    max_map_disagreement: float | None = None
    # Set when the held-out samples were too few to bound the top-1 disagreement: how many would do
    # (search/guard.py); the model is then a cautious prune that no measure could vouch for.
    samples_needed: int | None = None
    trials: list[Trial] = field(default_factory=list)


@dataclass(frozen=True)
class SearchReport:
    """How a budget (--target-sparsity / --target-macs) was met: the eps_l2 found and every trial."""

    metric: str  # "params" or "macs"
    target: float
    tolerance: float
    eps_l2: float
    samples: int  # calibration samples of the final prune (trials on fewer were on a random subset)
    trials: list[Trial] = field(default_factory=list)
    allocation: str = "price"  # "ladder": keep counts allocated from error ladders; "price": eps_l2 searched


@dataclass(frozen=True)
class Report:
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    seconds: float
    peak_memory_mb: float | None = None  # peak resident memory of this process (Unix only)
    layers: list[LayerReport] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # linear nodes that are not layers, why
    timings: dict[str, float] = field(default_factory=dict)
    # The activation store of the walk (calib/store.py): its memory budget, the MB it held in
    # memory at most, wrote to and read from disk, and the seconds that disk I/O took.
    activations: dict[str, float | None] = field(default_factory=dict)
    # Measurements (measure/measurements.py: --eval, --check, --bench); None/empty unless asked for.
    accuracy: Accuracy | None = None
    check: OutputCheck | None = None
    latency: list[Latency] = field(default_factory=list)
    search: SearchReport | None = None  # set when a budget was asked for
    guard: GuardReport | None = None  # set when the strength was searched for under the fidelity bounds
    fidelity: Fidelity | None = None  # on the held-out calibration samples; None when none were held out
    # Graph inputs whose symbolic dims (besides the batch) were set to the calibration data's sizes
    # to count MACs: name -> shape used, the batch as declared. Empty when the model fixes them.
    input_shapes: dict[str, list] = field(default_factory=dict)

    @property
    def params_removed(self) -> float:
        return 1 - self.params_after / self.params_before if self.params_before else 0.0

    @property
    def macs_removed(self) -> float:
        return 1 - self.macs_after / self.macs_before if self.macs_before else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["params_removed"] = self.params_removed
        out["macs_removed"] = self.macs_removed
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
