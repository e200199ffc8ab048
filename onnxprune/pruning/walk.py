"""The pruning walk: layers in topological order; each unit is decided at its first consumer.

At a unit's first consumer the walk has the pruned network's activations there (everything
above is already pruned and reconstructed). The unit's other consumers lie further down, where
the pruned network has not been reconstructed yet, so their regressions use the original
network's statistics, gathered for all of them in one streamed forward pass before the walk.
One joint GES solve over those regressions picks the unit's channels; they are removed from
every producer, tensor and consumer at once; then each layer, when the walk reaches it, is
refit on the pruned network's actual inputs to reproduce the original layer's kept outputs.

A grouped Conv (``Layer.groups`` = g) is g regressions, output group k on input group k: its
statistics, its part in the joint solve and its refit are per group, and its weight is written
back block by block, (out, in/g, kh, kw).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.calib.record import LayerRecorder, layer_statistics, original_statistics
from onnxprune.calib.runner import SegmentRunner
from onnxprune.calib.store import MB, ActivationStore, same_values
from onnxprune.config import PruneConfig
from onnxprune.pruning.allocation import keep_at_least, unit_eps_l2  # ε_L2 pricing, per-layer floors
from onnxprune.graph.channels import ChannelGraph, Unit
from onnxprune.ops import RULES, Layer, output_gain
from onnxprune.pruning.reuse import TrialMemo
from onnxprune.pruning.rewrite import remove_classes, set_weights
from onnxprune.pruning.select import Candidates, choose
from onnxprune.pruning.costs import CostModel, Ladders
from onnxprune.solve.ladder import error_ladder
from onnxprune.solve.problem import LayerProblem, NormalisedProblem, normalise
from onnxprune.solve.refit import refit


UnitEps = Callable[[ChannelGraph, list[Unit], PruneConfig], dict[int, float]]


class Pruner:
    """The walk's state: both networks, their runners over one activation store, the units and
    which are decided. ``unit_eps`` gives each unit's ε_L2 (allocation.unit_eps_l2 by default;
    studies of the allocation pass their own)."""

    def __init__(self, original: gs.Graph, pruned: gs.Graph, channels: ChannelGraph,
                 feeds: dict[str, np.ndarray], config: PruneConfig, *, unit_eps: UnitEps = unit_eps_l2,
                 keep_counts: dict[int, int] | None = None, ladders: Ladders | None = None) -> None:
        self.original, self.pruned, self.channels, self.config = original, pruned, channels, config
        self.feeds = feeds
        self.original_layers = {node.name: Layer(node) for node in original.nodes}
        self.original_maps = {name: ids.copy() for name, ids in channels.maps.items()}
        self.units = channels.units()
        self.unit_of = {layer.name: unit for unit in self.units for layer in unit.consumers}
        self.decided: set[int] = set()
        # Channel classes GES dropped but the graph's constraints kept (equal counts per group).
        self.kept_by_constraint: set[int] = set()
        self.eps_l2 = unit_eps(channels, self.units, config)
        # An allocation's keep count per unit (search/allocate.py) instead of GES's threshold, and
        # where to record each unit's error ladder for one (solve/ladder.py); both optional.
        self.keep_counts, self.ladders = keep_counts, ladders
        if ladders is not None:
            # From the channels as analysed, before any removal.
            ladders.cost = CostModel(original, channels, self.units, ladders.metric)
        # Two random streams, so that the look-ahead can be reused by another trial (TrialMemo)
        # without changing the pixels the walk draws.
        walk_seed, lookahead_seed = np.random.SeedSequence(config.seed).spawn(2)
        self.rng = np.random.default_rng(walk_seed)
        self.lookahead_rng = np.random.default_rng(lookahead_seed)
        # Both runners share one store, so the memory budget covers both networks' activations;
        # the calibration inputs are shared, not copied.
        self.store = ActivationStore(memory_limit=config.activation_memory_mb * MB, directory=config.activation_dir,
                                     batch_size=config.batch_size)
        inputs = {name: self.store.wrap(array) for name, array in feeds.items()}
        self.runner_original = SegmentRunner(original, inputs, self.store, batch_size=config.batch_size)
        self.runner_pruned = SegmentRunner(pruned, inputs, self.store, batch_size=config.batch_size)
        self.timings = {"statistics": 0.0, "solve": 0.0, "refit": 0.0, "rewrite": 0.0}
        self.lookahead: dict[str, list[LayerProblem]] = {}

    def gather_lookahead(self, memo: TrialMemo | None = None) -> None:
        """One streamed pass over the original network: the statistics of every unit's later
        readers (call it once, before the first step); ``memo`` keeps them for the next trial."""
        self.lookahead = (self._lookahead_statistics() if memo is None
                          else memo.lookahead(self.feeds, self.config, self._lookahead_statistics))

    def close(self) -> None:
        """Remove the activations kept on disk; call it however the walk ends."""
        self.store.close()

    def __enter__(self) -> "Pruner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def step(self, layer: Layer) -> str:
        """Decide the layer's unit if this is its first consumer, then refit the layer."""
        self.runner_original.advance_to(layer.name)
        self.runner_pruned.advance_to(layer.name)
        unit = self.unit_of.get(layer.name)
        if unit is not None and unit.index not in self.decided:
            return self._decide(unit, layer)
        return self._refit(layer)

    @property
    def forward_seconds(self) -> float:
        return self.runner_original.seconds + self.runner_pruned.seconds

    def all_timings(self) -> dict[str, float]:
        """Seconds per phase; the forward passes and statistics include the store's disk I/O (store_io)."""
        return dict(self.timings, forward=self.forward_seconds, forward_original=self.runner_original.seconds,
                    forward_pruned=self.runner_pruned.seconds, store_io=self.store.io_seconds)

    def _recorder(self, layer: Layer, channel_of_feature: np.ndarray, n_channels: int, out_rows=None, *,
                  rng: np.random.Generator | None = None) -> LayerRecorder:
        return LayerRecorder(self.original_layers[layer.name], channel_of_feature, n_channels,
                             n_images=len(next(iter(self.feeds.values()))),
                             rows_per_layer=self.config.rows_per_layer, rng=rng or self.rng, out_rows=out_rows)

    def _unit_features(self, unit: Unit, layer: Layer, maps: dict[str, np.ndarray]) -> np.ndarray:
        """The unit-local channel of each of the layer's input features."""
        local = unit.local_index
        channels = np.array([local[int(c)] for c in self.channels.root_of[maps[layer.node.inputs[0].name]]])
        return np.repeat(channels, layer.kernel_size)

    def _lookahead_statistics(self) -> dict[str, list[LayerProblem]]:
        requests = {}
        for unit in self.units:
            n = len(unit.classes) + len(unit.frozen_classes)
            for layer in unit.consumers[1:]:
                recorder = self._recorder(layer, self._unit_features(unit, layer, self.original_maps), n,
                                          rng=self.lookahead_rng)
                requests[layer.name] = (layer.node.inputs[0].name, recorder)
        if not requests:
            return {}
        start = time.perf_counter()
        problems = original_statistics(self.original, self.feeds, requests, self.config.batch_size)
        self.timings["lookahead"] = time.perf_counter() - start
        return problems

    def _decide(self, unit: Unit, first: Layer) -> str:
        """Choose the unit's channels at its first reader, remove the others everywhere, refit the reader."""
        self.decided.add(unit.index)
        t0 = time.perf_counter()
        rows_before = self._out_rows(first)
        problems = self._unit_problems(unit, first, rows_before)
        t1 = time.perf_counter()
        scores, keep, floor, how = self._choose(unit, problems)
        self.timings["statistics"] += t1 - t0
        self.timings["solve"] += time.perf_counter() - t1
        removed = self._remove(unit, keep, scores, floor)
        group_problems, rows = problems[0], self._out_rows(first)
        if rows is not None:  # the layer feeds its own input (y = x + conv(x)): its outputs just shrank
            group_problems = restrict_targets(group_problems, rows if rows_before is None else rows[rows_before])
        self._install(first, group_problems, keep)
        shared = f", jointly with {len(unit.consumers) - 1} later layers" if len(unit.consumers) > 1 else ""
        return (f"{len(unit.classes)} -> {len(unit.classes) - removed.size} channels "
                f"({group_problems[0].n_samples} rows, {how}{shared})")

    def _unit_problems(self, unit: Unit, first: Layer, rows_before: np.ndarray | None) -> list[list[LayerProblem]]:
        """The regressions of every reader of the unit (one per group of a grouped Conv): the
        first on the pruned network's actual inputs, the later ones from the look-ahead pass over
        the original network."""
        n_unit = len(unit.classes) + len(unit.frozen_classes)
        problems = self._statistics(first, self._unit_features(unit, first, self.channels.maps), n_unit, rows_before)
        later = [self.lookahead.pop(layer.name) for layer in unit.consumers[1:]]
        # A later consumer's outputs were decided earlier if it is also a producer of this unit.
        later = [restrict_targets(p, rows) if (rows := self._out_rows(layer)) is not None else p
                 for p, layer in zip(later, unit.consumers[1:])]
        return [problems] + later

    def _choose(self, unit: Unit, problems: list[list[LayerProblem]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """(scores, keep mask over the unit's local channels, the channels the ``--min-keep`` floor
        added to it, what was done). The solve sees every group of every reader as one regression."""
        normalised = [n for groups, layer in zip(problems, unit.consumers)
                      for n in normalise_groups(groups, output_gain(layer))]
        flat = [p for groups in problems for p in groups]
        candidates = Candidates(unit, flat, normalised, self.eps_l2[unit.index], partial(self._producer_rows, unit),
                                lambda: [w for layer, groups in zip(unit.consumers, problems)
                                         for w in self._original_weight(layer, [p.n_features for p in groups])],
                                keep_count=None if self.keep_counts is None else self.keep_counts.get(unit.index))
        scores, chosen, how = choose(candidates, self.config)
        if self.ladders is not None:
            self.ladders.errors[unit.index] = error_ladder(normalised, np.argsort(-scores, kind="stable"),
                                                    len(unit.classes), ridge=self.config.ridge)
        keep = keep_at_least(chosen, scores, unit, self.channels, self.config.min_keep,
                             self.config.round_channels)
        keep[len(unit.classes):] = True  # frozen channels take part in the regression but stay
        return scores, keep, keep & ~chosen, how

    def _remove(self, unit: Unit, keep: np.ndarray, scores: np.ndarray, floor: np.ndarray) -> np.ndarray:
        """Remove the classes ``keep`` drops from the pruned graph and its cached activations;
        the removed classes. ``keep`` is changed in place where a tensor would lose every channel
        and where the groups of a grouped Conv would lose unequal counts (the nearest equal
        decision may also drop a few kept channels, never those of the ``floor``)."""
        removed = unit.classes[~keep[:len(unit.classes)]]
        index = unit.local_index
        for classes in self.channels.emptied(removed):
            # No tensor may lose all its channels: keep its best one (a tensor can be part of a unit).
            local = [index[int(c)] for c in classes]
            keep[local[int(np.argmax(scores[local]))]] = True
            removed = unit.classes[~keep[:len(unit.classes)]]
        # Constraints of the graph (a grouped Conv's groups lose the same count): the nearest equal decision.
        n = len(unit.classes)
        feasible = self.channels.feasible(removed, {int(c): float(scores[index[int(c)]]) for c in unit.classes},
                                          spare=unit.classes[keep[:n] & ~floor[:n]])
        if not np.array_equal(np.sort(feasible), np.sort(removed)):
            self.kept_by_constraint.update(int(c) for c in np.setdiff1d(removed, feasible))
            keep[:n] = ~np.isin(unit.classes, feasible)
            removed = unit.classes[~keep[:n]]
        if removed.size:
            start = time.perf_counter()
            keep_of = remove_classes(self.channels, self.pruned, removed)
            for name, mask in keep_of.items():
                self.runner_pruned.drop_channels(name, mask)
            self.timings["rewrite"] += time.perf_counter() - start
        return removed

    def _producer_rows(self, unit: Unit) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each layer producing some of the unit's channels: (original weight rows, unit channel of each row or -1)."""
        rows = []
        for layer in self.channels.layers:
            original = self.original_layers[layer.name]
            output = original.node.outputs[0].name
            if output not in self.original_maps:
                continue
            roots = self.channels.root_of[self.original_maps[output]]
            local = np.array([unit.local_index.get(int(r), -1) for r in roots])
            if (local >= 0).any():
                rows.append((original.weight.reshape(original.out_channels, -1), local))
        originals = {node.name: node for node in self.original.nodes}
        for name, coupling in self.channels.couplings.items():  # producers nothing refits (ConvTranspose)
            node = originals.get(name)
            if not coupling.fresh or node is None or node.outputs[0].name not in self.original_maps:
                continue
            weight = RULES[node.op].producer_rows(node)
            local = np.array([unit.local_index.get(int(r), -1)
                              for r in self.channels.root_of[self.original_maps[node.outputs[0].name]]])
            if weight is not None and weight.shape[0] == local.size and (local >= 0).any():
                rows.append((weight, local))
        return rows

    def _original_weight(self, layer: Layer, n_features: list[int]) -> list[np.ndarray]:
        """The original layer's weight on the outputs and input features that still exist, one
        block per group (``n_features``: the features of each group's problem)."""
        original = self.original_layers[layer.name]
        groups = original.groups
        weight = original.weight.reshape(original.out_channels, -1)
        rows, columns = self._out_rows(layer), self._surviving(layer.node.inputs[0].name)
        blocks = []
        for k, (block, n) in enumerate(zip(np.split(weight, groups), n_features)):
            if rows is not None:
                block = block[np.split(rows, groups)[k]]
            if columns is not None and n != block.shape[1]:
                block = block[:, np.repeat(np.split(columns, groups)[k], layer.kernel_size)]
            blocks.append(block)
        return blocks

    def _refit(self, layer: Layer) -> str:
        if too_wide := layer.too_wide(self.config.max_features):
            return too_wide  # its input may have changed a little upstream; a refit would not fit in memory
        name = layer.node.inputs[0].name
        reason = self.channels.frozen_reason(layer)
        if reason and same_values(self.runner_pruned.cache[name], self.runner_original.cache[name]):
            return f"unchanged input, kept as is ({reason})"
        channels = np.arange(layer.in_channels)
        t0 = time.perf_counter()
        problems = self._statistics(layer, np.repeat(channels, layer.kernel_size), channels.size, self._out_rows(layer))
        self.timings["statistics"] += time.perf_counter() - t0
        self._install(layer, problems, np.ones(channels.size, dtype=bool))
        why = f"frozen: {reason}" if reason else "channels decided earlier"
        groups = f" in {layer.groups} groups" if layer.groups > 1 else ""
        return f"refit on {layer.in_channels} input channels{groups} ({problems[0].n_samples} rows, {why})"

    def _statistics(self, layer: Layer, channel_of_feature: np.ndarray, n_channels: int,
                    out_rows=None) -> list[LayerProblem]:
        """The layer's regressions (one per group) on the pruned network's input at it."""
        name = layer.node.inputs[0].name
        recorder = self._recorder(layer, channel_of_feature, n_channels, out_rows)
        return layer_statistics(recorder, self.runner_pruned.cache[name], self.runner_original.cache[name],
                                self.config.batch_size)

    def _out_rows(self, layer: Layer) -> np.ndarray | None:
        """Which of the original layer's outputs still exist (None: all of them)."""
        return self._surviving(layer.node.outputs[0].name)

    def _surviving(self, tensor: str) -> np.ndarray | None:
        """Which of the tensor's original channels still exist (None: all, or untracked)."""
        if tensor not in self.channels.maps or self.channels.maps[tensor].size == self.original_maps[tensor].size:
            return None
        return np.isin(self.original_maps[tensor], self.channels.maps[tensor])

    def _install(self, layer: Layer, problems: list[LayerProblem], keep: np.ndarray) -> None:
        """Refit the layer on the problems' kept channels (group by group) and write the weights
        into the graph."""
        start = time.perf_counter()
        # Shrink towards the original weights, on the outputs and inputs that still exist.
        priors = (self._original_weight(layer, [p.n_features for p in problems]) if self.config.refit_prior
                  else [None] * len(problems))
        fits = [refit(p, keep, ridge=self.config.ridge, prior=prior) for p, prior in zip(problems, priors)]
        widths = {weight.shape[1] for weight, _ in fits}
        if len(widths) != 1:  # ChannelGraph.feasible keeps every group's count equal
            raise ValueError(f"'{layer.name}': the groups keep {sorted(widths)} input features, not the same count")
        weight = np.concatenate([w for w, _ in fits])
        bias = np.concatenate([b for _, b in fits])
        shape = layer.weight.shape
        set_weights(layer, weight.reshape(weight.shape[:1] + (-1,) + shape[2:]), bias)
        self.timings["refit"] += time.perf_counter() - start


def restrict_targets(problems: list[LayerProblem], rows: np.ndarray) -> list[LayerProblem]:
    """The same regressions for a subset of their targets (``rows`` over all of them, group after
    group, each group losing the same count)."""
    return [replace(p, cross=p.cross[r], target_var=p.target_var[r], y_mean=p.y_mean[r])
            for p, r in zip(problems, np.split(np.asarray(rows), len(problems)))]


def normalise_groups(problems: list[LayerProblem], gain: np.ndarray | None) -> list[NormalisedProblem]:
    """Normalise one layer's regressions. A grouped layer's g block regressions together weigh as
    the layer's one regression would: each group's term is scaled by its share of the layer's
    (gain-weighted) target variance, so that their sum is the block-diagonal restriction of the
    layer's normalised regression (same targets scale, 1/m over all the layer's targets)."""
    if len(problems) == 1:
        return [normalise(problems[0], gain)]
    gains = [None] * len(problems) if gain is None else np.split(np.asarray(gain), len(problems))
    normalised = [normalise(p, g) for p, g in zip(problems, gains)]
    variance = np.array([float(np.sum((1.0 if g is None else np.abs(g)) ** 2 * p.target_var))
                         for p, g in zip(problems, gains)])
    total = float(variance.sum())
    share = variance / total if total > 0 else np.full(len(problems), 1.0 / len(problems))
    return [replace(n, cross=(n.cross * np.sqrt(s)).astype(n.cross.dtype), target_var=n.target_var * s,
                    target_scale=n.target_scale * np.sqrt(s))
            for n, s in zip(normalised, share)]
