"""The safe default: the strongest ε_L2 whose pruned model is still, on held-out samples, the same model.

A user without labels cannot tell a 0.1 pt loss from a 5 pt one, and no single ε_L2 suits every
model (issue 16: the default of 0.8 cost 3–5 pt on some pretrained classifiers). So with no strength
given, trials at several ε_L2 are scored on the calibration samples held out from the statistics:
the estimated top-1 loss and the share of changed top-1 decisions (outputs with one axis of
scores; measure/fidelity.py), and the relative error (every other output). The sparsest trial
within all bounds is kept.

The measures grow with ε_L2, roughly as a power of it, with noise (a held-out sample flips or not),
so the search steps from the starting ε_L2 (×4 up, ×2 down) until the bound is bracketed, then
interpolates log(measure / bound) linearly in log ε_L2. Stepping up stops at ``max_trials``;
stepping down goes on (up to :data:`MAX_TRIALS_DOWN`) until a trial is within the bounds, because
the search must not hand back a model it measured as unfaithful when a weaker one would do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnxprune.config import (DEFAULT_MAX_DISAGREEMENT, DEFAULT_MAX_LOSS, DEFAULT_MAX_MAP_DISAGREEMENT,
                              DEFAULT_MAX_RELATIVE_ERROR, PruneConfig)
from onnxprune.errors import ConfigError
from onnxprune.report import Fidelity, GuardReport, Report, Trial
from onnxprune.search.budget import EPS_RANGE, PruneOnce, round_eps

# ε_L2 changes by these factors while the bound is not bracketed: boldly up (a stronger prune is
# cheaper), gently down (a weaker one costs more: VGG-16's GES solves took 3x longer at 0.2 than at 0.8).
STEP_UP = math.log(4.0)
STEP_DOWN = math.log(2.0)
MAX_TRIALS_DOWN = 8  # trials at most while no trial is within the bounds
INTERIOR = 0.2  # an interpolated trial keeps this share of the bracket's width from either end
# A few held-out samples that all agree say little: 16 of 16 unchanged decisions still allow a true
# share of 13 % changed. So the held-out samples must also make it CONFIDENCE sure that the true
# share is under RESOLUTION times --max-disagreement (one-sided Clopper-Pearson limit). At 1,024
# samples this never binds before the bound itself does (20 changed give 2.6 %); at 128 it allows
# one changed decision, not two; below 76 held-out samples no trial can meet it (at the 2 %
# default), and the search does not try: it prunes once more at a cautious CAUTIOUS_FACTOR times
# the start and says the result went unchecked. (64 agreeing samples let LeNet-5 lose 1.4 pt.)
CONFIDENCE = 0.9
RESOLUTION = 1.5
CAUTIOUS_FACTOR = 0.25

FidelityOf = Callable[[onnx.ModelProto], Fidelity]


@dataclass(frozen=True)
class FidelityBound:
    """How faithful the default-strength model must stay on the held-out calibration samples.

    max_loss : largest estimated top-1 loss (a fraction; see measure/fidelity.py), for outputs with
        one axis of scores. It binds on confident models, where nearly every changed decision is a loss.
    max_disagreement : largest share of changed top-1 decisions, for the same outputs. It binds where
        the estimate is too low: a model less confident than it is accurate (docs/fidelity.md).
    max_relative_error : largest ||pruned - original|| / ||original||, for every other output.
    max_map_disagreement : for those of them that hold score maps (a detector's class scores, a text
        map), the largest 1 - overlap of their thresholded positives (measure/fidelity.MapAgreement).
    max_trials : prunes at most while a faithful trial is known (more only to find the first one).
    """

    max_loss: float = DEFAULT_MAX_LOSS
    max_disagreement: float = DEFAULT_MAX_DISAGREEMENT
    max_relative_error: float = DEFAULT_MAX_RELATIVE_ERROR
    max_map_disagreement: float = DEFAULT_MAX_MAP_DISAGREEMENT
    max_trials: int = 3

    def __post_init__(self) -> None:
        for name, value in (("max_loss", self.max_loss), ("max_disagreement", self.max_disagreement),
                            ("max_map_disagreement", self.max_map_disagreement)):
            if not 0 < value < 1:
                raise ConfigError(f"{name} must be a fraction in (0, 1), got {value}")
        if not self.max_relative_error > 0:
            raise ConfigError(f"max_relative_error must be > 0, got {self.max_relative_error}")
        if self.max_trials < 1:
            raise ConfigError(f"max_trials must be >= 1, got {self.max_trials}")

    def excess(self, fidelity: Fidelity) -> float:
        """The worst output's measure over its bound: at most 1 is within the bounds."""
        def of(o) -> float:
            if o.loss_estimate is not None:
                changed = round((1 - o.top1_agreement) * fidelity.samples)
                resolution = disagreement_limit(changed, fidelity.samples) / (RESOLUTION * self.max_disagreement)
                return max(o.loss_estimate / self.max_loss, (1 - o.top1_agreement) / self.max_disagreement,
                           resolution)
            if o.map_agreement is not None:
                return max(o.relative_error / self.max_relative_error,
                           (1 - o.map_agreement) / self.max_map_disagreement)
            return o.relative_error / self.max_relative_error

        return max(of(o) for o in fidelity.outputs)

    def resolvable(self, samples: int) -> bool:
        """Whether that many held-out samples can show a classifier within the disagreement bound."""
        return samples >= self.samples_needed()

    def samples_needed(self) -> int:
        """The fewest held-out samples whose limit with none changed, 1 - (1 - CONFIDENCE)^(1/n),
        is within RESOLUTION times the bound."""
        return math.ceil(math.log(1 - CONFIDENCE) / math.log(1 - RESOLUTION * self.max_disagreement))

    def describe(self, fidelity: Fidelity) -> str:
        """The measures that the bounds apply to on this model, with their bounds."""
        parts = []
        if fidelity.loss_estimate is not None:
            parts.append(f"estimated top-1 loss {100 * fidelity.loss_estimate:.2f} pt (at most "
                         f"{100 * self.max_loss:g}), top-1 disagreement {fidelity.disagreement:.1%} (at most "
                         f"{self.max_disagreement:.1%})")
        others = [o.relative_error for o in fidelity.outputs if o.loss_estimate is None]
        if others:
            parts.append(f"relative error {max(others):.3f} (at most {self.max_relative_error:g})")
        if fidelity.map_agreement is not None:
            parts.append(f"score-map agreement {fidelity.map_agreement:.1%} (at least "
                         f"{1 - self.max_map_disagreement:.1%})")
        return ", ".join(parts)


