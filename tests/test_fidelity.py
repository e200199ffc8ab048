"""Held-out fidelity (issue 16): the split, the measure, the guarded default search and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import onnxprune
from builders import INPUT, lenet_like, random_inputs, save_inputs
from onnxprune.api import calibration_sets
from onnxprune.calib.data import held_out_count, loaded_samples, split_held_out
from onnxprune.cli import main
from onnxprune.config import PruneConfig
from onnxprune.measure.fidelity import has_scores, measure_fidelity
from onnxprune.report import Fidelity, OutputFidelity, Report
from onnxprune.search.guard import MAX_TRIALS_DOWN, FidelityBound, find_guarded


# --- the split -------------------------------------------------------------------------------


@pytest.mark.parametrize("loaded, max_samples, holdout, held", [
    (1280, 1024, 256, 256),  # enough beyond the statistics' samples: those, the statistics unchanged
    (1100, 1024, 256, 256),  # some beyond: 1/4 of all is more, at most holdout
    (1024, 1024, 256, 256),  # none beyond: 1/4 carved out
    (1024, 1024, 2048, 256),
    (512, 1024, 256, 128),
    (63, 1024, 256, 16),  # 1/4 is too few to judge by: the least that says something
    (32, 1024, 256, 16),
    (31, 1024, 256, 0),  # too few to spare that many
    (127, 1024, 8, 0),  # fewer asked for than can say anything
    (1280, 1024, 0, 0),  # none asked for
    (1000, None, 256, 250),  # all samples for the statistics: 1/4 carved out
])
def test_held_out_count(loaded, max_samples, holdout, held):
    assert held_out_count(loaded, max_samples, holdout) == held


def test_split_is_disjoint_seeded_and_keeps_order():
    x = np.arange(1280, dtype=np.float32).reshape(1280, 1)
    sets = split_held_out({"x": x}, 1024, 256, seed=3)
    fit, held = sets.fit["x"][:, 0], sets.held["x"][:, 0]
    assert len(fit) == 1024 and len(held) == 256
    assert not set(fit) & set(held) and set(fit) | set(held) == set(range(1280))
    assert np.all(np.diff(fit) > 0) and np.all(np.diff(held) > 0)
    again = split_held_out({"x": x}, 1024, 256, seed=3)
    assert np.array_equal(again.held["x"], sets.held["x"])
    assert not np.array_equal(split_held_out({"x": x}, 1024, 256, seed=4).held["x"], sets.held["x"])


def test_calibration_sets_take_held_out_beyond_the_subset():
    model = lenet_like()
    x = random_inputs(model, 60)
    sets = calibration_sets(model, x, PruneConfig(max_samples=40, holdout=16))
    assert len(sets.fit[INPUT]) == 40 and len(sets.held[INPUT]) == 16
    assert loaded_samples(40, 16) == 56
    none = calibration_sets(model, x, PruneConfig(max_samples=40, holdout=0))
    assert len(none.fit[INPUT]) == 40 and len(none.held[INPUT]) == 0


# --- the measure -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape, expected", [((4, 10), True), ((4, 10, 1, 1), True), ((4, 1, 10), True),
                                             ((4, 1), False), ((4, 3, 8, 8), False), ((4,), False)])
def test_has_scores(shape, expected):
    assert has_scores(shape) is expected


def test_fidelity_of_the_same_model_is_perfect_and_of_another_is_not():
    model, other = lenet_like(seed=0), lenet_like(seed=1)
    held = {INPUT: random_inputs(model, 20)}
    same = measure_fidelity(model, model, held)
    assert same.samples == 20 and same.disagreement == 0.0 and same.relative_error == 0.0
    assert same.loss_estimate == 0.0
    differ = measure_fidelity(model, other, held)
    assert differ.relative_error > 0.1 and differ.outputs[0].top1_agreement is not None
    assert differ.disagreement > 0 and 0 < differ.loss_estimate <= differ.disagreement
    assert measure_fidelity(model, other, {INPUT: held[INPUT][:0]}) is None


@pytest.mark.parametrize("cache_mb", [256, 0])
def test_a_meter_measures_every_candidate_as_a_fresh_measure_does(cache_mb):
    """The original's outputs are kept between candidates (or, past the cap, computed again)."""
    from onnxprune.measure.fidelity import FidelityMeter
    model = lenet_like(seed=0)
    held = {INPUT: random_inputs(model, 40)}
    meter = FidelityMeter(model, held, batch_size=16, cache_mb=cache_mb)
    for seed in (1, 2, 1):
        candidate = lenet_like(seed=seed)
        assert meter(candidate) == measure_fidelity(model, candidate, held, batch_size=16)
    assert (meter.cached is not None) == (cache_mb > 0)


