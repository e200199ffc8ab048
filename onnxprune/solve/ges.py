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
simplex solved by an equality-constrained damped Newton method, then (our addition) the exact
w-step with Q = Lambda D(w) held fixed, which converges in far fewer iterations. Each step
decreases L. Channels whose weight drops below ``active_floor / n`` leave the active set and the
systems shrink with them; so do channels whose weight, shrinking at its last rate until the
iteration cap, would end below ``screen_floor / n`` (:func:`fading`), which spares the full-size
factorisations of the iterations in which they would only fade. Iterations stop when no n*w_c
moves by more than ``tol``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from scipy import linalg, optimize

from onnxprune.solve.problem import NormalisedProblem

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class GesOptions:
    eps_entropy: float = 1e-3
    eps_l2: float = 0.8  # the defaults of eps_l2, max_iter and tol are PruneConfig's (a test holds them equal)
    max_iter: int = 20
    tol: float = 1e-3  # on max_c |change of n * w_c| between iterations
    active_floor: float = 1e-2  # n*w below this leaves the active set; keep it well under the threshold
    q_step: bool = True
    screen_floor: float = 0.05  # n*w extrapolated to the last iteration; below it a channel leaves now, see fading()
    keep_energy: float = 0.9999  # of the explained target variance, see compress_targets
    track_objective: bool = False


@dataclass(frozen=True)
class GesResult:
    """Channel weights after the alternating minimisation (the weights are refit separately)."""

    weights: np.ndarray  # (n,), sums to 1 over live channels, 0 for dropped ones
    objective: list[float]  # L after every Lambda-step, when GesOptions.track_objective
    n_iter: int
    converged: bool
    # Every channel, most important first: those still active at the end by weight, then the
    # others by how long they stayed active and their weight when they left (a path's order).
    order: np.ndarray


def initial_weights(problems: list[NormalisedProblem]) -> np.ndarray:
    """SPARTAn's start: w_c proportional to the largest |corr(feature of c, target)|."""
    n = problems[0].n_channels
    score = np.zeros(n)
    for p in problems:
        # float64 throughout: in float32 the floor below would underflow to 0 and give 0/0.
        sd_x = np.sqrt(np.maximum(np.diag(p.gram).astype(np.float64), 1e-300))
        sd_y = np.sqrt(np.maximum(p.target_var.astype(np.float64), 1e-300))
        corr = np.abs(p.cross.astype(np.float64)) / sd_y[:, None] / sd_x[None, :]
        per_feature = corr.max(axis=0, initial=0.0)
        np.maximum.at(score, p.channel_of_feature, per_feature)
    live = live_mask(problems)
    # A small uniform floor so that no live channel starts at exactly zero.
    score = np.where(live, score + 1e-3 * (score[live].mean() if live.any() else 0.0) + 1e-12, 0.0)
    return score / score.sum()


def live_mask(problems: list[NormalisedProblem]) -> np.ndarray:
    """A channel is live if any regression sees it vary."""
    return np.logical_or.reduce([p.live_channels for p in problems])