@dataclass
class _Attempt:
    x: float  # log ε_L2
    trial: Trial
    excess: float
    model: onnx.ModelProto
    report: Report

    @property
    def within(self) -> bool:
        return self.excess <= 1


def find_guarded(bound: FidelityBound, config: PruneConfig, feeds: dict[str, np.ndarray], prune_once: PruneOnce,
                 fidelity_of: FidelityOf, say: Callable[[str], None]) -> tuple[onnx.ModelProto, Report]:
    """The sparsest trial within ``bound`` (or, when none is, the most faithful), its report with
    ``fidelity`` and ``guard`` set. ``prune_once(feeds, config, progress)`` is one full prune on the
    statistics' samples ``feeds``; ``fidelity_of(model)`` measures one on the held-out samples."""
    attempts: list[_Attempt] = []

    def run(x: float) -> _Attempt:
        eps = round_eps(x)
        number = len(attempts) + 1
        if number > 1:  # the first trial is a plain prune at the start's ε_L2: its progress as usual
            say(f"strength trial {number}: eps_l2 {eps:g}")
        started = time.perf_counter()
        model, report = prune_once(feeds, replace(config, eps_l2=eps),
                                   (lambda line: say("  " + line)) if number > 1 else say)
        fidelity = fidelity_of(model)
        trial = Trial(eps_l2=eps, samples=len(next(iter(feeds.values()))),
                      params_removed=round(report.params_removed, 6), macs_removed=round(report.macs_removed, 6),
                      seconds=round(time.perf_counter() - started, 3), disagreement=fidelity.disagreement,
                      relative_error=round(fidelity.relative_error, 6), loss_estimate=fidelity.loss_estimate,
                      map_agreement=fidelity.map_agreement)
        attempt = _Attempt(math.log(eps), trial, float(bound.excess(fidelity)), model, replace(report, fidelity=fidelity))
        attempts.append(attempt)
        say(f"strength trial {number} (eps_l2 {eps:g}): {trial.params_removed:.1%} of the parameters removed, held-out "
            f"{bound.describe(fidelity)}: {'within' if attempt.within else 'beyond'} the bound ({trial.seconds:.0f}s)")
        return attempt

    start = math.log(config.eps_l2 if config.eps_l2 > 0 else 1.0)
    first = run(start)
    unresolvable = first.report.fidelity.disagreement is not None and not bound.resolvable(first.report.fidelity.samples)
    if unresolvable:  # no trial could be shown to be within the bound: one cautious prune, not a search
        say(f"only {first.report.fidelity.samples} held-out samples: too few to bound the top-1 disagreement "
            f"(at least {bound.samples_needed()} are needed); pruning at a cautious strength instead")
        run(start + math.log(CAUTIOUS_FACTOR))
    else:
        x = start
        while (x := _next_x(attempts, bound.max_trials, x)) is not None:
            run(x)
    within = [a for a in attempts if a.within]
    # The sparsest faithful trial; ties (a saturated model) go to the weaker ε_L2. Without one, the
    # most faithful (ties: the weakest), and the cautious trial when nothing could be checked.
    best = (max(within, key=lambda a: (a.trial.params_removed, -a.x)) if within
            else attempts[-1] if unresolvable else min(attempts, key=lambda a: (a.excess, a.x)))
    guard = GuardReport(max_loss=bound.max_loss, max_disagreement=bound.max_disagreement,
                        max_relative_error=bound.max_relative_error, eps_l2=best.trial.eps_l2, met=best.within,
                        trials=[a.trial for a in attempts], max_map_disagreement=bound.max_map_disagreement,
                        samples_needed=bound.samples_needed() if unresolvable else None)
    return best.model, replace(best.report, guard=guard)


