"""What pruning gained: parameters, MACs and channels before and after, and a readable summary."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field



# Parts of the main timings, or about them, that the one-line note leaves to --verbose (timing.py).
_DETAIL_TIMINGS = frozenset({"forward_original", "forward_pruned", "store_io", "forward_once", "rewrite", "export",
                             "verify"})


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


@dataclass(frozen=True)
class SearchReport:
    """How a budget (--target-sparsity / --target-macs) was met: the eps_l2 found and every trial."""

    metric: str  # "params" or "macs"
    target: float
    tolerance: float
    eps_l2: float
    samples: int  # calibration samples of the final prune (trials on fewer were on a random subset)
    trials: list[Trial] = field(default_factory=list)


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
    # Measurements asked for with eval= / check= / bench= (--eval, --check, --bench); None/empty otherwise.
    accuracy: Accuracy | None = None
    check: OutputCheck | None = None
    latency: list[Latency] = field(default_factory=list)
    search: SearchReport | None = None  # set when a budget was asked for

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

    def _timing_note(self) -> str:
        parts = [f"{name} {secs:.1f}s" for name, secs in self.timings.items() if name not in _DETAIL_TIMINGS]
        if self.peak_memory_mb is not None:
            parts.append(f"peak memory {self.peak_memory_mb:.0f} MB")
        return f" ({', '.join(parts)})" if parts else ""

    def summary(self) -> str:
        """A before/after table per layer and the totals."""
        name_width = max([len(layer.name) for layer in self.layers] + [5])
        head = f"{'layer':<{name_width}}  {'op':<6} {'channels':>11} {'params':>21} {'MACs':>23} {'time':>6}"
        lines = [head, "-" * len(head)]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<{name_width}}  {layer.op_type:<6} "
                f"{layer.channels_before:>5}->{layer.channels_after:<5} "
                f"{_count(layer.params_before):>9} -> {_count(layer.params_after):<9} "
                f"{_count(layer.macs_before):>10} -> {_count(layer.macs_after):<10} {layer.seconds:>5.1f}s"
            )
        lines.append("-" * len(head))
        lines.append(f"parameters: {self.params_before:,} -> {self.params_after:,} ({self.params_removed:.1%} removed)")
        lines.append(f"MACs:       {self.macs_before:,} -> {self.macs_after:,} ({self.macs_removed:.1%} removed)")
        lines.append(f"wall time:  {self.seconds:.1f}s" + self._timing_note())
        if self.search is not None:
            lines.append(f"budget:     {self.search_note()}")
        lines += self.measurement_lines()
        frozen = [(layer.name, layer.frozen) for layer in self.layers if layer.frozen]
        if frozen or self.skipped:
            lines.append("not pruned:")
            lines += [f"  input channels of {name}: {reason}" for name, reason in frozen]
            lines += [f"  {name}: {reason}" for name, reason in self.skipped.items()]
        return "\n".join(lines)

    def search_note(self) -> str:
        """How the budget was met, in one line ('' without a budget)."""
        s = self.search
        if s is None:
            return ""
        reached = self.params_removed if s.metric == "params" else self.macs_removed
        subset = sum(t.samples < s.samples for t in s.trials)
        return (f"{reached:.1%} of the {'parameters' if s.metric == 'params' else 'MACs'} removed "
                f"(target {s.target:.1%} ± {100 * s.tolerance:g} pt) at --eps-l2 {s.eps_l2:g}, "
                f"found in {len(s.trials)} trial{'s' if len(s.trials) != 1 else ''}" + (f" ({subset} on a subset of the samples)" if subset else ""))

    def measurement_note(self) -> str:
        """The measurements in a few words, for a one-line result ('' when none was asked for)."""
        parts = []
        if self.accuracy is not None:
            parts.append(f"top-1 {self.accuracy.top1_before:.2%} -> {self.accuracy.top1_after:.2%}")
        if self.check is not None:
            parts.append(f"max output difference {self.check.max_abs_diff:.4g}")
        parts += [f"batch-{t.batch} latency {t.ms_before:.3g} -> {t.ms_after:.3g} ms" for t in self.latency]
        return "".join(f", {part}" for part in parts)

    def measurement_lines(self) -> list[str]:
        """The summary's lines for top-1, output difference and latency (those that were measured)."""
        lines = []
        if self.accuracy is not None:
            a = self.accuracy
            lines.append(f"top-1:      {a.top1_before:.2%} -> {a.top1_after:.2%} "
                         f"({100 * (a.top1_after - a.top1_before):+.2f} pt) on {a.samples:,} samples of {a.source}")
        if self.check is not None:
            c = self.check
            agree = "" if c.argmax_agreement is None else f", same arg-max on {c.argmax_agreement:.1%}"
            lines.append(f"outputs:    differ by {c.max_abs_diff:.4g} at most, {c.mean_abs_diff:.4g} on average "
                         f"on {c.samples:,} calibration samples{agree}")
        for t in self.latency:
            threads = f"{t.threads} thread{'s' if t.threads != 1 else ''}"
            lines.append(f"latency:    batch {t.batch}: {t.ms_before:.3g} -> {t.ms_after:.3g} ms "
                         f"({t.ms_before / t.ms_after:.2f}x faster; onnxruntime CPU, {threads}, median of {t.repeats})")
        return lines


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
