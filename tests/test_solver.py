"""The numerical core against closed forms: ridge, simplex KKT, least squares, planted channels."""

import warnings

import numpy as np
import pytest

from onnxprune.calib.stats import Moments
from onnxprune.config import PruneConfig
from onnxprune.solve.ges import (GesOptions, fading, lambda_step, lambert_w_of_log, objective, q_fixed_w_step, select_channels,
                                 simplex_newton, solve_ges, w_step_terms)
from onnxprune.solve.problem import LayerProblem, normalise
from onnxprune.solve.refit import refit
from onnxprune.solve.selectors import top_k


def planted_problem(n_channels=12, block=4, signal=(1, 4, 7), n_targets=6, n_samples=4000, noise=0.01, seed=0):
    """y depends on the features of the ``signal`` channels only; all channels are correlated noise."""
    rng = np.random.default_rng(seed)
    d = n_channels * block
    mix = rng.normal(size=(d, d)) * 0.3 + np.eye(d)
    x = rng.normal(size=(n_samples, d)) @ mix
    channel = np.repeat(np.arange(n_channels), block)
    weight = rng.normal(size=(n_targets, d)) * np.isin(channel, signal)[None, :]
    y = x @ weight.T + 0.5 + noise * rng.normal(size=(n_samples, n_targets))
    moments = Moments(d, n_targets)
    for chunk in np.array_split(np.arange(n_samples), 7):
        moments.add(x[chunk].astype(np.float32), y[chunk].astype(np.float32))
    return moments.problem(channel, n_channels), x, y


