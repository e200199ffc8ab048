"""The benchmark tool's pure parts: knob matching, mean ± sd, BN folding, tables, the page and the README block.

Runs without ../shared and without onnxsim or matplotlib (the measuring code that needs them,
tools/benchlib/run.py, is not exercised here; tools/bench.py runs it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from benchlib import plan, render, tables  # noqa: E402
from bnfold import fold_batchnorm  # noqa: E402


def staircase(steps: int):
    """A monotone step function of a knob in [0, 1), like parameters removed vs a ratio."""
    calls = []

    def removed(knob: float) -> float:
        calls.append(knob)
        return np.floor(knob * steps) / steps
    return removed, calls


@pytest.mark.parametrize("target", [0.05, 0.333, 0.5, 0.871, 0.95])
def test_match_knob_reaches_target_within_tolerance(target):
    removed, calls = staircase(200)
    knob, got, trials = plan.match_knob(removed, target, tol=0.01)
    assert abs(got - target) <= 0.01
    assert removed(knob) == got  # the knob returned gives what it says
    assert len(trials) <= 14 and len(calls) == len(trials) + 1


def test_match_knob_coarse_steps_return_the_closest():
    removed, _ = staircase(4)  # 0, 0.25, 0.5, 0.75: 0.6 cannot be met within 1 pt
    knob, got, trials = plan.match_knob(removed, 0.6, tol=0.01)
    assert got == 0.5
    assert all(abs(r - 0.6) >= abs(got - 0.6) for _, r in trials)


def test_match_knob_out_of_reach_gives_the_end():
    knob, got, trials = plan.match_knob(lambda k: 0.5 * k, 0.9, tol=0.01)
    assert knob == 0.99 and got == pytest.approx(0.495) and len(trials) <= 4


def test_match_knob_uses_the_guess_and_few_trials_on_a_smooth_curve():
    curve = lambda k: 1 - (1 - k) ** 2  # noqa: E731  (a uniform fraction kept of inputs and outputs)
    knob, got, trials = plan.match_knob(curve, 0.871, guess=1 - 0.129 ** 0.5)
    assert len(trials) == 1 and abs(got - 0.871) <= 0.01
    knob, got, trials = plan.match_knob(curve, 0.871)  # no guess: interpolation from the ends
    assert len(trials) <= 8 and abs(got - 0.871) <= 0.01


def test_mean_sd_and_format():
    assert tables.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample sd (n - 1)
    assert tables.mean_sd([4.2]) == (4.2, None)
    assert tables.fmt_mean_sd([99.13, 99.15, 99.11]) == "99.13 ± 0.02"
    assert tables.fmt_mean_sd([0.1234]) == "0.12"
    assert tables.fmt_mean_sd([87.06, 87.14], 1, " %") == "87.1 ± 0.1 %"
    with pytest.raises(ValueError):
        tables.mean_sd([])


def test_replace_block_keeps_the_rest():
    text = "intro\n<!-- bench:start -->\nold\ntable\n<!-- bench:end -->\nrest\n"
    out = render.replace_block(text, "| new |")
    assert out == "intro\n<!-- bench:start -->\n| new |\n<!-- bench:end -->\nrest\n"
    assert render.replace_block(out, "| new |") == out
    with pytest.raises(ValueError):
        render.replace_block("no markers", "x")


def _run(method, budget, draw, loss, removed=0.8):
    return {"method": method, "budget": budget, "draw": draw, "loss_pt": loss, "params_removed": removed,
            "top1_after": 99.0 - loss, "knob": None}


def test_headline_marks_the_best_and_counts_draws():
    runs = [_run("ges", 0.8, d, 0.1 + 0.02 * d) for d in range(3)]
    runs += [_run("l1", 0.8, d, 0.5) for d in range(3)]
    runs += [_run("onnxsim-l2", 0.8, 0, 0.05)]
    results = {"lenet5_mnist": {"runs": {str(i): r for i, r in enumerate(runs)}}}
    head = tables.headline_rows(results)
    assert len(head) == 3
    row = head[2]
    assert row.startswith("| LeNet-5 / MNIST | 0.8 | 80.0 ± 0.0 % | 0.12 ± 0.02 | 0.50 ± 0.00 | – | **0.05** | – | 1 |")
    ahead, behind = tables.verdicts(results)
    assert not ahead and len(behind) == 1 and "onnxsim L2 0.05 pt" in behind[0] and "not yet run" in behind[0]


def _mac_run(method, draw, loss, macs_removed, speedup, target=0.5):
    return {**_run(method, target, draw, loss, removed=0.7), "match": "macs", "macs_removed": macs_removed,
            "latency": [{"batch": 1, "ms_before": 2.0 * speedup, "ms_after": 2.0}]}


def test_mac_matched_runs_have_their_own_table_and_stay_out_of_the_parameter_headline():
    runs = [{**_run("ges", 0.5, d, 0.2), "latency": [{"batch": 1, "ms_before": 2.0, "ms_after": 1.0}]}
            for d in range(2)]  # a parameter-matched point at eps_l2 0.5 ...
    runs += [_mac_run("ges", d, 0.6 + 0.2 * d, 0.50, 1.9) for d in range(2)]  # ... and a MAC target of 0.5
    runs += [_mac_run("l1", d, 1.1, 0.505, 2.1) for d in range(2)]
    runs += [_mac_run("onnxsim-l2", 0, 9.0, 0.45, 2.5)]  # not within the tolerance: says where it was
    results = {"resnet18_cifar10": {"runs": {str(i): r for i, r in enumerate(runs)}}}
    head = tables.headline_rows(results)
    assert len(head) == 3 and "| **0.20 ± 0.00** | – | – | – | – | 2 |" in head[2]  # only the eps_l2 point, GES alone
    rows = tables.mac_rows(results)
    assert len(rows) == 3
    assert rows[2].startswith("| ResNet-18 / CIFAR-10 | 50 % | **0.70 ± 0.14**, 70.0 %, 1.90× | 1.10 ± 0.00, 70.0 %, 2.10× | – |")
    assert "9.00 (at 45.0 % MACs), 70.0 %, 2.50×" in rows[2] and rows[2].endswith("| 1 |")
    assert tables.speed_verdicts(results) == [
        "- ResNet-18 / CIFAR-10 at 50 % of the MACs: GES loses 0.70 pt, the best peer (L1 + recon.) 1.10 pt"]
    runs.append(_mac_run("lasso", 0, 0.8, 0.5, 2.0))  # closer to GES than GES's own spread
    verdict = tables.speed_verdicts({"resnet18_cifar10": {"runs": {str(i): r for i, r in enumerate(runs)}}})
    assert verdict[0].endswith("the best peer (LASSO + recon.) 0.80 pt (within the spread over draws, ± 0.14: a tie)")
    runs.pop()
    runs.append(_mac_run("lasso", 0, 0.3, 0.5, 2.0))
    verdict = tables.speed_verdicts({"resnet18_cifar10": {"runs": {str(i): r for i, r in enumerate(runs)}}})
    assert verdict[0].endswith("GES loses 0.70 pt; smaller: LASSO + recon. 0.30 pt")


def test_loss_at_speedup_interpolates_between_measured_points_and_never_extrapolates():
    runs = [{**_run("l1", b, 0, loss), "latency": [{"batch": 1, "ms_before": s, "ms_after": 1.0}]}
            for b, loss, s in ((0.4, 1.0, 1.5), (0.8, 3.0, 2.5))]
    runs.append(_mac_run("l1", 0, 2.0, 0.5, 2.0))  # MAC-matched points join the same curve
    curve = tables.speedup_curve(runs, "l1")
    assert [c[0] for c in curve] == [1.5, 2.0, 2.5]
    assert tables.loss_at_speedup(curve, 1.75) == pytest.approx(1.5)
    assert tables.loss_at_speedup(curve, 2.25) == pytest.approx(2.5)
    assert tables.loss_at_speedup(curve, 1.4) is None and tables.loss_at_speedup(curve, 3.0) is None
    ges = [_mac_run("ges", 0, 0.5, 0.5, 2.25), _mac_run("ges", 0, 0.5, 0.6, 3.0, target=0.6)]
    results = {"vgg16_cifar10": {"runs": {str(i): r for i, r in enumerate(runs + ges)}}}
    rows = tables.speedup_rows(results)  # read at GES's speed-ups; 3.0× is past L1's points: no row
    assert rows[2:] == ["| VGG-16 / CIFAR-10 | 2.25× | **0.50** | 2.50 | – | – | – |"]


def test_run_keys_tell_the_matched_points_apart():
    assert plan.run_key("l1", 0.5, 2) == "l1|eps_l2=0.5|draw=2"
    assert plan.run_key("l1", 0.5, 2, "macs") == "l1|macs=0.5|draw=2"
    assert plan.match_of({"budget": 0.5}) == "params" and plan.match_of({"match": "macs"}) == "macs"


def _measured(method, draw, loss):
    """A run record as tools/benchlib/run.py writes it, with figures no real run has."""
    return {**_run(method, 0.8, draw, loss, removed=0.6), "seed": draw + 5, "samples": 2048, "top1_after": 77.7 - loss,
            "knob": None if method == "ges" else {"name": "keep_fraction", "value": 0.5},
            "macs_removed": 0.3, "seconds": 3.0, "peak_rss_mb": 100.0, "load_average": 3.3,
            "latency": [{"batch": b, "ms_before": 2.0, "ms_after": 1.0, "threads": 4} for b in plan.BATCHES],
            "date": "2030-01-02 03:04", "cpus": 3, "onnxsim": "v9.9.9", "onnxruntime": "8.8.8",
            "onnxprune_commit": "abcdefa", "onnxprune_dirty": False}


def test_page_prose_has_only_the_cache_figures():
    runs = [_measured("ges", 0, 0.25), _measured("l1", 0, 0.75)]
    results = {"vgg16_cifar10": {"model": "vgg16_cifar10", "matches": {}, "runs": {str(i): r for i, r in enumerate(runs)},
                                 "baseline": {"top1": 77.7, "test_samples": 512, "params": 1000, "macs": 5000}}}
    text = render.page(results)
    for computed in ("2,048 random *training* images, seeds 5)", "full\n512-image test set", "CPU, 4 threads,",
                     "VGG-16 / CIFAR-10 77.70 %", "coverage (v9.9.9)", "on a 3-core machine", "onnxruntime 8.8.8"):
        assert computed in text
    for typed in ("10,000", "86.40", "84.69", "93 %", "1e-6", "0.09 %", "0.12 %", "500-neuron", "x86-64", "nice -n"):
        assert typed not in text
    prose = [line for line in text.splitlines() if line and not line.startswith(("|", "    ", "#", "- "))]
    names = r"LeNet-5|VGG-16|ResNet-18|CIFAR-10|ε_L2|L[12]\b|conv\d|fc\d|1-minute|vgg16_cifar10|Horenko 2024"
    figures = {n for line in prose for n in re.findall(r"\d[\d,.]*\d|\d", re.sub(names, "", line))}
    from_cache = {"2,048", "5", "512", "4", "77.70", "9.9.9", "8.8.8", "3", "3.3", "1,000", "5,000",
                  "2030", "01", "02", "03", "04"}
    from_plan = {"0", f"{100 * plan.MATCH_TOL:g}", f"{plan.KNOB_MAX:g}"}  # draw 0 is the target; the search's bounds
    assert figures <= from_cache | from_plan, figures - from_cache - from_plan


def _conv_bn_model(with_bias: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c_in, c_out = 3, 4
    inits = [numpy_helper.from_array(rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 2, c_out).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2, c_out).astype(np.float32), "var")]
    conv_inputs = ["x", "w"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "b"))
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Identity", ["beta"], ["beta_alias"], name="alias"),  # as PyTorch's exporter shares values
             helper.make_node("BatchNormalization", ["c", "gamma", "beta_alias", "mean", "var"], ["bn"],
                              epsilon=1e-3, name="bn"),
             helper.make_node("Relu", ["bn"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c_in, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c_out, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_batchnorm_gives_equal_outputs(with_bias):
    model = _conv_bn_model(with_bias)
    folded, count = fold_batchnorm(model)
    onnx.checker.check_model(folded)
    assert count == 1
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu"]
    assert {i.name for i in folded.graph.initializer} == {"conv.folded_weight", "conv.folded_bias"}
    x = np.random.default_rng(1).standard_normal((5, 3, 6, 6)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run(folded), run(model), rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_leaves_a_shared_conv_output_alone():
    model = _conv_bn_model(False)
    model.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 4, 6, 6]))
    folded, count = fold_batchnorm(model)
    assert count == 0 and [n.op_type for n in folded.graph.node].count("BatchNormalization") == 1