def active_gram(p: NormalisedProblem, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The active features and their Gram sub-matrix (shared by both steps of an iteration)."""
    feats = np.flatnonzero(active[p.channel_of_feature])
    return feats, (p.gram if feats.size == p.gram.shape[0] else p.gram[np.ix_(feats, feats)])


def lambda_step(p: NormalisedProblem, w: np.ndarray, eps_l2: float, active: np.ndarray, sub=None):
    """Closed-form ridge: Lambda = C D (D G D + eps_l2/n^2 I)^-1 on the active features.

    Returns (lam, q, feats) with lam and q of shape (m, |feats|). Solved in the Lambda form, which
    stays well conditioned when some w are tiny (the Q form would divide by w^2). ``sub`` is
    :func:`active_gram`'s result when the caller already has it.
    """
    feats, gram = sub if sub is not None else active_gram(p, active)
    # Large problems arrive in float32 (see problem.normalise): 3x faster solves here, and only
    # the selection depends on them, not the final weights.
    dtype = p.gram.dtype
    d_w = w[p.channel_of_feature[feats]].astype(dtype)
    scaled = gram * d_w[:, None]
    scaled *= d_w[None, :]
    scaled[np.diag_indices_from(scaled)] += eps_l2 / p.n_channels**2
    rhs = (p.cross[:, feats] * d_w[None, :]).T.astype(dtype)
    lam = _spd_solve(scaled, rhs).T
    return lam, lam * d_w[None, :], feats


def _spd_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve a x = b for a symmetric PSD a by Cholesky, adding jitter if rounding made it indefinite.

    Statistics accumulated from fewer samples than features (late VGG layers) give a singular
    Gram matrix whose float rounding can leave eigenvalues slightly below zero.
    """
    if a.shape[0] == 0:  # a regression none of whose channels is still active
        return np.zeros_like(b)
    scale = max(float(np.trace(a)) / a.shape[0], np.finfo(a.dtype).tiny)
    for jitter in (0.0, 1e-6, 1e-4, 1e-2):
        try:
            shifted = a if jitter == 0 else a + (jitter * scale) * np.eye(a.shape[0], dtype=a.dtype)
            return linalg.cho_solve(linalg.cho_factor(shifted, check_finite=False), b, check_finite=False)
        except linalg.LinAlgError:
            continue
    return linalg.lstsq(a, b, check_finite=False)[0]


def _block_sum(matrix: np.ndarray, channels: np.ndarray, n: int) -> np.ndarray:
    """Sum a (d, d) feature matrix into an (n, n) channel matrix."""
    present, counts = np.unique(channels, return_counts=True)
    block = int(counts[0])
    if np.all(counts == block) and np.array_equal(channels, np.repeat(present, block)):
        # Channel-major features in equal blocks (Conv patches, flattened maps): a reshape suffices.
        out = np.zeros((n, n))
        out[np.ix_(present, present)] = matrix.reshape(present.size, block, present.size, block).sum(axis=(1, 3))
        return out
    one_hot = np.zeros((channels.size, n))
    one_hot[np.arange(channels.size), channels] = 1.0
    return one_hot.T @ matrix @ one_hot


def objective(problems, w, lams, qs, feats_list, eps_entropy, eps_l2) -> float:
    total = 0.0
    for p, lam, q, feats in zip(problems, lams, qs, feats_list):
        g = p.gram[np.ix_(feats, feats)]
        mse = p.target_var.sum() - 2 * np.sum(q * p.cross[:, feats]) + np.sum((q @ g) * q)
        total += (mse + eps_l2 / p.n_channels**2 * np.sum(lam * lam)) / p.target_var.size
    pos = w > 0
    return float(total + eps_entropy * np.sum(w[pos] * np.log(w[pos])))


def w_step_terms(problems, lams, feats_list, active, grams=None):
    """The quadratic f(w) = const - 2 b.w + w.A.w over the active channels, summed over problems."""
    idx = np.flatnonzero(active)
    n = problems[0].n_channels
    a_mat = np.zeros((n, n))
    b_vec = np.zeros(n)
    const = 0.0
    for k, (p, lam, feats) in enumerate(zip(problems, lams, feats_list)):
        m = p.target_var.size
        const += p.target_var.sum() / m
        if feats.size == 0:  # a reader of a unit that sees none of its active channels: constant
            continue
        chans = p.channel_of_feature[feats]
        b_vec += np.bincount(chans, weights=np.sum(p.cross[:, feats] * lam, axis=0), minlength=n) / m
        gram = grams[k] if grams is not None else active_gram(p, active)[1]
        a_mat += _block_sum(gram * (lam.T @ lam), chans, n) / m
    return a_mat[np.ix_(idx, idx)], b_vec[idx], const


def simplex_newton(a_mat, b_vec, eps_entropy, w0, *, tol=1e-12, max_iter=200) -> np.ndarray:
    """Minimise f(w) = w.A.w - 2 b.w + eps * sum w log w subject to w >= 0, sum w = 1.

    A is PSD and eps > 0, so f is strictly convex and its minimiser is interior, though some
    coordinates may be exponentially small. The Newton direction on the affine hull is taken in
    log space (w <- w * exp(alpha * dw / w), renormalised), so tiny coordinates move by factors
    rather than being held back by the boundary; Armijo backtracking on f.
    """
    if eps_entropy <= 0:
        raise ValueError("eps_entropy must be > 0 for the simplex Newton w-step")
    w = np.asarray(w0, dtype=float) / np.sum(w0)
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
        log_step = np.clip(step / w, -50.0, 50.0)
        alpha = 1.0
        while alpha > 1e-10:
            cand = w * np.exp(alpha * log_step)
            cand = np.maximum(cand / cand.sum(), 1e-300)
            f_cand = f(cand)
            if f_cand <= fw - 0.25 * alpha * decrement:
                break
            alpha *= 0.5
        else:
            break
        w, fw = cand, f_cand
    return w / w.sum()


def q_fixed_w_step(penalty: np.ndarray, eps_entropy: float) -> np.ndarray:
    """Minimise sum_c penalty_c / w_c^2 + eps * sum w log w over the simplex (Q = Lambda D(w) held fixed).

    With Q fixed, ||Lambda||^2 = sum_c ||Q_c||^2 / w_c^2, so this is the exact minimisation of L
    over w in the (Q, w) parametrisation: the step that moves weight away from channels the ridge
    has shrunk, which the Lambda-fixed step only does slowly. Stationarity gives, per channel,
    -2 p_c e^{-3u} + eps (u + 1) = -nu in u = log w_c, whose root is closed-form,
    u_c(nu) = W(z_c)/3 - 1 - nu/eps with z_c = (6 p_c / eps) e^{3 + 3 nu / eps} (Lambert W);
    sum_c w_c(nu) = 1, decreasing in nu, fixes nu by Brent's method.
    """
    if penalty.size <= 1:
        return np.ones(penalty.size)  # the simplex of one channel is a point
    with np.errstate(divide="ignore"):
        log_6p = np.log(6.0 * np.maximum(penalty, 0.0) / eps_entropy)  # -inf for a zero penalty: W = 0

    def log_w(nu: float) -> np.ndarray:
        log_z = log_6p + 3.0 + 3.0 * nu / eps_entropy
        w_z = np.zeros_like(log_z)
        finite = np.isfinite(log_z)
        w_z[finite] = lambert_w_of_log(log_z[finite])
        return w_z / 3.0 - 1.0 - nu / eps_entropy

    def log_total(nu: float) -> float:
        u = log_w(nu)
        top = float(u.max())
        return top + float(np.log(np.sum(np.exp(u - top))))

    # log sum_c w_c(nu) decreases in nu: bracket its zero, 4^60 is beyond any scale the normalised problems reach.
    nu_lo, nu_hi = -1.0, 1.0
    for _ in range(60):
        if log_total(nu_lo) >= 0:
            break
        nu_lo *= 4
    for _ in range(60):
        if log_total(nu_hi) <= 0:
            break
        nu_hi *= 4
    nu = optimize.brentq(log_total, nu_lo, nu_hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=200)
    w = np.exp(log_w(nu))
    return w / w.sum()


def lambert_w_of_log(log_z: np.ndarray) -> np.ndarray:
    """The principal Lambert W(z) for z = exp(log_z) > 0, without forming z (which overflows).

    W solves w + log w = log_z. Newton's method on that concave increasing function converges
    monotonically from below; for tiny z, W(z) = z (1 - z + ...) is exact to rounding.
    """
    log_z = np.asarray(log_z, dtype=float)
    out = np.exp(np.minimum(log_z, 0.0))
    large = log_z > -30.0
    if large.any():
        target = log_z[large]
        # Start below the root: z for small z, log_z - log(log_z) (from below) for large.
        w = np.where(target < 1.0, np.exp(np.minimum(target, 1.0)) / 2.0,
                     np.maximum(target - np.log(np.maximum(target, 1.0)), 0.5) / 2.0)
        for _ in range(100):
            step = (w + np.log(w) - target) / (1.0 + 1.0 / w)
            w_next = np.maximum(w - step, w / 2.0)
            if np.all(np.abs(w_next - w) <= 1e-15 * w_next):
                w = w_next
                break
            w = w_next
        out[large] = w
    return out


def compress_targets(p: NormalisedProblem, keep_energy: float) -> NormalisedProblem:
    """Rotate the targets onto the principal subspace of their explained part and drop the rest.

    Every w-dependent term of L involves the targets only through C, and rotating the targets
    (y -> U^T y) leaves L unchanged; keeping the r directions that hold ``keep_energy`` of the
    explained variance C (G + delta I)^-1 C^T changes L by at most the dropped fraction while the
    solves shrink from m to r right-hand sides (r is 40-180 for VGG layers with m = 512). The
    constant sum of target variances, and the 1/m scaling, stay those of the full problem.
    """
    if keep_energy >= 1 or p.cross.shape[0] < 16:
        return p
    gram = p.gram
    delta = 1e-3 * max(float(np.trace(gram)) / gram.shape[0], 1e-30)
    explained = (p.cross @ _spd_solve(gram + delta * np.eye(gram.shape[0], dtype=gram.dtype), p.cross.T)).astype(np.float64)
    values, vectors = np.linalg.eigh((explained + explained.T) / 2)
    values, vectors = values[::-1], vectors[:, ::-1]
    energy = np.cumsum(np.maximum(values, 0)) / max(float(np.sum(np.maximum(values, 0))), 1e-300)
    rank = int(np.searchsorted(energy, keep_energy)) + 1
    if rank >= p.cross.shape[0]:
        return p
    cross = (vectors[:, :rank].T @ p.cross).astype(p.cross.dtype)
    return replace(p, cross=cross)


def fading(previous: np.ndarray, w: np.ndarray, remaining: int, floor: float) -> np.ndarray:
    """Channels whose weight, shrinking at its last iteration's rate for the remaining iterations, ends below ``floor``/n.

    The weights of the channels GES drops shrink by a steady factor per iteration (a few tens of
    per cent), so they stay in the systems, at full cost, for many iterations after their fate is
    plain; on VGG-16's 512-channel layers the first six iterations run with every channel active
    and take two thirds of the unit's time. Screening them out when the extrapolation puts them an
    order of magnitude under the keep threshold shrinks the factorisations early.
    """
    if floor <= 0 or remaining <= 0:
        return np.zeros(w.shape, dtype=bool)
    n = w.size
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(previous > 0, w / previous, 1.0)
    shrinking = ratio < 1
    return shrinking & (n * w * np.where(shrinking, ratio, 1.0) ** remaining < floor)


def solve_ges(problems: list[NormalisedProblem], options: GesOptions = GesOptions()) -> GesResult:
    """Alternate Lambda- and w-steps until the weights stop moving."""
    n = problems[0].n_channels
    if not live_mask(problems).any():
        # Every channel is constant on the calibration data: nothing to regress on, so there is
        # nothing to choose between either; uniform weights keep them all (and avoid 0/0).
        return GesResult(weights=np.full(n, 1.0 / n), objective=[], n_iter=0, converged=True, order=np.arange(n))
    w = initial_weights(problems)
    problems = [compress_targets(p, options.keep_energy) for p in problems]
    active = w > 0
    # When each channel left the active set (0: never live) and its weight just before.
    left_at, weight_at_leave = np.where(active, options.max_iter + 1, 0), w.copy()
    history: list[float] = []
    converged = False
    it = 0
    change = np.inf
    subs, subs_for = None, None
    for it in range(1, options.max_iter + 1):
        if subs_for is None or not np.array_equal(active, subs_for):
            subs, subs_for = [active_gram(p, active) for p in problems], active.copy()
        steps = [lambda_step(p, w, options.eps_l2, active, sub) for p, sub in zip(problems, subs)]
        lams, qs, feats_list = (list(x) for x in zip(*steps))
        if options.track_objective:
            history.append(objective(problems, w, lams, qs, feats_list, options.eps_entropy, options.eps_l2))
        if change <= options.tol:
            converged = True
            break
        previous = w
        a_mat, b_vec, _ = w_step_terms(problems, lams, feats_list, active, [sub[1] for sub in subs])
        w_active = simplex_newton(a_mat, b_vec, options.eps_entropy, w[active])
        w = np.zeros(n)
        w[active] = w_active
        if options.q_step:
            qs = [lam * w[p.channel_of_feature[feats]][None, :] for p, lam, feats in zip(problems, lams, feats_list)]
            penalty = np.zeros(n)
            for p, q, feats in zip(problems, qs, feats_list):
                penalty += np.bincount(p.channel_of_feature[feats], weights=np.sum(q * q, axis=0), minlength=n) \
                    * options.eps_l2 / (p.n_channels**2 * p.target_var.size)
            w[active] = q_fixed_w_step(penalty[active], options.eps_entropy)
        active = w * n >= options.active_floor
        if it > 1:  # the first iteration's change is from the correlation start, not a trend
            active &= ~fading(previous, w, options.max_iter - it, options.screen_floor)
        leaving = (left_at > it) & ~active
        left_at[leaving], weight_at_leave[leaving] = it, w[leaving]
        w = np.where(active, w, 0.0)
        w /= w.sum()
        change = float(np.max(np.abs(w - previous))) * n
        log.debug("GES iteration %d: %d active channels, max change of n*w %.2e", it, active.sum(), change)
    if not converged:
        # The iteration cap is deliberate (see docs/method.md): late iterations only shave a
        # channel now and then. Logged, not warned, so library users are not flooded.
        log.info("GES stopped after %d iterations; largest change of n*w %.2e > tol %.1e",
                 options.max_iter, change, options.tol)
    weight_at_leave = np.where(active, w, weight_at_leave)
    order = np.lexsort((np.arange(n), -weight_at_leave, -left_at))
    return GesResult(weights=w, objective=history, n_iter=it, converged=converged, order=order)


def path_scores(result: GesResult) -> np.ndarray:
    """The channel weights, with the channels GES dropped ranked below every live one in the
    order they left (negative, so no threshold keeps them): a full ranking for a keep count."""
    scores = result.weights.astype(np.float64, copy=True)
    dropped = result.order[scores[result.order] <= 0]
    scores[dropped] = -np.arange(1, dropped.size + 1) / max(dropped.size, 1)
    return scores


def select_channels(weights: np.ndarray, *, threshold: float = 0.0) -> np.ndarray:
    """Keep channel c when n*w_c >= threshold (relative to the uniform weight); at least the best one."""
    keep = weights * weights.size >= threshold
    if not keep.any():
        keep[np.argmax(weights)] = True
    return keep
