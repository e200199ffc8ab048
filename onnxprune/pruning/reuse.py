"""What every trial of a search computes alike, kept from one trial to the next.

A search (the fidelity guard, a budget) prunes the same model on the same calibration data
several times, changing only the strength. The look-ahead statistics (the original network's
regressions for the later readers of tied channels, one streamed forward pass) do not depend on
the strength, so the first trial's serve the others: on ResNet-18 that pass is about a sixth of a
prune. The walk draws its pixels from its own random stream, so a trial that reuses the
look-ahead gives exactly the model a fresh prune at the same strength gives. The price is
memory: the statistics stay for the whole search instead of being freed as the walk passes
their layers (they are all held at the start of every walk either way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from onnxprune.config import PruneConfig
from onnxprune.solve.problem import LayerProblem

Lookahead = dict[str, list[LayerProblem]]


class TrialMemo:
    """Look-ahead statistics keyed by the calibration arrays and every setting but the strength."""

    def __init__(self) -> None:
        # (feeds, key, statistics); the feeds are held so that their ids stay theirs.
        self._entries: list[tuple[dict[str, np.ndarray], str, Lookahead]] = []

    def lookahead(self, feeds: dict[str, np.ndarray], config: PruneConfig,
                  compute: Callable[[], Lookahead]) -> Lookahead:
        """The look-ahead statistics for these feeds and settings, computed on first use; the
        caller gets its own dict (the walk pops from it)."""
        key = _key(config)
        for known_feeds, known_key, statistics in self._entries:
            if known_key == key and _same_arrays(known_feeds, feeds):
                return dict(statistics)
        statistics = compute()
        self._entries.append((feeds, key, statistics))
        return dict(statistics)


def _key(config: PruneConfig) -> str:
    # Everything that shapes the units and samples their pixels is in the config; the strength
    # (eps_l2) only prices the solve.
    return repr(replace(config, eps_l2=0.0))


def _same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[name] is b[name] for name in a)
