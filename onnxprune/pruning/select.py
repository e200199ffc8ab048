"""How a unit's channels are chosen: the selector registry.

GES is the method; L1 filter norms and LASSO exist so that the value of the entropic selection
can be measured apart from the value of the reconstruction (all three share the refit). A
selector scores the unit's channels; :func:`choose` turns the scores into a keep mask, by GES's
threshold or by a uniform keep fraction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxprune.config import SELECTORS as SELECTOR_NAMES
from onnxprune.config import PruneConfig
from onnxprune.graph.channels import Unit
from onnxprune.solve.ges import GesOptions, path_scores, select_channels, solve_ges
from onnxprune.solve.problem import LayerProblem, NormalisedProblem
from onnxprune.solve.selectors import l1_scores, lasso_scores, n_to_keep, top_k


@dataclass(frozen=True)
class Candidates:
    """What a selector may look at for one unit: its regressions (raw and normalised), its ε_L2,
    and, computed only when asked, the original weights that produce or read its channels."""

    unit: Unit
    problems: list[LayerProblem]
    normalised: list[NormalisedProblem]
    eps_l2: float
    producer_rows: Callable[[], list[tuple[np.ndarray, np.ndarray]]]
    reader_weights: Callable[[], list[np.ndarray]]
    keep_count: int | None = None  # an allocation's count of prunable channels to keep (else the config decides)

    @property
    def n_channels(self) -> int:
        return len(self.unit.classes) + len(self.unit.frozen_classes)


Selector = Callable[[Candidates, PruneConfig], tuple[np.ndarray, str]]


# With an allocated keep count, GES is solved again at EPS_STEP times the strength while its own
# threshold keeps more than COUNT_SLACK times the count (at most MAX_RESOLVES times): the top k of
# a solve that keeps about k rank better than the top k of a weaker one (ResNet-18 at 50 % of the
# MACs, one draw: 0.54 against 0.72 pt lost; docs/budgets.md).
EPS_STEP, COUNT_SLACK, MAX_RESOLVES = 4.0, 1.25, 3


def ges(candidates: Candidates, config: PruneConfig) -> tuple[np.ndarray, str]:
    eps, count = candidates.eps_l2, candidates.keep_count
    for attempt in range(MAX_RESOLVES + 1):
        options = GesOptions(eps_entropy=config.eps_entropy, eps_l2=eps, max_iter=config.max_iter, tol=config.tol)
        result = solve_ges(candidates.normalised, options)
        prunable = result.weights[:len(candidates.unit.classes)] * result.weights.size
        if (count is None or np.count_nonzero(prunable >= config.threshold) <= COUNT_SLACK * count
                or attempt == MAX_RESOLVES):
            break
        eps *= EPS_STEP
    stronger = f" at {eps / candidates.eps_l2:g}x eps_l2" if eps != candidates.eps_l2 else ""
    return path_scores(result), f"GES {result.n_iter} iterations{stronger}"


def l1(candidates: Candidates, config: PruneConfig) -> tuple[np.ndarray, str]:
    return l1_scores(candidates.producer_rows(), candidates.n_channels), "L1 filter norms"


def lasso(candidates: Candidates, config: PruneConfig) -> tuple[np.ndarray, str]:
    n_keep = n_to_keep(len(candidates.unit.classes), config.keep_fraction)
    return lasso_scores(candidates.normalised, candidates.reader_weights(), n_keep), "LASSO"


SELECTORS: dict[str, Selector] = {"ges": ges, "l1": l1, "lasso": lasso}
assert tuple(SELECTORS) == SELECTOR_NAMES, "config.SELECTORS names the entries of this registry"


def choose(candidates: Candidates, config: PruneConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """Score the unit's channels and choose the kept ones: (scores, keep mask, what was done)."""
    scores, how = SELECTORS[config.selector](candidates, config)
    unit = candidates.unit
    if candidates.keep_count is not None:
        count = max(1, min(len(unit.classes), candidates.keep_count))
    elif config.keep_fraction is not None:  # a uniform fraction of the prunable classes
        count = n_to_keep(len(unit.classes), config.keep_fraction)
    else:
        return scores, select_channels(scores, threshold=config.threshold), how
    # The top ``count`` prunable classes; frozen ones (last in the unit) stay anyway.
    prunable = top_k(scores[:len(unit.classes)], count)
    return scores, np.concatenate([prunable, np.ones(len(unit.frozen_classes), dtype=bool)]), how
