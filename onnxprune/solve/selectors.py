"""Alternative channel selectors that share GES's statistics and onnxprune's reconstruction.

They exist so that the value of the entropic selection can be measured apart from the value of
the reconstruction (benchmarks, issue 5): each one only decides *which* channels of a unit stay;
the kept channels are then refit by the same least-squares reconstruction as GES's.

- L1-norm filter ranking (Li et al. 2017, "Pruning Filters for Efficient ConvNets"): a channel's
  score is the L1 norm of the filters that produce it, each producer's norms divided by their mean
  so that producers of a tied channel weigh alike; no data.
- LASSO channel selection (He et al. 2017, "Channel Pruning for Accelerating Very Deep Neural
  Networks"): with the original weights W held fixed, find channel coefficients beta minimising
  ||Y - sum_c beta_c W_c X_c||^2 + lambda ||beta||_1, and raise lambda until the wanted number of
  channels is non-zero. On normalised statistics the quadratic is exactly GES's w-step with Lambda
  = W, so the same summed (A, b) terms serve a unit with several readers.
"""

from __future__ import annotations

import numpy as np

from onnxprune.solve.ges import live_mask, w_step_terms
from onnxprune.solve.problem import NormalisedProblem



def n_to_keep(n_channels: int, keep_fraction: float) -> int:
    """Channels a unit keeps at a uniform keep fraction (at least one)."""
    return max(1, min(n_channels, int(round(keep_fraction * n_channels))))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The k highest scores (ties to the lower index, so the choice is deterministic)."""
    keep = np.zeros(scores.size, dtype=bool)
    keep[np.argsort(-scores, kind="stable")[:k]] = True
    return keep


def l1_scores(producer_rows: list[tuple[np.ndarray, np.ndarray]], n_channels: int) -> np.ndarray:
    """Li et al.'s filter norms per channel.

    ``producer_rows`` holds, per producing layer, (its weight as (out_channels, -1), the unit-local
    channel of each output row, -1 for rows outside the unit).
    """
    scores = np.zeros(n_channels)
    for weight, channel_of_row in producer_rows:
        norms = np.abs(weight).sum(axis=1)
        inside = channel_of_row >= 0
        if not inside.any():
            continue
        mean = float(norms[inside].mean()) or 1.0
        np.add.at(scores, channel_of_row[inside], norms[inside] / mean)
    return scores


def normalised_weight(problem: NormalisedProblem, weight: np.ndarray) -> np.ndarray:
    """The original weight (m, d) expressed on the normalised features and targets."""
    feature_scale = problem.feature_scale
    inverse = np.divide(1.0, feature_scale, out=np.zeros_like(feature_scale), where=feature_scale > 0)
    return (problem.target_scale[:, None] * weight * inverse[None, :]).astype(problem.gram.dtype)


def lasso_scores(problems: list[NormalisedProblem], weights: list[np.ndarray], n_keep: int,
                 *, max_steps: int = 500, tol: float = 1e-7) -> np.ndarray:
    """He et al.'s selection as a score whose top ``n_keep`` are the channels to keep.

    ``weights[k]`` is reader k's original weight (m_k, d_k) on the raw features of problems[k].
    beta = 1 reproduces every reader exactly; the L1 penalty zeroes the channels whose
    contribution the others can make up for. lambda is bisected until at most ``n_keep``
    coefficients are non-zero; those rank first (by |beta|), then the rest by their coefficient at
    the largest lambda that still kept more, so exactly ``n_keep`` channels can always be chosen.
    """
    n = problems[0].n_channels
    live = live_mask(problems)
    feats = [np.flatnonzero(live[p.channel_of_feature]) for p in problems]
    lams = [normalised_weight(p, w)[:, f] for p, w, f in zip(problems, weights, feats)]
    a_mat, b_vec, _ = w_step_terms(problems, lams, feats, live)
    idx = np.flatnonzero(live)
    scores = np.zeros(n)
    if idx.size <= n_keep:
        scores[idx] = 1.0
        return scores
    lipschitz = 2.0 * max(float(np.linalg.eigvalsh(a_mat)[-1]), 1e-30)

    def solve(penalty: float, start: np.ndarray) -> np.ndarray:
        # min x.A.x - 2 b.x + penalty |x|_1 by FISTA (proximal gradient with momentum).
        x, y, t = start.copy(), start.copy(), 1.0
        for _ in range(max_steps):
            z = y - (2.0 * (a_mat @ y - b_vec)) / lipschitz
            new = np.sign(z) * np.maximum(np.abs(z) - penalty / lipschitz, 0.0)
            t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
            y = new + ((t - 1.0) / t_next) * (new - x)
            moved = float(np.max(np.abs(new - x)))
            x, t = new, t_next
            if moved < tol:
                break
        return x

    low, high = 0.0, 2.0 * float(np.max(np.abs(b_vec)))  # at `high` every coefficient is zero
    kept, more = np.zeros(idx.size), np.ones(idx.size)
    current = np.ones(idx.size)
    for _ in range(30):
        mid = (low + high) / 2
        current = solve(mid, current)
        if np.count_nonzero(current) > n_keep:
            low, more = mid, current.copy()
        else:
            high, kept = mid, current.copy()
            if np.count_nonzero(current) == n_keep:
                break
    ranked = np.where(kept != 0, 1.0 + np.abs(kept) / max(float(np.abs(kept).max()), 1e-300),
                      np.abs(more) / max(float(np.abs(more).max()), 1e-300))
    scores[idx] = ranked
    return scores