def test_prune_reports_fidelity_on_the_held_out_samples():
    model = lenet_like()
    x = random_inputs(model, 60)
    _, report = onnxprune.prune(model, x, eps_l2=1.0, max_samples=40, holdout=20)
    assert report.fidelity is not None and report.fidelity.samples == 20
    assert 0 <= report.fidelity.disagreement <= 1 and report.fidelity.relative_error >= 0
    assert "fidelity" in report.to_dict()
    _, report = onnxprune.prune(model, x, eps_l2=1.0, max_samples=40, holdout=0)
    assert report.fidelity is None


def test_loss_estimate_weighs_a_change_by_the_original_confidence():
    """A flip away from a confident decision costs about a sample; between two equally likely classes, nothing."""
    from onnxprune.measure.fidelity import _probabilities
    confident, torn = np.log([[0.98, 0.01, 0.01]]), np.log([[0.45, 0.45, 0.10]])
    for scores, cost in ((confident, 0.97), (torn, 0.0)):
        p = _probabilities(scores)
        assert p[0, 0] - p[0, 1] == pytest.approx(cost, abs=1e-9)
    probabilities = np.array([[0.7, 0.2, 0.1]])  # a softmax inside the model: taken as they are
    assert np.array_equal(_probabilities(probabilities), probabilities)


def test_bound_takes_the_worst_measure_of_every_output():
    bound = FidelityBound(max_loss=0.005, max_disagreement=0.02, max_relative_error=0.1)
    scores = OutputFidelity("logits", relative_error=9.0, top1_agreement=0.97, loss_estimate=0.001)
    assert bound.excess(Fidelity(10_000, [scores], 0.03, 9.0, 0.001)) == pytest.approx(1.5)  # disagreement binds
    confident = OutputFidelity("logits", relative_error=9.0, top1_agreement=0.99, loss_estimate=0.01)
    assert bound.excess(Fidelity(10_000, [confident], 0.01, 9.0, 0.01)) == pytest.approx(2.0)  # the estimate binds
    heads = [OutputFidelity("logits", 0.5, 1.0, 0.0), OutputFidelity("boxes", 0.05)]
    assert bound.excess(Fidelity(10_000, heads, 0.0, 0.5, 0.0)) == pytest.approx(0.5)  # a map: its relative error
    detector = [OutputFidelity("boxes_and_scores", 0.01, map_agreement=0.9)]  # max_map_disagreement 0.05
    assert bound.excess(Fidelity(10_000, detector, None, 0.01, None, 0.9)) == pytest.approx(2.0)


def _detections(rng, n=64, anchors=200):
    """A YOLOv8-style output (N, 4 box rows in pixels + 3 class-score rows, anchors)."""
    boxes = rng.uniform(0, 640, (n, 4, anchors))
    scores = rng.uniform(0, 1, (n, 3, anchors)) ** 4  # mostly low, some detections
    return np.concatenate([boxes, scores], axis=1)


def test_map_agreement_sees_the_scores_a_relative_error_drowns():
    from onnxprune.measure.fidelity import MAP_THRESHOLDS, MapAgreement, _relative
    rng = np.random.default_rng(0)
    original = _detections(rng)
    pruned = original.copy()
    pruned[:, 4:] = np.clip(pruned[:, 4:] + rng.normal(0, 0.15, pruned[:, 4:].shape), 0, 1)  # scores move
    meter = MapAgreement()
    for batch in range(0, 64, 16):  # batch by batch, as the meter is fed
        meter.add(original[batch:batch + 16], pruned[batch:batch + 16])
    dice = []
    for t in MAP_THRESHOLDS:
        mine, theirs = original[:, 4:] > t, pruned[:, 4:] > t
        dice.append(2 * (mine & theirs).sum() / (mine.sum() + theirs.sum()))
    assert meter.agreement() == pytest.approx(min(dice))
    assert meter.agreement() < 0.9
    # The box coordinates dominate the norm: the relative error barely sees the scores change.
    error = _relative(float(np.square(pruned - original).sum()), float(np.square(original).sum()))
    assert error < 0.01


