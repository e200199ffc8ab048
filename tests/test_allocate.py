"""Allocation under a MAC budget: error ladders, GES's path ranking, the MAC model and the greedy."""

import numpy as np
import pytest

from onnxprune.config import PruneConfig
from onnxprune.graph.channels import Unit, analyse_channels
from onnxprune.graph.io import to_graph
from onnxprune.graph.shapes import input_sizes, tensor_shapes
from onnxprune.pruning.once import prune_once
from onnxprune.pruning.select import Candidates, choose
from onnxprune.pruning.costs import CostModel
from onnxprune.search.allocate import allocate
from onnxprune.solve.ges import GesOptions, path_scores, select_channels, solve_ges
from onnxprune.solve.ladder import error_ladder
from onnxprune.solve.problem import normalise
from onnxprune.solve.refit import refit

from builders import conv_bn_relu_chain, random_inputs
from test_solver import planted_problem
from topologies import build


def test_ladder_is_the_refit_residual_of_every_prefix():
    problem, x, y = planted_problem(n_channels=8, block=3, signal=(1, 5), n_targets=4)
    normalised = normalise(problem)
    ranking = np.array([5, 1, 0, 7, 2, 6, 3, 4])
    ladder = error_ladder([normalised], ranking, 8, ridge=1e-3)
    assert ladder.shape == (9,) and ladder[0] == pytest.approx(1.0)
    assert np.all(np.diff(ladder) <= 1e-9)  # keeping more never explains less
    scale = normalised.target_scale
    for k in range(1, 9):
        keep = np.isin(np.arange(8), ranking[:k])
        # The refit on the raw statistics, scored on the normalised targets.
        q, b = refit(problem, keep, ridge=0.0, prior=None)
        feats = np.flatnonzero(keep[problem.channel_of_feature])
        residual = (y - (x[:, feats] @ q.T + b)) * scale[None, :]
        relative = float(np.mean(residual**2, axis=0).sum() / normalised.target_var.sum())
        assert ladder[k] == pytest.approx(relative, abs=2e-3), k
    assert ladder[2] < 0.01 < ladder[1]  # both planted channels explain the targets; one does not


def test_frozen_channels_are_always_in_the_ladder():
    problem, _, _ = planted_problem(n_channels=6, block=2, signal=(5,), n_targets=3)
    normalised = normalise(problem)
    # Channel 5 is frozen (local indices from n_prunable = 5 on): it explains the targets at k = 0.
    ladder = error_ladder([normalised], np.arange(6), 5)
    assert ladder.shape == (6,) and ladder[0] < 0.01


def test_path_scores_rank_dropped_channels_below_kept_ones_in_the_order_they_left():
    problem, _, _ = planted_problem(n_channels=12, signal=(1, 4, 7))
    result = solve_ges([normalise(problem)], GesOptions(eps_l2=1.0))
    scores = path_scores(result)
    kept = select_channels(result.weights, threshold=0.5)
    assert set(np.flatnonzero(kept)) == {1, 4, 7}
    np.testing.assert_array_equal(select_channels(scores, threshold=0.5), kept)  # same choice
    assert np.all(scores[result.weights > 0] > 0) and np.all(scores[result.weights == 0] < 0)
    np.testing.assert_array_equal(np.argsort(-scores, kind="stable"), result.order)
    assert sorted(result.order.tolist()) == list(range(12))


def test_a_keep_count_far_below_ges_own_count_is_ranked_by_a_stronger_solve():
    problem, _, _ = planted_problem(n_channels=12, signal=(1, 4, 7))
    unit = Unit(np.arange(12), [], np.zeros(0, dtype=np.int64))
    weak = dict(unit=unit, problems=[problem], normalised=[normalise(problem)], eps_l2=1e-6,
                producer_rows=None, reader_weights=None)
    config = PruneConfig()
    _, natural, how = choose(Candidates(**weak), config)
    assert natural.sum() > 4 and "x eps_l2" not in how  # so weak that GES keeps noise channels too
    scores, keep, how = choose(Candidates(**weak, keep_count=3), config)
    assert "x eps_l2" in how and set(np.flatnonzero(keep)) == {1, 4, 7}


def _cost_model(model, x, metric="macs"):
    feeds = {model.graph.input[0].name: x}
    shapes = tensor_shapes(model, input_sizes(model, feeds))
    graph = to_graph(model)
    channels = analyse_channels(graph, shapes, frozenset())
    return CostModel(graph, channels, channels.units(), metric), channels.units()


@pytest.mark.parametrize("model", [conv_bn_relu_chain((3, 8, 12), seed=1),
                                   build(["residual", "inverted_residual", "plain"], seed=2)],
                         ids=["chain", "residual-depthwise"])
def test_cost_models_count_what_a_prune_at_those_counts_leaves(model):
    x = random_inputs(model, 64, seed=3)
    macs, units = _cost_model(model, x, "macs")
    params, _ = _cost_model(model, x, "params")
    keep = {unit.index: max(1, len(unit.classes) // 2) for unit in units}
    config = PruneConfig(holdout=0, rows_per_layer=2048)
    _, report = prune_once(model, {model.graph.input[0].name: x}, config, lambda _: None, keep_counts=keep)
    assert macs.total == report.macs_before and params.total == report.params_before
    assert macs.cost(keep) == pytest.approx(report.macs_after, rel=1e-9)
    assert params.cost(keep) == pytest.approx(report.params_after, rel=1e-9)
    assert macs.cost(dict(macs.size)) == pytest.approx(macs.total)


def test_allocation_takes_the_cheap_errors_first_and_meets_the_budget():
    model = conv_bn_relu_chain((3, 8, 12), seed=1)
    macs, units = _cost_model(model, random_inputs(model, 8))
    a, b = (unit.index for unit in units)
    # Unit a's channels cost error from the first one on; unit b's last half is free.
    ladders = {a: np.linspace(1.0, 0.0, macs.size[a] + 1),
               b: np.concatenate([np.linspace(1.0, 0.0, macs.size[b] // 2 + 1), np.zeros(macs.size[b] // 2)])}
    target = 0.8 * macs.total
    keep = allocate(ladders, macs, target)
    assert macs.cost(keep) <= target
    # Dropping b's free channels alone meets the budget here, so a keeps all of its own.
    assert macs.cost({a: macs.size[a], b: macs.size[b] // 2}) <= target
    assert keep[a] == macs.size[a] and macs.size[b] // 2 <= keep[b] < macs.size[b]
    # A floor is respected, and a budget beyond every floor stops at the floors.
    keep = allocate(ladders, macs, 0.0, least={a: 3, b: 2})
    assert keep == {a: 3, b: 2}
