"""A unit's error ladder: how much of its readers' targets the refit loses at every keep count.

With the unit's channels ranked (GES's path order, :func:`onnxprune.solve.ges.path_scores`), the
kept sets for k = 0, 1, ..., n are nested prefixes, and so are their features. The Cholesky factor
of the Gram matrix with its features in that order holds every prefix's factor as its leading
block, so one factorisation per reader gives the least-squares residual of all n + 1 keep counts:
with G = L L^T and Z = L^-1 C^T, the first f features explain sum_{i<f} |Z_i|^2 of the targets.

The error is relative on the normalised problems (1 = the targets' whole variance lost, as with
no input at all), each reader counting once, as in GES's objective: units compare on one scale,
which is what an allocation across units needs.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from onnxprune.solve.problem import NormalisedProblem


def error_ladder(problems: list[NormalisedProblem], ranking: np.ndarray, n_prunable: int, *,
                 ridge: float = 1e-3) -> np.ndarray:
    """err[k], k = 0..n_prunable: the summed relative residual of the regressions when the
    unit's frozen channels (local indices from ``n_prunable`` on) and the first k prunable
    channels of ``ranking`` are kept. ``ridge`` is the refit's relative ridge (solve/refit.py)."""
    prunable = [int(c) for c in ranking if c < n_prunable]
    sequence = np.array(list(range(n_prunable, problems[0].n_channels)) + prunable, dtype=np.int64)
    n_frozen = problems[0].n_channels - n_prunable
    total = np.zeros(n_prunable + 1)
    for problem in problems:
        total += _reader_ladder(problem, sequence, ridge)[n_frozen:]
    return total


def _reader_ladder(problem: NormalisedProblem, sequence: np.ndarray, ridge: float) -> np.ndarray:
    """Relative residual after each prefix of ``sequence`` (entry 0: no channel kept)."""
    features_of = [np.flatnonzero(problem.channel_of_feature == c) for c in sequence]
    perm = np.concatenate(features_of) if features_of else np.zeros(0, dtype=np.int64)
    variance = float(np.sum(problem.target_var))
    ladder = np.ones(sequence.size + 1)
    if perm.size == 0 or variance <= 0:
        return ladder if variance > 0 else np.zeros(sequence.size + 1)
    gram = problem.gram[np.ix_(perm, perm)].astype(np.float64)
    scale = float(np.mean(np.diag(gram))) or 1.0
    gram[np.diag_indices_from(gram)] += ridge * scale
    factor = linalg.cholesky(gram, lower=True, check_finite=False)
    z = linalg.solve_triangular(factor, problem.cross[:, perm].T.astype(np.float64), lower=True, check_finite=False)
    explained = np.concatenate([[0.0], np.cumsum(np.einsum("ij,ij->i", z, z))])
    ends = np.cumsum([f.size for f in features_of])
    ladder[1:] = 1.0 - explained[ends] / variance
    return np.maximum(ladder, 0.0)