def test_map_agreement_is_none_without_score_slices_and_one_for_the_same_maps():
    from onnxprune.measure.fidelity import MapAgreement
    rng = np.random.default_rng(1)
    logits = MapAgreement()
    logits.add(rng.normal(0, 3, (8, 5, 10)), rng.normal(0, 3, (8, 5, 10)))
    assert logits.agreement() is None  # no slice lies in [0, 1]
    same = MapAgreement()
    text_map = rng.uniform(0, 1, (4, 1, 16, 16))  # DBNet's probability map: the feature axis is a spatial one
    same.add(text_map, text_map)
    assert same.agreement() == 1.0


def _detector(seed: int = 0):
    """Convs, then a box head (4 rows, pixels) and a class-score head (3 rows, Sigmoid) concatenated
    as (N, 7, anchors), YOLOv8's layout."""
    from topologies import Net
    net = Net(seed)
    x = net.conv_bn(INPUT, 3, 8)
    x = net.conv_bn(x, 8, 12)
    boxes = net.node("Mul", "to_pixels", [net.conv("box_head", x, 12, 4, k=1, pad=0, bias=True),
                                          net.const("stride", np.float32(64.0))])
    scores = net.node("Sigmoid", "score_act", [net.conv("score_head", x, 12, 3, k=1, pad=0, bias=True)])
    both = net.node("Concat", "heads", [boxes, scores], axis=1)
    net.node("Reshape", "flatten_anchors", [both, net.const("anchors", np.array([0, 7, -1]))], output="detections")
    return net.model_io("detector", ["batch", 3, 16, 16], ["batch", 7, 256], output="detections")


def test_a_detector_prune_reports_and_is_bounded_by_its_score_map_agreement():
    model = _detector()
    x = random_inputs(model, 96)
    _, report = onnxprune.prune(model, x, eps_l2=4.0, max_samples=64, holdout=32)
    fidelity = report.fidelity
    assert fidelity.loss_estimate is None and fidelity.disagreement is None  # not a classifier
    assert 0 <= fidelity.map_agreement <= 1 and fidelity.outputs[0].map_agreement == fidelity.map_agreement
    assert fidelity.map_agreement < 0.99  # random weights at ε_L2 4: positives move
    strict = FidelityBound(max_relative_error=10.0, max_map_disagreement=(1 - fidelity.map_agreement) / 2)
    assert strict.excess(fidelity) == pytest.approx(2.0)  # the map binds though the error does not
    assert "map_agreement" in json.dumps(report.to_dict())


# --- the search, on a model of fidelity against ε_L2 ------------------------------------------


def _search(excess_at, removed_at=lambda eps: min(1.0, 0.5 + 0.1 * math.log(eps + 1)), *, start=0.8,
            max_trials=3, held=1024):
    """find_guarded with a fake prune whose estimated loss is excess_at(eps) * the bound."""
    bound = FidelityBound(max_loss=0.005, max_trials=max_trials)
    feeds = {"x": np.zeros((4, 1))}

    def prune_once(feeds, config, say):
        params = 1000
        after = round(params * (1 - removed_at(config.eps_l2)))
        return config.eps_l2, Report(params_before=params, params_after=after, macs_before=1, macs_after=1, seconds=0)

    def fidelity_of(model):
        loss = 0.005 * excess_at(model)
        return Fidelity(held, [OutputFidelity("y", 0.0, 1 - 2 * loss, loss)], 2 * loss, 0.0, loss)

    return find_guarded(bound, PruneConfig(eps_l2=start), feeds, prune_once, fidelity_of, lambda line: None)


def test_search_returns_the_sparsest_trial_within_the_bound():
    eps, report = _search(lambda eps: eps / 2 + 0.1)  # within the bound up to ε_L2 = 1.8
    guard = report.guard
    assert guard.met and eps <= 1.8 and eps == guard.eps_l2 and len(guard.trials) == 3
    assert eps == max(t.eps_l2 for t in guard.trials if t.loss_estimate <= 0.005)
    assert eps > 0.8  # it went stronger than the start, which was within the bound
    assert report.fidelity is not None and report.fidelity.loss_estimate <= 0.005


def test_search_goes_weaker_until_a_trial_is_within_the_bound():
    eps, report = _search(lambda eps: eps / 0.01)  # within the bound only below ε_L2 = 0.01
    assert report.guard.met and eps <= 0.01
    assert len(report.guard.trials) > 3  # max_trials does not stop the search before a faithful trial