def disagreement_limit(changed: int, samples: int) -> float:
    """One-sided CONFIDENCE upper limit of the true share of changed decisions (Clopper-Pearson)."""
    from scipy.stats import beta
    return 1.0 if changed >= samples else float(beta.ppf(CONFIDENCE, changed + 1, samples - changed))


def _next_x(attempts: list[_Attempt], max_trials: int, start: float) -> float | None:
    """The next log ε_L2 to try, or None when the search is done."""
    if not attempts:
        return start
    within = [a for a in attempts if a.within]
    lo_limit, hi_limit = math.log(EPS_RANGE[0]), math.log(EPS_RANGE[1])
    if not within:  # nothing faithful yet: weaker, whatever max_trials says
        x = min(a.x for a in attempts) - STEP_DOWN
        return x if len(attempts) < MAX_TRIALS_DOWN and x >= lo_limit else None
    if len(attempts) >= max_trials:
        return None
    lo = max(within, key=lambda a: a.x)
    beyond = [a for a in attempts if not a.within and a.x > lo.x]
    if not beyond:  # everything tried was faithful: stronger, unless pruning has saturated
        weaker = [a for a in attempts if a.x < lo.x]
        if weaker and lo.trial.params_removed <= max(a.trial.params_removed for a in weaker) + 1e-3:
            return None
        return lo.x + STEP_UP if lo.x + STEP_UP <= hi_limit else None
    hi = min(beyond, key=lambda a: a.x)
    y0, y1 = (math.log(max(a.excess, 1e-3)) for a in (lo, hi))
    width = hi.x - lo.x
    guess = lo.x + width * (0 - y0) / (y1 - y0) if y1 > y0 else lo.x + width / 2
    x = min(max(guess, lo.x + INTERIOR * width), hi.x - INTERIOR * width)
    return None if width < 0.02 else x
