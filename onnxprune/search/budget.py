"""Budgets: find the ε_L2 at which pruning removes a given fraction of the parameters or MACs.

The fraction removed grows with ε_L2, roughly linearly in log ε_L2, but in steps and with a
little noise (channels leave in groups, and every decision changes what later layers see), so
the search is a safeguarded secant/false-position method on the measured fraction in log ε_L2,
every trial a full prune. Optionally it first brackets the target on a random subset of the
calibration samples and then finishes on all of them, starting from the subset's answer and its
slope. It stops at the first trial within the tolerance; a target the
model cannot reach (everything prunable already gone, or nothing left to keep) or that the
trials cannot hit (the fraction jumps across it) is a one-line :class:`BudgetError` that names
the closest fraction reached and its ε_L2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from onnxprune.calib.data import subset_indices
from onnxprune.config import PruneConfig
from onnxprune.errors import BudgetError, ConfigError
from onnxprune.report import Report, SearchReport, Trial
from onnxprune.pruning.costs import Ladders
from onnxprune.search.allocate import find_allocation

METRICS = {"params": "parameters", "macs": "MACs", "latency": "batch-1 latency"}
ALLOCATIONS = ("ladder", "price")  # see SearchOptions.allocation
# A trial's fraction removed is exact for counts; a latency is measured, to a few per cent on a
# quiet machine, so a tighter tolerance would only chase the noise.
DEFAULT_TOLERANCE = {"params": 0.005, "macs": 0.005, "latency": 0.02}
EPS_RANGE = (1e-6, 1e6)  # log-space bounds of the search: far beyond any useful setting
MAX_STEP = math.log(10.0)  # at most a factor 10 in ε_L2 per extrapolating step
SATURATED = 2 * MAX_STEP  # no change over a factor 100 in ε_L2: every prunable channel is gone (or none is)
SLOPE_GUESS = 0.08  # fraction removed per unit of log ε_L2 before two trials say better (VGG-16, LeNet-5)


@dataclass(frozen=True)
class SearchOptions:
    """How a budget is searched for.

    tolerance : stop when the fraction removed is within this of the target (0.005 = ±0.5 pt);
        None: the metric's default (DEFAULT_TOLERANCE: 0.005 for counts, 0.02 for latency).
    max_trials : full prunes on all calibration samples at most (the subset's trials not counted).
    search_samples : bracket the target on a random subset of this many calibration samples
        first, then finish on all of them (None, the default, or at least the number of samples:
        search on all of them from the start). A subset trial saves only the statistics pass
        (about a quarter of a VGG-16 prune; the GES solves cost the same), so this pays where
        the forward passes dominate: large images, many samples.
    subset_trials : prunes on the subset at most.
    allocation : how a budget is met: "ladder", every unit's keep count allocated from its error
        ladder under a budget of MACs (of parameters for a parameter budget; search/allocate.py; no
        subset); "price", ε_L2 searched (priced by MACs for MAC and speed-up budgets); None (the
        default): "ladder" for MAC and speed-up budgets, "price" for parameter budgets.
    """

    tolerance: float | None = None
    max_trials: int = 8
    search_samples: int | None = None
    subset_trials: int = 6
    allocation: str | None = None

    def __post_init__(self) -> None:
        if self.allocation is not None and self.allocation not in ALLOCATIONS:
            raise ConfigError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")
        if self.tolerance is not None and not 0 < self.tolerance < 0.5:
            raise ConfigError(f"tolerance must be a fraction in (0, 0.5), got {self.tolerance}")
        if self.max_trials < 1 or self.subset_trials < 1:
            raise ConfigError(f"max_trials and subset_trials must be >= 1, got {self.max_trials}, {self.subset_trials}")
        if self.search_samples is not None and self.search_samples < 1:
            raise ConfigError(f"search_samples must be >= 1, got {self.search_samples}")


@dataclass(frozen=True)
class Budget:
    """A fraction of the parameters ("params"), MACs ("macs") or measured batch-1 latency
    ("latency": a speed-up X is the fraction 1 - 1/X) to remove."""

    metric: str
    target: float
    options: SearchOptions = field(default_factory=SearchOptions)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"budget metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not 0 < self.target < 1:
            raise ConfigError(f"a target fraction removed must be in (0, 1), got {self.target}")

    @property
    def tolerance(self) -> float:
        return DEFAULT_TOLERANCE[self.metric] if self.options.tolerance is None else self.options.tolerance

    @property
    def allocated(self) -> bool:
        """Met by allocating keep counts from error ladders (by default MAC and speed-up budgets)."""
        return self.options.allocation == "ladder" or (self.options.allocation is None and self.metric != "params")

    def describe(self) -> str:
        speedup = f"a {1 / (1 - self.target):.3g}x speed-up: " if self.metric == "latency" else ""
        return f"{speedup}{self.target:.1%} of the {METRICS[self.metric]} removed (±{100 * self.tolerance:g} pt)"


def budget_from(target_sparsity: float | None, target_macs: float | None,
                options: SearchOptions | None = None, target_speedup: float | None = None) -> Budget | None:
    """The budget asked for with prune()'s keywords (or the CLI's options); None when none is given."""
    given = {metric: value for metric, value in
             (("params", target_sparsity), ("macs", target_macs), ("latency", target_speedup)) if value is not None}
    if len(given) > 1:
        raise ConfigError("give one budget: a parameter budget (--target-sparsity), a MAC budget (--target-macs) "
                          "or a speed-up (--target-speedup), not several")
    if not given:
        if options is not None:
            raise ConfigError("search options (--tolerance, --max-trials, --search-samples) need a budget: "
                              "--target-sparsity, --target-macs or --target-speedup")
        return None
    (metric, target), = given.items()
    if metric == "latency":
        if not target > 1:
            raise ConfigError(f"a target speed-up must be above 1 (2 = twice as fast), got {target}")
        target = 1 - 1 / target
    return Budget(metric, float(target), options or SearchOptions())


def round_eps(x: float) -> float:
    """ε_L2 at log value ``x``, rounded: printed in full, it reproduces the trial with --eps-l2."""
    return float(f"{math.exp(x):.4g}")


# The fraction of the original's batch-1 latency a pruned model removes, as measured.
LatencyRemoved = Callable[[onnx.ModelProto], float]
PruneOnce = Callable[[dict[str, np.ndarray], PruneConfig, Callable[[str], None]], tuple[onnx.ModelProto, Report]]
Point = tuple[float, float]  # (log ε_L2, fraction removed)


@dataclass
class History:
    """Every trial so far, keyed by (ε_L2, samples), with the pruned model of those on all samples:
    a sweep shares one across its budgets, so that each search starts from the points the earlier
    ones measured, and a trial that already meets a later budget is not run again."""

    trials: dict[tuple[float, int], tuple[Trial, onnx.ModelProto | None, Report | None]] = field(default_factory=dict)
    ladders: Ladders | None = None  # the error ladders an allocation recorded last (MAC budgets)

    def points(self, samples: int, metric: str) -> list[Point]:
        return sorted((math.log(eps), _value(t, metric)) for (eps, n), (t, _, _) in self.trials.items()
                      if n == samples and _value(t, metric) is not None)


def find_budget(budget: Budget, config: PruneConfig, feeds: dict[str, np.ndarray], prune_once: PruneOnce,
                say: Callable[[str], None], history: History | None = None,
                latency: LatencyRemoved | None = None) -> tuple[onnx.ModelProto, Report]:
    """Prune at the ε_L2 that meets the budget: the model and its report, with ``report.search`` set.

    ``prune_once(feeds, config, progress)`` is one full prune. The search starts at
    ``config.eps_l2`` unless ``history`` already has points around the target.
    """
    history = history if history is not None else History()
    options, n = budget.options, len(next(iter(feeds.values())))
    if budget.allocated:
        model, report, history.ladders = find_allocation(budget.metric, budget.target, budget.tolerance,
                                                         options.max_trials, config, feeds, prune_once, say,
                                                         history.ladders, latency)
        return model, report
    if budget.metric == "latency" and latency is None:
        raise ConfigError("a latency budget needs a way to time the pruned models (latency)")
    run = _Runner(budget, config, prune_once, say, history, latency)
    start, slope = math.log(config.eps_l2 if config.eps_l2 > 0 else 1.0), None
    k = options.search_samples
    if k is not None and k < n and not _brackets(history.points(n, budget.metric), budget.target):
        rows = subset_indices(n, k, config.seed)
        subset = {name: array[rows] for name, array in feeds.items()}
        found = _root(run, subset, start, options.subset_trials, slope=None, keep_model=False)
        if found.stuck:  # out of reach on the subset: try the full set once from its closest point
            say(f"budget: on the subset of {k} samples {found.why}")
        start, slope = found.estimate, found.slope
        say(f"budget: the subset of {k} samples points at eps_l2 {math.exp(start):.4g}; finishing on all {n}")
    found = _root(run, feeds, start, options.max_trials, slope=slope, keep_model=True)
    if found.model is None:
        raise BudgetError(found.failure(budget, n), found.closest)
    # On success ``closest`` is the trial whose model is returned.
    search = SearchReport(metric=budget.metric, target=budget.target, tolerance=budget.tolerance,
                          eps_l2=found.closest.eps_l2, samples=n, trials=run.trials)
    return found.model, replace(found.report, search=search)


@dataclass
class _Found:
    estimate: float  # log ε_L2 where the target is expected
    slope: float | None  # d fraction / d log ε_L2 near the target, if measured
    closest: Trial | None = None
    model: onnx.ModelProto | None = None
    report: Report | None = None
    why: str = ""
    stuck: bool = False  # out of reach, or the fraction jumps across the target

    def failure(self, budget: Budget, samples: int) -> str:
        c = self.closest
        closest = "" if c is None else (f"; the closest was {_value(c, budget.metric):.1%} at --eps-l2 {c.eps_l2:.4g}")
        return f"budget {budget.describe()} not reached on {samples} samples: {self.why}{closest}"


class _Runner:
    """Runs trials, remembers them (in the history and for the report) and announces them."""

    def __init__(self, budget: Budget, config: PruneConfig, prune_once: PruneOnce, say: Callable[[str], None],
                 history: History, latency: LatencyRemoved | None = None) -> None:
        self.budget, self.config, self.prune_once, self.say, self.history = budget, config, prune_once, say, history
        self.latency = latency if budget.metric == "latency" else None
        self.trials: list[Trial] = []

    @staticmethod
    def eps(x: float) -> float:
        return round_eps(x)

    def known(self, feeds: dict[str, np.ndarray], x: float) -> bool:
        return (self.eps(x), len(next(iter(feeds.values())))) in self.history.trials

    def __call__(self, feeds: dict[str, np.ndarray], x: float,
                 keep_model: bool) -> tuple[Trial, onnx.ModelProto | None, Report | None]:
        eps, samples = self.eps(x), len(next(iter(feeds.values())))
        number = len(self.trials) + 1
        self.say(f"budget trial {number}: eps_l2 {eps:g} on {samples} samples")
        started = time.perf_counter()
        model, report = self.prune_once(feeds, replace(self.config, eps_l2=eps), lambda line: self.say("  " + line))
        latency = None if self.latency is None else round(self.latency(model), 4)
        trial = Trial(eps_l2=eps, samples=samples, params_removed=round(report.params_removed, 6),
                      macs_removed=round(report.macs_removed, 6), seconds=round(time.perf_counter() - started, 3),
                      latency_removed=latency)
        self.history.trials[eps, samples] = (trial, model, report) if keep_model else (trial, None, None)
        self.trials.append(trial)
        measured = "" if latency is None else f"{1 / (1 - latency):.2f}x measured speed-up, "
        self.say(f"budget trial {number}: {measured}{trial.params_removed:.1%} of the parameters, {trial.macs_removed:.1%} of "
                 f"the MACs removed ({trial.seconds:.0f}s)")
        return self.history.trials[eps, samples]


def _root(run: _Runner, feeds: dict[str, np.ndarray], x: float, max_trials: int, *, slope: float | None,
          keep_model: bool) -> _Found:
    """Trials at log ε_L2 values until one lands within the tolerance of the target.

    Safeguarded false position: between the highest trial below the target and the lowest above
    it, the next point interpolates linearly but keeps out of the outer fifths of the bracket (so
    a curved or stepped fraction still shrinks it geometrically); before a bracket exists, a
    secant step (or one along the given slope), at most a factor 10 in ε_L2.
    """
    metric, target, tolerance = run.budget.metric, run.budget.target, run.budget.tolerance
    samples = len(next(iter(feeds.values())))
    points = run.history.points(samples, metric)
    found = _Found(estimate=x, slope=slope)
    for trial, _, _ in run.history.trials.values():
        if trial.samples == samples:
            found.closest = _closer(found.closest, trial, metric, target)
    done = [(t, m, r) for (_, n), (t, m, r) in run.history.trials.items()
            if n == samples and m is not None and abs(_value(t, metric) - target) <= tolerance]
    if done:  # a sweep measured one already
        found.closest, found.model, found.report = min(done, key=lambda d: abs(_value(d[0], metric) - target))
        found.estimate = math.log(found.closest.eps_l2)
        return found
    trials = 0
    while True:
        if points:
            found.why = _why_stuck(points, target)
            if found.why:
                found.stuck = True
                break
            x = _next_x(points, target, slope)
        if trials >= max_trials:
            found.why = f"{max_trials} trials were not enough (raise --max-trials or --tolerance)"
            break
        if run.known(feeds, x):  # rounded onto a measured ε_L2: the points cannot get closer
            found.why, found.stuck = _JUMPS, True
            break
        trial, model, report = run(feeds, x, keep_model)
        trials += 1
        points = sorted(set(points) | {(math.log(trial.eps_l2), _value(trial, metric))})
        found.closest = _closer(found.closest, trial, metric, target)
        if abs(_value(trial, metric) - target) <= tolerance:
            found.model, found.report, found.estimate = model, report, math.log(trial.eps_l2)
            found.slope = _local_slope(points, target) or slope
            return found
    found.estimate = _interpolate(points, target) if points else x
    found.slope = _local_slope(points, target) or slope
    return found


def _next_x(points: list[Point], target: float, slope: float | None) -> float:
    """The next log ε_L2 to try, from the points measured so far (sorted by ε_L2)."""
    bracket = _bracket(points, target)
    if bracket is not None:
        (x0, y0), (x1, y1) = bracket
        width = x1 - x0
        guess = x0 + width * (target - y0) / (y1 - y0)
        return min(max(guess, x0 + width / 5), x1 - width / 5)
    # Not bracketed yet: step on from the outermost point along the measured slope; where the
    # fraction did not move over the last step (a plateau), twice as far as that step.
    up = points[-1][1] < target
    edge, inner = (points[-1], points[-2] if len(points) > 1 else None) if up else (points[0], points[1] if len(points) > 1 else None)
    step = (target - edge[1]) / (_local_slope(points, target) or slope or SLOPE_GUESS)
    if inner is not None and abs(edge[1] - inner[1]) < 1e-4:
        step = math.copysign(max(abs(step), 2 * abs(edge[0] - inner[0])), step)
    x = edge[0] + max(-MAX_STEP, min(MAX_STEP, step))
    return min(max(x, math.log(EPS_RANGE[0])), math.log(EPS_RANGE[1]))


def _bracket(points: list[Point], target: float) -> tuple[Point, Point] | None:
    """The highest point below the target and the lowest above it beyond that one, if both exist."""
    below = [p for p in points if p[1] < target]
    if not below:
        return None
    lo = max(below, key=lambda p: p[0])
    hi = min((p for p in points if p[1] > target and p[0] > lo[0]), key=lambda p: p[0], default=None)
    return None if hi is None else (lo, hi)


def _brackets(points: list[Point], target: float) -> bool:
    return _bracket(points, target) is not None


def _local_slope(points: list[Point], target: float) -> float | None:
    """The slope through the two points nearest the target, if the fraction rises between them."""
    if len(points) < 2:
        return None
    (x0, y0), (x1, y1) = sorted(sorted(points, key=lambda p: abs(p[1] - target))[:2])
    slope = (y1 - y0) / (x1 - x0) if x1 > x0 else 0.0
    return slope if slope > 1e-3 else None


def _interpolate(points: list[Point], target: float) -> float:
    """log ε_L2 where the measured fraction crosses the target (the nearest point when it does not)."""
    bracket = _bracket(points, target)
    if bracket is None:
        return min(points, key=lambda p: abs(p[1] - target))[0]
    (x0, y0), (x1, y1) = bracket
    return x0 + (x1 - x0) * (target - y0) / (y1 - y0)


def _why_stuck(points: list[Point], target: float) -> str:
    """Why no further trial can help ('' while one can): the target is out of reach, or the
    fraction jumps across it between two ε_L2 that differ by less than 1 %."""
    lo, hi = math.log(EPS_RANGE[0]), math.log(EPS_RANGE[1])
    if all(y < target for _, y in points):
        if points[-1][0] >= hi - 1e-9 or _flat_span(points[::-1]) >= SATURATED:
            return f"at most {max(y for _, y in points):.1%} is removed, however large eps_l2 gets"
    elif all(y > target for _, y in points):
        if points[0][0] <= lo + 1e-9 or _flat_span(points) >= SATURATED:
            return f"at least {min(y for _, y in points):.1%} is removed, however small eps_l2 gets"
    else:
        bracket = _bracket(points, target)
        if bracket is not None and bracket[1][0] - bracket[0][0] < 0.01:
            return _JUMPS
    return ""


def _flat_span(points: list[Point]) -> float:
    """How far in log ε_L2 the fraction stays what it is at the first point."""
    (x0, y0), span = points[0], 0.0
    for x, y in points[1:]:
        if abs(y - y0) > 1e-3:
            break
        span = abs(x - x0)
    return span


_JUMPS = "the fraction removed jumps across the target between two nearly equal eps_l2 (too few channels to land closer)"


def _closer(best: Trial | None, trial: Trial, metric: str, target: float) -> Trial:
    if best is None or abs(_value(trial, metric) - target) < abs(_value(best, metric) - target):
        return trial
    return best


def _value(trial: Trial, metric: str) -> float:
    return {"params": trial.params_removed, "macs": trial.macs_removed, "latency": trial.latency_removed}[metric]
