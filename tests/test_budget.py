"""Budgets (--target-sparsity / --target-macs) and per-layer controls (--min-keep, --layer-eps, --pricing).

The search itself is tested on a synthetic fraction-vs-eps curve (no pruning, instant); a few
end-to-end prunes of tiny models check that the budget is met by the model actually written.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
from click.testing import CliRunner

from builders import INPUT, lenet_like, random_chain, random_inputs, save_inputs
from onnxprune import BudgetError, ConfigError, PruneConfig, SearchOptions, prune, prune_to_budget
from onnxprune.search.budget import Budget, History, budget_from, find_budget
from onnxprune.cli import main
from onnxprune.cli.summary import summary
from onnxprune.pruning.allocation import unit_eps_l2
from onnxprune.graph.channels import analyse_channels
from onnxprune.graph.io import check_model, to_graph
from onnxprune.api import tensor_shapes
from onnxprune.pruning.once import prune_once
from onnxprune.report import Report
from topologies import build, resnet50_like

FEEDS = {"input": np.zeros((64, 1), dtype=np.float32)}


def chain():
    """Enough channels (12, 16, 24, 24 hidden) for the fraction removed to move in small steps;
    conv1 at 12x12, conv2 and conv3 at 6x6 (after a pool), then a global pool."""
    return random_chain([(12, 3, 1, True, "Relu", True), (16, 3, 1, True, "Relu", False),
                         (24, 3, 1, True, "Relu", False)], "gap", 24)


def unit_prices(model, **options):
    """unit_eps_l2 of the model's units, keyed by each unit's first reader."""
    model = check_model(model)  # shapes inferred, as prune() has them
    channels = analyse_channels(to_graph(model), tensor_shapes(model))
    units = channels.units()
    eps = unit_eps_l2(channels, units, PruneConfig(**options))
    return {unit.consumers[0].name: eps[unit.index] for unit in units}


def fake_prune(curve, calls=None):
    """A prune_once whose fraction of parameters removed is curve(eps_l2) (MACs: the same)."""
    def prune_once(feeds, config, say):
        if calls is not None:
            calls.append((config.eps_l2, len(feeds["input"])))
        removed = curve(config.eps_l2)
        after = round(1000 * (1 - removed))
        return object(), Report(params_before=1000, params_after=after, macs_before=1000, macs_after=after, seconds=0)
    return prune_once


def smooth(eps):  # 10 pt per factor e, like VGG-16 around its defaults
    return min(0.99, max(0.0, 0.75 + 0.10 * math.log(eps / 0.8)))


def search(curve, target, calls=None, history=None, **options):
    budget = Budget("params", target, SearchOptions(**{"search_samples": None, **options}))
    return find_budget(budget, PruneConfig(), FEEDS, fake_prune(curve, calls), lambda line: None, history)


# --- the search, on synthetic curves -----------------------------------------------------------------


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7, 0.9])
def test_search_meets_the_target_in_few_trials(target):
    calls = []
    _, report = search(smooth, target, calls)
    assert abs(report.params_removed - target) <= 0.005
    assert len(calls) <= 5
    assert [t.eps_l2 for t in report.search.trials] == [eps for eps, _ in calls]
    assert report.search.eps_l2 == calls[-1][0]  # the model returned is the last trial's


def test_search_on_a_subset_first_then_on_all_samples():
    calls = []
    shifted = {16: lambda eps: smooth(1.3 * eps), 64: smooth}  # the subset prunes a little more
    budget = Budget("params", 0.6, SearchOptions(search_samples=16))
    _, report = find_budget(budget, PruneConfig(), FEEDS,
                            fake_prune(lambda eps: shifted[calls[-1][1]](eps), calls), lambda line: None)
    assert abs(report.params_removed - 0.6) <= 0.005
    assert {n for _, n in calls} == {16, 64} and calls[-1][1] == 64
    assert sum(n == 64 for _, n in calls) <= 2  # the subset's answer and slope carry over
    assert report.search.samples == 64


def test_stepped_curve_is_bracketed_not_stalled():
    stepped = lambda eps: math.floor(smooth(eps) * 40) / 40  # 2.5 pt steps  # noqa: E731
    _, report = search(stepped, 0.65, tolerance=0.013)
    assert abs(report.params_removed - 0.65) <= 0.013


def test_unreachable_target_names_the_most_that_can_be_removed():
    capped = lambda eps: min(smooth(eps), 0.8)  # noqa: E731
    with pytest.raises(BudgetError, match=r"at most 80.0% is removed, however large eps_l2 gets; the closest was 80.0%"):
        search(capped, 0.9)
    floor = lambda eps: max(smooth(eps), 0.4)  # noqa: E731
    with pytest.raises(BudgetError, match=r"at least 40.0% is removed, however small"):
        search(floor, 0.2)


def test_a_jump_across_the_target_is_reported_with_the_closest_point():
    jump = lambda eps: 0.5 if eps < 1.0 else 0.7  # noqa: E731
    with pytest.raises(BudgetError, match="jumps across the target") as error:
        search(jump, 0.6, max_trials=30)
    assert error.value.closest.params_removed in (0.5, 0.7)
    assert "\n" not in str(error.value)


def test_trial_limit():
    with pytest.raises(BudgetError, match=r"2 trials were not enough \(raise --max-trials or --tolerance\)"):
        search(smooth, 0.3, max_trials=2)


def test_a_shared_history_saves_trials():
    history, calls = History(), []
    search(smooth, 0.6, calls, history)
    first = len(calls)
    search(smooth, 0.7, calls, history)
    assert len(calls) - first <= 2  # bracketed by the first search's points
    _, report = search(smooth, 0.7, calls, history)  # met already: no trial at all
    assert len(calls) - first <= 2 and report.search.trials == []


def test_budget_options_are_checked():
    with pytest.raises(ConfigError, match="not several"):
        prune_to_budget(lenet_like(), random_inputs(lenet_like(), 8), target_sparsity=0.5, target_macs=0.5)
    with pytest.raises(ConfigError, match="need a budget"):
        prune_to_budget(lenet_like(), random_inputs(lenet_like(), 8), search=SearchOptions())
    with pytest.raises(ConfigError, match="needs target_sparsity, target_macs or target_speedup"):
        prune_to_budget(lenet_like(), random_inputs(lenet_like(), 8))
    with pytest.raises(ConfigError, match=r"in \(0, 1\)"):
        Budget("params", 1.5)
    with pytest.raises(ConfigError, match="speed-up must be above 1"):
        prune_to_budget(lenet_like(), random_inputs(lenet_like(), 8), target_speedup=0.5)


# --- end to end on tiny models ----------------------------------------------------------------------


def test_target_sparsity_is_met_by_the_model_returned():
    model = chain()
    x = random_inputs(model, 16)
    pruned, report = prune_to_budget(model, x, target_sparsity=0.7, search=SearchOptions(tolerance=0.02, search_samples=None))
    assert abs(report.params_removed - 0.7) <= 0.02
    assert report.search.trials[-1].params_removed == pytest.approx(report.params_removed, abs=1e-6)
    assert "budget:" in summary(report) and "target 70.0% ± 2 pt" in summary(report)
    # The eps_l2 found reproduces the model: the budget is a search, not a different pruning.
    _, again = prune(model, x, eps_l2=report.search.eps_l2)
    assert again.params_after == report.params_after


def test_target_macs_searched_by_price():
    model = chain()
    x = random_inputs(model, 16)
    _, report = prune_to_budget(model, x, target_macs=0.6,
                                search=SearchOptions(tolerance=0.03, search_samples=None, allocation="price"))
    assert abs(report.macs_removed - 0.6) <= 0.03
    assert report.search.metric == "macs" and report.search.allocation == "price"


def test_target_macs_allocates_keep_counts_from_error_ladders():
    model = chain()
    x = random_inputs(model, 64)
    history = History()
    pruned, report = prune_to_budget(model, x, target_macs=0.6, history=history, rows_per_layer=4096)
    check_model(pruned)
    assert abs(report.macs_removed - 0.6) <= 0.005  # the counts' MACs are exact here: the default tolerance holds
    search = report.search
    assert search.allocation == "ladder" and search.metric == "macs"
    assert not search.trials[0].allocated and all(t.allocated for t in search.trials[1:]) and len(search.trials) >= 2
    assert search.trials[-1].macs_removed == pytest.approx(report.macs_removed, abs=1e-6)
    assert "keep counts allocated from error ladders" in summary(report)
    # A second budget on the same history starts from the ladders recorded last: no recording walk.
    _, again = prune_to_budget(model, x, target_macs=0.4, history=history, rows_per_layer=4096)
    assert abs(again.macs_removed - 0.4) <= 0.005 and all(t.allocated for t in again.search.trials)
    # A parameter budget allocates under a parameter count when asked to (a channel here is over
    # 1 pt of the parameters: the tolerance of test_target_sparsity_is_met_by_the_model_returned).
    _, params = prune_to_budget(model, x, target_sparsity=0.5, search=SearchOptions(allocation="ladder", tolerance=0.02),
                                rows_per_layer=4096)
    assert abs(params.params_removed - 0.5) <= 0.02 and params.search.allocation == "ladder"
    assert params.search.metric == "params" and "of the parameters removed (target 50.0% ± 2 pt)" in summary(params)


def test_an_allocation_that_cannot_reach_the_budget_stops_with_the_closest():
    model = chain()
    x = random_inputs(model, 32)
    walks = []
    with pytest.raises(BudgetError, match=r"allocated keep counts removed .* of the MACs at best, not 99.0%") as error:
        prune_to_budget(model, x, target_macs=0.99, progress=walks.append, rows_per_layer=2048)
    assert error.value.closest is not None and error.value.closest.allocated
    # Every unit down to one channel at the second walk: no further walk can come closer.
    assert sum(line.startswith("budget walk") and "removed" in line for line in walks) < 8


@pytest.mark.parametrize("allocation", ["price", "ladder"])
def test_target_speedup_searches_the_measured_latency(allocation):
    """The search runs on what the latency function measures (here a stand-in that reads the
    weights left, so that the test does not depend on this machine's timing)."""
    model = chain()
    x = random_inputs(model, 16)

    def weights(m):
        return sum(int(np.prod(t.dims)) for t in m.graph.initializer)

    measured = []

    def latency(pruned):
        measured.append(1 - weights(pruned) / weights(model))
        return measured[-1]

    budget = budget_from(None, None, SearchOptions(search_samples=None, allocation=allocation), target_speedup=2.5)
    assert budget.metric == "latency" and budget.target == pytest.approx(0.6) and budget.tolerance == 0.02
    assert budget.allocated == (allocation == "ladder")
    config = PruneConfig(pricing="macs", holdout=0)
    _, report = find_budget(budget, config, {INPUT: x}, partial(prune_once, model), lambda line: None,
                            latency=latency)
    timed = [t for t in report.search.trials if t.allocated or allocation == "price"]
    assert len(measured) == len(timed) and report.search.allocation == allocation
    assert [t.latency_removed for t in timed] == pytest.approx(measured, abs=1e-4)
    assert abs(report.search.trials[-1].latency_removed - 0.6) <= 0.02
    assert "measured batch-1 speed-up (target 2.5x" in summary(report)


def test_prune_to_budget_times_every_walk_of_a_speedup_budget():
    model = chain()
    x = random_inputs(model, 16)
    # A tolerance wide enough that timing noise on a busy machine cannot fail the search.
    _, report = prune_to_budget(model, x, target_speedup=1.5, search=SearchOptions(tolerance=0.45, max_trials=2))
    assert report.search.metric == "latency" and report.search.allocation == "ladder"
    recording, *allocated = report.search.trials
    assert recording.latency_removed is None and not recording.allocated  # only the pruned-to models are timed
    assert allocated and all(t.allocated and -1 < t.latency_removed < 1 for t in allocated)
    assert "measured batch-1 speed-up" in summary(report)


def test_latency_removed_times_both_models_on_this_machine():
    from onnxprune.measure.evaluate import latency_removed

    wide = random_chain([(64, 3, 1, True, "Relu", False), (64, 3, 1, True, "Relu", False)], "gap", None)
    narrow = random_chain([(8, 3, 1, True, "Relu", False), (8, 3, 1, True, "Relu", False)], "gap", None)
    x = random_inputs(wide, 4)
    assert latency_removed(wide, narrow, {INPUT: x}) > 0.5  # 1/8 of the MACs of the 64-channel model
    assert abs(latency_removed(wide, wide, {INPUT: x})) < 0.5


def test_cli_budget_without_holdout_does_not_claim_the_default_went_unchecked(tmp_path):
    model_path, calib_path = save_inputs(tmp_path, lenet_like(), n=32)
    common = [str(model_path), "--calib", str(calib_path), "--holdout", "0", "--quiet"]
    default = CliRunner().invoke(main, [common[0], str(tmp_path / "a.onnx"), *common[1:]])
    budget = CliRunner().invoke(main, [common[0], str(tmp_path / "b.onnx"), *common[1:], "--target-sparsity", "0.5",
                                       "--tolerance", "20", "--search-samples", "0"])
    assert default.exit_code == 0 and "default --eps-l2 was used unchecked" in default.output
    assert budget.exit_code == 0, budget.output
    assert "unchecked" not in budget.output


def test_cli_budget_and_unreachable_budget(tmp_path):
    model_path, calib_path = save_inputs(tmp_path, lenet_like(), n=32)
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(main, [str(model_path), str(out), "--calib", str(calib_path), "--target-sparsity",
                                       "0.99", "--max-trials", "2", "--search-samples", "0", "--quiet"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error: budget 99.0% of the parameters removed")
    assert "the closest was" in lines[0] and "--eps-l2" in lines[0]
    assert not out.exists()


# --- per-layer controls --------------------------------------------------------------------------------


def test_min_keep_is_a_floor_for_every_layer():
    model = chain()
    x = random_inputs(model, 16)
    _, loose = prune(model, x, eps_l2=20)
    _, floored = prune(model, x, eps_l2=20, min_keep=0.5)
    assert any(layer.channels_after < layer.channels_before / 2 for layer in loose.layers)
    for layer in floored.layers:
        assert layer.channels_after >= math.ceil(layer.channels_before / 2), layer.name


@pytest.mark.parametrize("model", [chain(), resnet50_like()], ids=["chain", "residual"])
def test_round_channels_keeps_a_multiple_of_it_in_every_layer(model):
    x = random_inputs(model, 24)
    _, loose = prune(model, x, eps_l2=3)
    _, rounded = prune(model, x, eps_l2=3, round_channels=4)
    assert any(layer.channels_after % 4 and layer.channels_after < layer.channels_before for layer in loose.layers)
    loose_after = {layer.name: layer.channels_after for layer in loose.layers}
    for layer in rounded.layers:
        assert layer.channels_after % 4 == 0 or layer.channels_after == layer.channels_before, layer.name
    # Rounded up from the selection: the first unit (decided on the same statistics) keeps at least as many.
    first = rounded.layers[0]
    assert first.channels_after >= loose_after[first.name]


def test_round_channels_must_be_a_positive_integer(tmp_path):
    with pytest.raises(ConfigError, match="round_channels"):
        PruneConfig(round_channels=0)
    model, calib = save_inputs(tmp_path)
    result = CliRunner().invoke(main, [str(model), str(tmp_path / "out.onnx"), "--calib", str(calib),
                                       "--round-channels", "0"])
    assert result.exit_code == 2 and "--round-channels" in result.output


def test_layer_eps_changes_that_unit_only():
    model = chain()
    base, scaled = unit_prices(model), unit_prices(model, layer_eps={"conv2": 0.1})
    # conv2's output channels are the unit that conv3 reads first
    assert scaled == {**base, "conv3": pytest.approx(0.1 * base["conv3"])} and scaled["conv3"] != base["conv3"]
    # End to end: conv2 keeps more, the layers before it are decided exactly as without the factor.
    x = random_inputs(model, 16)
    _, plain = prune(model, x, eps_l2=2)
    _, spared = prune(model, x, eps_l2=2, layer_eps={"conv2": 0.01})
    after = {layer.name: layer.channels_after for layer in plain.layers}
    spared_after = {layer.name: layer.channels_after for layer in spared.layers}
    assert spared_after["conv2"] > after["conv2"]
    assert spared_after["conv1"] == after["conv1"]


def test_layer_eps_errors_are_one_line():
    x = random_inputs(lenet_like(), 8)
    with pytest.raises(ConfigError, match="no Conv/Gemm/MatMul layer is named 'nope'"):
        prune(lenet_like(), x, layer_eps={"nope": 0.5})
    with pytest.raises(ConfigError, match="output channels of 'fc2' are not pruned"):
        prune(lenet_like(), x, layer_eps={"fc2": 0.5})
    resnet = build(["residual", "residual"])  # conv1 (stem) and conv3 (a block's last) are tied by the Add
    with pytest.raises(ConfigError, match="'conv1' and 'conv3' produce tied channels"):
        prune(resnet, random_inputs(resnet, 8), layer_eps={"conv1": 0.5, "conv3": 2})


def test_layer_eps_cli_syntax(tmp_path):
    model_path, calib_path = save_inputs(tmp_path, lenet_like(), n=8)
    result = CliRunner().invoke(main, [str(model_path), str(tmp_path / "o.onnx"), "--calib", str(calib_path),
                                       "--layer-eps", "conv2"])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("onnxprune: error: --layer-eps conv2: expected NODE=F with a factor F >= 0, "
                                     "e.g. /features/0/Conv=0.5")


def test_mac_pricing_weighs_high_resolution_layers_up():
    model = chain()
    by_params, by_macs = unit_prices(model, pricing="params"), unit_prices(model, pricing="macs")
    # conv2 reads conv1's channels (12x12 outputs); fc reads fc_hidden's (one multiply-accumulate per weight)
    ratio = lambda eps: eps["conv2"] / eps["fc"]  # noqa: E731
    assert ratio(by_macs) > 10 * ratio(by_params)


def test_budget_error_lives_with_the_other_errors():
    from onnxprune import errors
    from onnxprune.search import budget

    assert BudgetError is errors.BudgetError is budget.BudgetError and issubclass(BudgetError, ConfigError)
    assert BudgetError("x", closest=None).closest is None
