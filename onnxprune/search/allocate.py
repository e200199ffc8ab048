"""Allocation under a MAC (or parameter) budget: every unit's keep count chosen at once from its error ladder.

One global ε_L2 prices every unit's channels alike (up to the MAC pricing's factor), whatever a
channel's error costs there. Here each unit instead brings its ladder (solve/ladder.py: the refit's
error at every keep count, on one scale across units) and the counts are chosen together to
minimise the summed error under the budget, as SPDY and OBC choose sparsity levels: greedily, the
step (of one or a few channels) that removes the most MACs per unit of error added, until the
budget is met, the MACs of a choice counted by pruning/costs.py's CostModel.

:func:`find_allocation` runs it: one walk at the configured ε_L2 records the ladders (GES's path
order ranks each unit's channels), a second keeps the allocated counts, each unit's channels again
ranked by its own GES solve on the pruned network's inputs there. Where the graph's constraints
move the MACs off the target, the next walk aims off by the miss, from the ladders the last walk
recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx

from onnxprune.config import PruneConfig
from onnxprune.errors import BudgetError
from onnxprune.pruning.costs import CostModel, Ladders
from onnxprune.report import Report, SearchReport, Trial

# Steps the greedy looks at per unit: 1, 2, ... this many channels (times the rounding multiple),
# so that a ladder that falls only after a small rise is not passed over.
MAX_STEPS = 8
MAX_AIM = 0.995  # the most of the MACs (or parameters) an allocation aims to remove


# prune_once(feeds, config, progress, keep_counts=..., ladders=...) with the model bound.
AllocatedPrune = Callable[..., tuple[onnx.ModelProto, Report]]


def find_allocation(metric: str, target: float, tolerance: float, max_walks: int, config: PruneConfig,
                    feeds: dict[str, np.ndarray], prune_once: AllocatedPrune, say: Callable[[str], None],
                    recorded: Ladders | None = None,
                    latency: Callable[[onnx.ModelProto], float] | None = None) -> tuple[onnx.ModelProto, Report, Ladders]:
    """Remove ``target`` of the MACs (``metric`` "macs"), of the parameters ("params") or of the
    measured latency ("latency", timed by ``latency``) ± ``tolerance`` by allocating every unit's
    keep count under a budget of MACs (parameters for "params"): the model, its report
    (``report.search`` lists the walks) and the ladders recorded last (a sweep passes them back as
    ``recorded`` for its next budget, which then skips the first walk). The fraction aimed at
    starts at the target and moves by a secant on what the walks measured (the constraints' miss;
    for latency, how far MACs are from speed)."""
    samples = len(next(iter(feeds.values())))
    trials: list[Trial] = []

    def walk(keep: dict[int, int] | None) -> tuple[onnx.ModelProto, Report, Ladders, float | None]:
        number = len(trials) + 1
        what = "keeping the allocated counts" if keep is not None else f"recording error ladders at eps_l2 {config.eps_l2:g}"
        say(f"budget walk {number}: {what} on {samples} samples")
        started, ladders = time.perf_counter(), Ladders(metric=counted, samples=samples)
        model, report = prune_once(feeds, config, lambda line: say("  " + line), keep_counts=keep, ladders=ladders)
        measured = round(latency(model), 4) if latency is not None and keep is not None else None
        trials.append(Trial(eps_l2=config.eps_l2, samples=samples, params_removed=round(report.params_removed, 6),
                            macs_removed=round(report.macs_removed, 6),
                            seconds=round(time.perf_counter() - started, 3), latency_removed=measured,
                            allocated=keep is not None))
        speed = "" if measured is None else f"{1 / (1 - measured):.2f}x measured speed-up, "
        say(f"budget walk {number}: {speed}{report.params_removed:.1%} of the parameters, {report.macs_removed:.1%} of "
            f"the MACs removed ({trials[-1].seconds:.0f}s)")
        value = {"macs": report.macs_removed, "params": report.params_removed}.get(metric, measured)
        return model, report, ladders, value

    counted = "params" if metric == "params" else "macs"  # what the allocation's budget counts
    usable = recorded is not None and recorded.samples == samples and recorded.metric == counted
    ladders = recorded if usable else walk(None)[2]
    least = {key: math.ceil(config.min_keep * size - 1e-9) for key, size in ladders.cost.size.items()}
    aims, values, best, walked = [target], [], None, []
    for _ in range(max_walks):
        keep = allocate(ladders.errors, ladders.cost, (1 - aims[-1]) * ladders.cost.total, least=least,
                        multiple=config.round_channels, slack=tolerance * ladders.cost.total)
        if keep in walked:  # the aim moved, the counts did not: another walk would repeat one
            break
        walked.append(keep)
        model, report, ladders, value = walk(keep)
        values.append(value)
        if best is None or abs(value - target) < abs(best[0] - target):
            best = (value, trials[-1])
        if abs(value - target) <= tolerance:
            search = SearchReport(metric=metric, target=target, tolerance=tolerance, eps_l2=config.eps_l2,
                                  samples=samples, trials=trials, allocation="ladder")
            return model, replace(report, search=search), ladders
        aims.append(_next_aim(aims, values, target))
    what = {"macs": "of the MACs", "params": "of the parameters"}.get(metric, "of the latency")
    why = (f"in {max_walks} walks (raise --max-trials or --tolerance)" if len(walked) == max_walks
           else "and no other counts come closer (a channel moves it by more than the tolerance, or every "
                "prunable channel is already gone)")
    raise BudgetError(f"allocated keep counts removed {best[0]:.1%} {what} at best, not {target:.1%} ± "
                      f"{100 * tolerance:g} pt, {why}", best[1])


def _next_aim(aims: list[float], values: list[float], target: float) -> float:
    """The fraction to aim at next: a secant through the last two walks, else off by the miss."""
    if len(values) >= 2 and abs(values[-1] - values[-2]) > 1e-6:
        slope = (aims[-1] - aims[-2]) / (values[-1] - values[-2])
        if slope > 0:
            return float(min(max(aims[-1] + slope * (target - values[-1]), 0.0), MAX_AIM))
    return float(min(max(aims[-1] + target - values[-1], 0.0), MAX_AIM))


def allocate(ladders: dict[int, np.ndarray], model: CostModel, budget: float, *,
             least: dict[int, int] | None = None, multiple: int = 1, slack: float = math.inf) -> dict[int, int]:
    """Keep counts per unit (of its prunable channels) whose summed ladder error is smallest,
    greedily, with the model's cost at most ``budget`` and, if a step allows, at least ``budget``
    - ``slack`` (or as close as ``least``, the fewest each unit may keep, allows). Units without a
    ladder keep every channel."""
    keep = dict(model.size)
    least = least or {}
    floor = {key: max(1, least.get(key, 1)) for key in keep}
    # A step changes the cost of the units that share a term with it: only their best steps move.
    neighbours = {key: {other for other in ladders if set(model.terms_of[other]) & set(model.terms_of[key])}
                  for key in ladders}
    best = {key: _best_step(key, ladders[key], model, keep, floor[key], multiple) for key in ladders}
    cost = model.cost(keep)
    while cost > budget:
        options = [(step[0], key) for key, step in best.items() if step is not None]
        if not options:
            break  # every unit at its floor: the closest the ladders allow
        _, key = min(options)
        _, new, saved = best[key]
        if cost - saved <= budget:
            keep = _last_step(keep, key, new, model, budget, slack, floor, multiple, ladders)
            break
        keep[key] = new
        cost -= saved
        for other in neighbours[key]:
            best[other] = _best_step(other, ladders[other], model, keep, floor[other], multiple)
    return keep


def _counts_down(k: int, floor: int, multiple: int) -> list[int]:
    """The counts one step below k: 1 to MAX_STEPS channels (or multiples of ``multiple``), not under ``floor``."""
    counts = []
    for j in range(1, MAX_STEPS + 1):
        new = _rounded_down(k, j * multiple, multiple)
        if new < floor:
            break
        counts.append(new)
    return counts


def _last_step(keep: dict[int, int], key: int, new: int, model: CostModel, budget: float, slack: float,
               floor: dict[int, int], multiple: int, ladders: dict[int, np.ndarray]) -> dict[int, int]:
    """The counts after the step that meets the budget: the cheapest step's smallest count that
    does; if that lands more than ``slack`` under the budget (a wide layer's channel can be worth
    more than the tolerance), the step of any unit within the slack that adds the least error;
    failing that, the one that lands closest."""
    trimmed = next(counts for counts in ({**keep, key: k} for k in _counts_down(keep[key], floor[key], multiple))
                   if counts[key] <= new or model.cost(counts) <= budget)
    if model.cost(trimmed) >= budget - slack:
        return trimmed
    meeting = [(model.cost(counts), counts) for counts in _single_steps(keep, floor, multiple, ladders)]
    meeting = [(c, counts) for c, counts in meeting if c <= budget]
    close = [(sum(float(ladders[u][counts[u]] - ladders[u][keep[u]]) for u in ladders), counts)
             for c, counts in meeting if c >= budget - slack]
    if close:
        return min(close, key=lambda e: e[0])[1]
    return max(meeting, key=lambda m: m[0], default=(0.0, trimmed))[1]


def _single_steps(keep: dict[int, int], floor: dict[int, int], multiple: int, units) -> list[dict[int, int]]:
    """The counts after one step of one of the units."""
    return [{**keep, key: new} for key in units for new in _counts_down(keep[key], floor[key], multiple)]


def _best_step(key: int, ladder: np.ndarray, model: CostModel, keep: dict[int, int], floor: int,
               multiple: int) -> tuple[float, int, float] | None:
    """The unit's cheapest step down: (error added per unit of cost removed, new count, cost removed)."""
    k, best = keep[key], None
    current = model.unit_cost(key, keep)
    for new in _counts_down(k, floor, multiple):
        saved = current - model.unit_cost(key, {**keep, key: new})
        if saved <= 0:
            continue
        price = max(float(ladder[new] - ladder[k]), 0.0) / saved
        if best is None or price < best[0]:
            best = (price, new, saved)
    return best


def _rounded_down(k: int, step: int, multiple: int) -> int:
    """k - step, on a multiple of ``multiple`` (the rounding counts the layer's whole width;
    here the unit's: exact for a unit that is one layer's output)."""
    new = k - step
    return new if multiple <= 1 else int(math.floor(new / multiple) * multiple)
