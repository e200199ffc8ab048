"""The alternative selectors (L1-norm ranking, LASSO) on problems whose answer is known."""

import numpy as np

from onnxprune.solve.problem import normalise
from onnxprune.solve.selectors import l1_scores, lasso_scores, n_to_keep, top_k
from test_solver import planted_problem


def test_lasso_finds_the_planted_channels():
    problem, x, y = planted_problem(signal=(1, 4, 7))
    # The exact least-squares weights play the part of the layer's original weights.
    xc, yc = x - x.mean(0), y - y.mean(0)
    weight = np.linalg.lstsq(xc, yc, rcond=None)[0].T
    scores = lasso_scores([normalise(problem)], [weight], n_keep=3)
    assert set(np.flatnonzero(top_k(scores, 3))) == {1, 4, 7}


def test_lasso_gives_a_full_ranking_for_any_budget():
    problem, x, y = planted_problem(signal=(1, 4, 7))
    weight = np.linalg.lstsq(x - x.mean(0), y - y.mean(0), rcond=None)[0].T
    for k in (1, 5, 11):
        keep = top_k(lasso_scores([normalise(problem)], [weight], n_keep=k), k)
        assert keep.sum() == k
        if k >= 3:
            assert keep[[1, 4, 7]].all()


def test_l1_scores_normalise_each_producer():
    big = np.array([[10.0, -10.0], [1.0, 1.0], [20.0, 0.0]])  # row norms 20, 2, 20
    small = np.array([[0.1], [0.3], [0.2]])
    scores = l1_scores([(big, np.array([0, 1, 2])), (small, np.array([0, 1, -1]))], 3)
    # big: 20/14, 2/14, 20/14; small (rows 0 and 1 only): 0.1/0.2, 0.3/0.2
    assert np.allclose(scores, [20 / 14 + 0.5, 2 / 14 + 1.5, 20 / 14])
    assert list(np.flatnonzero(top_k(scores, 2))) == [0, 1]


def test_n_to_keep_bounds():
    assert n_to_keep(10, 0.0) == 1 and n_to_keep(10, 1.0) == 10 and n_to_keep(10, 0.46) == 5


# --- through prune(): every selector shares the rewrite and the refit ---------------------------

import pytest  # noqa: E402

from builders import lenet_like, random_inputs, run  # noqa: E402
from onnxprune import prune  # noqa: E402
from onnxprune.errors import ConfigError  # noqa: E402
from topologies import build  # noqa: E402


@pytest.mark.parametrize("selector", ["ges", "l1", "lasso"])
def test_keep_fraction_keeps_that_share_of_every_layer(selector):
    model = lenet_like()
    calib = random_inputs(model, 64, seed=1)
    pruned, report = prune(model, calib, selector=selector, keep_fraction=0.5)
    for layer in report.layers[:-1]:  # the last layer's outputs are the model's
        assert layer.channels_after == n_to_keep(layer.channels_before, 0.5), layer.name
    assert run(pruned, calib).shape == run(model, calib).shape


@pytest.mark.parametrize("selector", ["l1", "lasso"])
def test_selectors_on_a_residual_net(selector):
    model = build(["residual", "bottleneck", "dense"], seed=3)
    calib = random_inputs(model, 32, seed=2)
    pruned, report = prune(model, calib, selector=selector, keep_fraction=0.5)
    assert report.params_after < report.params_before
    assert np.all(np.isfinite(run(pruned, calib)))


def test_ranking_selector_needs_a_fraction():
    with pytest.raises(ConfigError, match="keep_fraction"):
        prune(lenet_like(), np.zeros((1, 1, 28, 28), np.float32), selector="l1")