def test_search_says_when_no_trial_is_within_the_bound():
    eps, report = _search(lambda eps: 5.0)
    assert not report.guard.met and len(report.guard.trials) == MAX_TRIALS_DOWN


def test_too_few_held_out_samples_give_one_cautious_prune_not_a_search():
    # 16 of 16 unchanged decisions would pass the 2 % bound, but allow a true 13 % changed.
    eps, report = _search(lambda eps: 0.0, held=16)
    guard = report.guard
    assert not guard.met and guard.samples_needed == FidelityBound().samples_needed() == 76
    assert [t.eps_l2 for t in guard.trials] == [0.8, 0.2] and eps == 0.2
    eps, report = _search(lambda eps: 0.0, held=76)  # enough to show zero changes means few
    assert report.guard.met and report.guard.samples_needed is None and eps > 0.8


def test_few_held_out_samples_must_also_bound_the_true_disagreement():
    from onnxprune.search.guard import disagreement_limit
    bound = FidelityBound()
    assert disagreement_limit(0, 16) == pytest.approx(1 - 0.1 ** (1 / 16))  # 90 % one-sided, no change seen
    agree = OutputFidelity("y", 0.0, 1.0, 0.0)  # none of 64 changed: 0 %, but the limit is 3.5 % > 1.5 x 2 %
    assert bound.excess(Fidelity(64, [agree], 0.0, 0.0, 0.0)) == pytest.approx(disagreement_limit(0, 64) / 0.03)
    assert bound.excess(Fidelity(64, [agree], 0.0, 0.0, 0.0)) > 1
    two = OutputFidelity("y", 0.0, 1 - 2 / 128, 0.0)  # 2 of 128 changed: 1.6 %, within 2 %, but the limit is 4.1 %
    assert bound.excess(Fidelity(128, [two], 2 / 128, 0.0, 0.0)) > 1
    many = OutputFidelity("y", 0.0, 1 - 20 / 1024, 0.0)  # 20 of 1,024: the point bound binds, not the limit
    assert bound.excess(Fidelity(1024, [many], 20 / 1024, 0.0, 0.0)) == pytest.approx((20 / 1024) / 0.02)


def test_search_stops_where_pruning_saturates():
    eps, report = _search(lambda eps: 0.0, removed_at=lambda eps: 0.9)
    assert report.guard.met and len(report.guard.trials) == 2 and eps == 0.8  # ties go to the weaker ε_L2


# --- the command line ------------------------------------------------------------------------


def test_cli_default_searches_the_strength_and_reports_fidelity(tmp_path):
    model_path, calib_path = save_inputs(tmp_path, n=400)
    result = CliRunner().invoke(main, [str(model_path), str(tmp_path / "out.onnx"), "--calib", str(calib_path),
                                       "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.stderr
    assert "strength trial 1 (eps_l2 0.8): " in result.stderr
    assert "strength:   --eps-l2" in result.stdout
    assert "on 100 held-out calibration samples" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["fidelity"]["samples"] == 100 and report["guard"]["trials"]
    assert report["guard"]["samples_needed"] is None


def test_cli_default_with_too_few_held_out_samples_prunes_cautiously_and_says_so(tmp_path):
    model_path, calib_path = save_inputs(tmp_path, n=128)  # 32 held out: fewer than the 76 needed
    result = CliRunner().invoke(main, [str(model_path), str(tmp_path / "out.onnx"), "--calib", str(calib_path),
                                       "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["guard"]["samples_needed"] == 76 and report["guard"]["eps_l2"] == 0.2
    assert [t["eps_l2"] for t in report["guard"]["trials"]] == [0.8, 0.2]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("onnxprune: warning:")]
    assert len(warnings) == 1 and "only 32 held-out samples" in warnings[0] and "unchecked" in warnings[0]


def test_cli_explicit_strength_warns_beyond_the_bound(tmp_path):
    model_path, calib_path = save_inputs(tmp_path, n=128)
    result = CliRunner().invoke(main, [str(model_path), str(tmp_path / "out.onnx"), "--calib", str(calib_path),
                                       "--eps-l2", "1000", "--max-relative-error", "1e-9", "--max-loss", "1e-9"])
    assert result.exit_code == 0, result.stderr
    assert "strength trial" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("onnxprune: warning:")]
    assert len(warnings) == 1 and "beyond the bound" in warnings[0]
