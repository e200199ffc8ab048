r"""Generalized Entropic Sparsification (GES) of a layer's input channels.

For one or more regressions that share the same input channels (normalised, see ``problem.py``)
find a probability vector w over the n input channels that minimises

.. math::

    L(w, \Lambda) = \sum_k \Big[\tfrac{1}{m_k}\,\mathrm{mean}_t \lVert y^k_t - \Lambda_k D_k(w) x^k_t\rVert^2
                   + \tfrac{\varepsilon_{L2}}{m_k n^2} \lVert\Lambda_k\rVert_F^2\Big]
                   + \varepsilon_E \sum_c w_c \log w_c ,

with D_k(w) = diag(w of each feature's channel). Each regression k keeps its own Lambda_k; the
channel weights w are shared, so tied channels are kept or removed together.

The L2 term is scaled by 1/n^2 (the method doc writes 1/d): at uniform w it is then a ridge of
strength eps_l2 on unit-variance features whatever the layer's width, so one eps_l2 transfers
from a 20-channel layer to a 512-channel one.

Alternating minimisation (SPARTAn): a closed-form ridge Lambda-step, then a convex w-step on the
simplex solved by an equality-constrained damped Newton method. Channels whose weight drops below
``active_floor / n`` leave the active set and the systems shrink with them.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from onnxprune.solve.problem import NormalisedProblem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GesOptions:
    eps_entropy: float = 1e-3
    eps_l2: float = 1e-2
    max_iter: int = 100
    tol: float = 1e-6
    active_floor: float = 1e-4


@dataclass(frozen=True)
class GesResult:
    """Channel weights and the per-regression Q = Lambda D(w) (normalised units, all features)."""

    weights: np.ndarray  # (n,), sums to 1 over live channels, 0 for dropped ones
    q: list[np.ndarray]  # per problem, (m_k, d_k)
    objective: list[float]  # L after every iteration
    n_iter: int
    converged: bool


def initial_weights(problems: list[NormalisedProblem]) -> np.ndarray:
    """SPARTAn's start: w_c proportional to the largest |corr(feature of c, target)|."""
    n = problems[0].n_channels
    score = np.zeros(n)
    for p in problems:
        sd_x = np.sqrt(np.maximum(np.diag(p.gram), 1e-300))
        sd_y = np.sqrt(np.maximum(p.target_var, 1e-300))
        corr = np.abs(p.cross) / sd_y[:, None] / sd_x[None, :]
        per_feature = corr.max(axis=0, initial=0.0)
        np.maximum.at(score, p.channel_of_feature, per_feature)
    live = live_mask(problems)
    # A small uniform floor so that no live channel starts at exactly zero.
    score = np.where(live, score + 1e-3 * (score[live].mean() if live.any() else 0.0) + 1e-12, 0.0)
    return score / score.sum()


def live_mask(problems: list[NormalisedProblem]) -> np.ndarray:
    """A channel is live if any regression sees it vary."""
    return np.logical_or.reduce([p.live_channels for p in problems])


def lambda_step(p: NormalisedProblem, w: np.ndarray, eps_l2: float, active: np.ndarray):
    """Closed-form ridge: Lambda = C D (D G D + eps_l2/n^2 I)^-1 on the active features.

    Returns (lam, q, feats) with lam and q of shape (m, |feats|). Solved in the Lambda form, which
    stays well conditioned when some w are tiny (the Q form would divide by w^2).
    """
    feats = np.flatnonzero(active[p.channel_of_feature])
    d_w = w[p.channel_of_feature[feats]]
    scaled = p.gram[np.ix_(feats, feats)] * d_w[:, None] * d_w[None, :]
    scaled[np.diag_indices_from(scaled)] += eps_l2 / p.n_channels**2
    rhs = (p.cross[:, feats] * d_w[None, :]).T
    lam = _spd_solve(scaled, rhs).T
    return lam, lam * d_w[None, :], feats


def _spd_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return linalg.cho_solve(linalg.cho_factor(a, check_finite=False), b, check_finite=False)
    except linalg.LinAlgError:
        # Only reachable with eps_l2 == 0 and a rank-deficient Gram matrix.
        return linalg.lstsq(a, b, check_finite=False)[0]


def _block_sum(matrix: np.ndarray, channels: np.ndarray, n: int) -> np.ndarray:
    """Sum a (d, d) feature matrix into an (n, n) channel matrix."""
    one_hot = np.zeros((channels.size, n))
    one_hot[np.arange(channels.size), channels] = 1.0
    return one_hot.T @ matrix @ one_hot


def objective(problems, w, lams, qs, feats_list, eps_entropy, eps_l2) -> float:
    total = 0.0
    for p, lam, q, feats in zip(problems, lams, qs, feats_list):
        g = p.gram[np.ix_(feats, feats)]
        mse = p.target_var.sum() - 2 * np.sum(q * p.cross[:, feats]) + np.sum((q @ g) * q)
        total += (mse + eps_l2 / p.n_channels**2 * np.sum(lam * lam)) / p.cross.shape[0]
    pos = w > 0
    return float(total + eps_entropy * np.sum(w[pos] * np.log(w[pos])))