def test_moments_match_direct_covariance():
    problem, x, y = planted_problem()
    np.testing.assert_allclose(problem.gram, np.cov(x.T, bias=True), rtol=1e-4, atol=1e-4)
    cross = ((y - y.mean(0)).T @ (x - x.mean(0))) / len(x)
    np.testing.assert_allclose(problem.cross, cross, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(problem.target_var, y.var(0), rtol=1e-4)
    np.testing.assert_allclose(problem.x_mean, x.mean(0), atol=1e-4)
    assert problem.n_samples == len(x)


def test_lambda_step_with_w_fixed_is_ridge_regression():
    problem, _, _ = planted_problem()
    p = normalise(problem)
    rng = np.random.default_rng(1)
    w = rng.uniform(0.2, 1.0, p.n_channels)
    w /= w.sum()
    eps = 0.3
    _, q, feats = lambda_step(p, w, eps, np.ones(p.n_channels, bool))
    d_w = w[p.channel_of_feature]
    closed_form = p.cross @ np.linalg.inv(p.gram + eps / p.n_channels**2 * np.diag(1 / d_w**2))
    np.testing.assert_allclose(q, closed_form, rtol=1e-6, atol=1e-8)
    assert feats.size == p.gram.shape[0]


def test_simplex_newton_satisfies_kkt():
    rng = np.random.default_rng(2)
    n = 15
    m = rng.normal(size=(n, n))
    a_mat = m @ m.T / n
    b_vec = rng.normal(size=n)
    eps = 0.05
    w = simplex_newton(a_mat, b_vec, eps, np.full(n, 1 / n))
    assert np.all(w > 0) and abs(w.sum() - 1) < 1e-12
    grad = 2 * (a_mat @ w - b_vec) + eps * (np.log(w) + 1)
    # Interior optimum on the simplex: the gradient is the same in every coordinate.
    assert np.ptp(grad) < 1e-6 * max(1, np.abs(grad).max())


def test_q_fixed_w_step_satisfies_kkt():
    penalty = np.array([1e-9, 1e-6, 1e-4, 3e-3, 0.02, 0.5])
    eps = 1e-3
    w = q_fixed_w_step(penalty, eps)
    assert q_fixed_w_step(np.array([0.0, 0.1, 0.2]), eps)[0] < 1e-100  # nothing to gain: no weight
    assert q_fixed_w_step(np.array([0.3]), eps).tolist() == [1.0]  # one channel: the simplex is a point
    assert abs(w.sum() - 1) < 1e-12 and np.all(w > 0)
    stationarity = -2 * penalty / w**3 + eps * (np.log(w) + 1)
    assert np.ptp(stationarity) < 1e-9 * max(1, np.abs(stationarity).max())
    assert np.all(np.diff(w) > 0)  # a larger penalty (a larger ||Q_c||) earns a larger weight


def test_lambert_w_of_log_matches_scipy_and_extends_past_overflow():
    from scipy.special import lambertw
    log_z = np.linspace(-60.0, 700.0, 3001)
    expected = lambertw(np.exp(log_z)).real
    np.testing.assert_allclose(lambert_w_of_log(log_z), expected, rtol=1e-12)
    huge = np.array([1e3, 1e6, 1e12])  # exp() overflows here; W still solves w + log w = log z
    w = lambert_w_of_log(huge)
    np.testing.assert_allclose(w + np.log(w), huge, rtol=1e-14)


def test_each_step_decreases_the_objective():
    problem, _, _ = planted_problem()
    p = normalise(problem)
    options = GesOptions(eps_entropy=1e-3, eps_l2=0.5, max_iter=8, track_objective=True, active_floor=0,
                         screen_floor=0)
    history = solve_ges([p], options).objective
    assert len(history) >= 3
    assert np.all(np.diff(history) <= 1e-9 * np.abs(history[:-1]))


def test_w_step_terms_reproduce_the_objective():
    problem, _, _ = planted_problem()
    p = normalise(problem)
    w = np.full(p.n_channels, 1 / p.n_channels)
    active = np.ones(p.n_channels, bool)
    lam, q, feats = lambda_step(p, w, 0.5, active)
    a_mat, b_vec, const = w_step_terms([p], [lam], [feats], active)
    m = p.cross.shape[0]
    ridge = 0.5 / p.n_channels**2 * np.sum(lam * lam) / m
    entropy = 1e-3 * np.sum(w * np.log(w))
    expected = objective([p], w, [lam], [q], [feats], 1e-3, 0.5)
    assert const - 2 * b_vec @ w + w @ a_mat @ w + ridge + entropy == pytest.approx(expected, rel=1e-9)


def test_ges_keeps_exactly_the_channels_that_carry_signal():
    signal = (1, 4, 7)
    problem, _, _ = planted_problem(signal=signal)
    result = solve_ges([normalise(problem)], GesOptions(eps_entropy=1e-3, eps_l2=1.0, max_iter=100))
    keep = select_channels(result.weights, threshold=0.5)
    assert np.flatnonzero(keep).tolist() == list(signal)


def test_fading_extrapolates_each_channels_shrinkage_to_the_last_iteration():
    previous = np.array([0.25, 0.25, 0.25, 0.25])
    w = np.array([0.05, 0.24, 0.3, 0.41])  # n*w: 0.2 shrinking by 5x, 0.96 by 4 %, two growing
    assert fading(previous, w, remaining=3, floor=0.05).tolist() == [True, False, False, False]
    assert fading(previous, w, remaining=0, floor=0.05).tolist() == [False] * 4  # the last iteration decides
    assert not fading(previous, w, remaining=3, floor=0).any()  # screening off
    # A channel at n*w 0.2 shrinking by 5x per iteration with one to go would end at 0.04*: below 0.05.
    assert fading(previous, w, remaining=1, floor=0.05).tolist() == [True, False, False, False]


def test_screening_shrinks_the_systems_early_and_keeps_the_same_channels(monkeypatch):
    import onnxprune.solve.ges as ges

    signal = (2, 9, 17, 30)
    problem, _, _ = planted_problem(n_channels=40, signal=signal, n_samples=6000)
    p = normalise(problem)
    sizes = {}
    step = ges.lambda_step

    def recording(problem, w, eps_l2, active, sub=None):
        sizes.setdefault(current, []).append(int(active.sum()))
        return step(problem, w, eps_l2, active, sub)

    monkeypatch.setattr(ges, "lambda_step", recording)
    kept = {}
    for current in ("off", "on"):
        options = GesOptions(eps_l2=1.0, max_iter=20, screen_floor=0.0 if current == "off" else 0.05)
        kept[current] = np.flatnonzero(select_channels(solve_ges([p], options).weights, threshold=0.5)).tolist()
    assert kept["on"] == kept["off"] == list(signal)
    cost = {k: sum(a**3 for a in v) for k, v in sizes.items()}  # a factorisation costs active^3
    assert cost["on"] < 0.8 * cost["off"], sizes


def test_select_channels_top_k_and_never_empty():
    weights = np.array([0.1, 0.5, 0.05, 0.35])
    assert top_k(weights, 2).tolist() == [False, True, False, True]
    assert select_channels(weights, threshold=100).tolist() == [False, True, False, False]


def test_ges_defaults_are_the_prune_defaults():
    """One default, two spellings: solve_ges called alone behaves as prune() does."""
    config, options = PruneConfig(), GesOptions()
    assert (options.eps_entropy, options.eps_l2, options.max_iter, options.tol) == (
        config.eps_entropy, config.eps_l2, config.max_iter, config.tol)


def test_refit_without_ridge_is_least_squares():
    problem, x, y = planted_problem(noise=0.2)
    keep = np.zeros(problem.n_channels, bool)
    keep[[0, 1, 4, 7, 9]] = True
    q, bias = refit(problem, keep, ridge=0.0)
    cols = np.flatnonzero(keep[problem.channel_of_feature])
    design = np.hstack([x[:, cols], np.ones((len(x), 1))])
    solution = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(q, solution[:-1].T, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(bias, solution[-1], rtol=1e-3, atol=1e-3)


def test_constant_channels_are_dead_and_dropped():
    problem, _, _ = planted_problem()
    gram = problem.gram.copy()
    dead = problem.channel_of_feature == 2
    gram[dead, :] = 0
    gram[:, dead] = 0
    cross = problem.cross.copy()
    cross[:, dead] = 0
    constant = LayerProblem(gram, cross, problem.target_var, problem.x_mean, problem.y_mean,
                            problem.channel_of_feature, problem.n_channels, problem.n_samples)
    p = normalise(constant)
    assert not p.live_channels[2] and p.live_channels.sum() == problem.n_channels - 1
    result = solve_ges([p], GesOptions(eps_l2=1.0))
    assert result.weights[2] == 0


def test_target_weights_scale_the_targets():
    problem, _, _ = planted_problem()
    weights = np.linspace(0.5, 2.0, problem.n_targets)
    p = normalise(problem, weights)
    assert p.target_var.mean() == pytest.approx(1.0)
    ratio = p.target_scale / weights
    np.testing.assert_allclose(ratio, ratio[0])


def test_all_channels_constant_gives_uniform_weights_without_nan():
    problem, _, _ = planted_problem()
    constant = LayerProblem(np.zeros_like(problem.gram), np.zeros_like(problem.cross), problem.target_var,
                            problem.x_mean, problem.y_mean, problem.channel_of_feature, problem.n_channels,
                            problem.n_samples)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a 0/0 in the solver would raise here
        result = solve_ges([normalise(constant)], GesOptions(eps_l2=1.0))
    assert np.allclose(result.weights, 1 / problem.n_channels)
    assert select_channels(result.weights, threshold=0.5).all()