def w_step_terms(problems, lams, feats_list, active):
    """The quadratic f(w) = const - 2 b.w + w.A.w over the active channels, summed over problems."""
    idx = np.flatnonzero(active)
    n = problems[0].n_channels
    a_mat = np.zeros((n, n))
    b_vec = np.zeros(n)
    const = 0.0
    for p, lam, feats in zip(problems, lams, feats_list):
        m = p.cross.shape[0]
        chans = p.channel_of_feature[feats]
        b_vec += np.bincount(chans, weights=np.sum(p.cross[:, feats] * lam, axis=0), minlength=n) / m
        a_mat += _block_sum(p.gram[np.ix_(feats, feats)] * (lam.T @ lam), chans, n) / m
        const += p.target_var.sum() / m
    return a_mat[np.ix_(idx, idx)], b_vec[idx], const


def simplex_newton(a_mat, b_vec, eps_entropy, w0, *, tol=1e-12, max_iter=200) -> np.ndarray:
    """Minimise f(w) = w.A.w - 2 b.w + eps * sum w log w subject to w >= 0, sum w = 1.

    A is PSD and eps > 0, so f is strictly convex and its minimiser is interior. Damped Newton on
    the affine hull with a fraction-to-boundary rule and Armijo backtracking.
    """
    if eps_entropy <= 0:
        raise ValueError("eps_entropy must be > 0 for the simplex Newton w-step")
    w = np.asarray(w0, dtype=float).copy()
    ones = np.ones_like(w)

    def f(x):
        return float(x @ a_mat @ x - 2 * b_vec @ x + eps_entropy * np.sum(x * np.log(x)))

    fw = f(w)
    for _ in range(max_iter):
        grad = 2 * (a_mat @ w - b_vec) + eps_entropy * (np.log(w) + 1)
        hess = 2 * a_mat + np.diag(eps_entropy / w)
        factor = linalg.cho_factor(hess, check_finite=False)
        h_grad = linalg.cho_solve(factor, grad, check_finite=False)
        h_one = linalg.cho_solve(factor, ones, check_finite=False)
        nu = -(ones @ h_grad) / (ones @ h_one)
        step = -(h_grad + nu * h_one)
        decrement = -(grad @ step)
        if decrement <= tol * max(1.0, abs(fw)):
            break
        neg = step < 0
        alpha = min(1.0, 0.99 * float(np.min(-w[neg] / step[neg]))) if neg.any() else 1.0
        while alpha > 1e-12:
            cand = w + alpha * step
            f_cand = f(cand)
            if f_cand <= fw - 0.25 * alpha * decrement:
                break
            alpha *= 0.5
        else:
            break
        w, fw = cand, f_cand
    return w / w.sum()


def solve_ges(problems: list[NormalisedProblem], options: GesOptions = GesOptions()) -> GesResult:
    """Alternate Lambda- and w-steps until the objective stops decreasing."""
    n = problems[0].n_channels
    w = initial_weights(problems)
    active = w > 0
    history: list[float] = []
    converged = False
    it = 0
    for it in range(1, options.max_iter + 1):
        steps = [lambda_step(p, w, options.eps_l2, active) for p in problems]
        lams, qs, feats_list = (list(x) for x in zip(*steps))
        history.append(objective(problems, w, lams, qs, feats_list, options.eps_entropy, options.eps_l2))
        if len(history) > 1 and history[-2] - history[-1] <= options.tol * abs(history[-2]):
            converged = True
            break
        a_mat, b_vec, _ = w_step_terms(problems, lams, feats_list, active)
        w_active = simplex_newton(a_mat, b_vec, options.eps_entropy, w[active])
        w = np.zeros(n)
        w[active] = w_active
        active = w * n >= options.active_floor
        w = np.where(active, w, 0.0)
        w /= w.sum()
    if not converged:
        warnings.warn(
            f"GES stopped after {options.max_iter} iterations with relative decrease "
            f"{(history[-2] - history[-1]) / abs(history[-2]):.2e} > tol {options.tol:.1e}",
            RuntimeWarning,
            stacklevel=2,
        )
    full_q = []
    for p, q, feats in zip(problems, qs, feats_list):
        dense = np.zeros_like(p.cross)
        dense[:, feats] = q
        full_q.append(dense)
    return GesResult(weights=w, q=full_q, objective=history, n_iter=it, converged=converged)


def select_channels(weights: np.ndarray, *, threshold: float | None = None, n_keep: int | None = None) -> np.ndarray:
    """Keep channel c when n*w_c >= threshold (relative to the uniform weight), or the top n_keep."""
    n = weights.size
    if n_keep is not None:
        order = np.argsort(-weights, kind="stable")
        keep = np.zeros(n, dtype=bool)
        keep[order[: max(1, min(n_keep, n))]] = True
        return keep
    keep = weights * n >= (threshold if threshold is not None else 0.0)
    if not keep.any():
        keep[np.argmax(weights)] = True
    return keep
