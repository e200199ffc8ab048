"""Channel coupling: which channels of which tensors are the same, and are kept or removed together.

Every tracked tensor carries a vector of channel ids, one per index of its channel axis (axis 1;
for a tensor flattened to (N, C*H*W), one per feature, so a channel's id repeats H*W times). A
layer gives its output fresh ids; an op's entry (``onnxprune/ops``) gives each other node's outputs the ids
its inputs carry, concatenated, cut or shared; an element-wise op over several tensors (a
residual Add) declares the ids it combines equal, in a union-find. After the walk one root id is
one *class*: channels of several tensors that exist together or not at all.

A class is frozen (always kept) when it reaches something that cannot drop a channel: a graph
input or output, an op without a rule, an excluded layer. A *unit* is a set of prunable classes
whose fate one joint regression decides: the classes its consumer layers read, closed under
"read by a common consumer" (a residual stage is one unit; a DenseNet block's concatenations
make one unit too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ops import RULES, Coupling, Layer, as_layer

# ChannelGraph.feasible: what removing a class the selector kept costs, against 1 for keeping back
# one it dropped (above 1: the nearest feasible decision keeps back rather than adds on a tie),
# and how long the 0/1 program may take before the greedy keep-back is used.
SPARE_COST = 1.25
MILP_SECONDS = 30.0


class UnionFind:
    """Disjoint sets over the integers handed out by :meth:`fresh`."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def fresh(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the older id stays the root

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


@dataclass(eq=False)
class Unit:
    """Prunable classes decided together, and the layers whose regressions decide them."""

    classes: np.ndarray  # root ids, prunable
    consumers: list[Layer]  # topological order
    frozen_classes: np.ndarray  # frozen root ids the consumers also read (kept, part of the regression)
    index: int = 0  # position in ChannelGraph.units(): the unit's key in per-unit tables

    @property
    def local_index(self) -> dict[int, int]:
        """Position of each class in the unit's solve: prunable classes first, then frozen ones."""
        return {int(c): i for i, c in enumerate(np.concatenate([self.classes, self.frozen_classes]))}


@dataclass
class ChannelGraph:
    """The result of the walk; ``maps`` always describes the graph as currently rewritten."""

    maps: dict[str, np.ndarray] = field(default_factory=dict)  # tensor name -> channel ids
    root_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    frozen: dict[int, str] = field(default_factory=dict)  # root -> why it is kept
    couplings: dict[str, Coupling] = field(default_factory=dict)  # node name -> rule result
    nodes: dict[str, gs.Node] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)  # topological order
    skipped: dict[str, str] = field(default_factory=dict)  # linear nodes that are not layers, why
    shapes: dict[str, tuple] = field(default_factory=dict)  # the analysed graph's tensor shapes

    def classes(self, tensor_name: str) -> np.ndarray | None:
        ids = self.maps.get(tensor_name)
        return None if ids is None else self.root_of[ids]

    def input_classes(self, layer: Layer) -> np.ndarray | None:
        """Class of each input channel (Conv) or feature (Gemm) of the layer, None if untracked."""
        classes = self.classes(layer.node.inputs[0].name)
        return classes if classes is not None and classes.size == layer.in_channels else None

    def frozen_reason(self, layer: Layer) -> str | None:
        """Why none of the layer's input channels can be pruned (None when some can)."""
        classes = self.input_classes(layer)
        if classes is None:
            return f"the channels of '{layer.node.inputs[0].name}' are not tracked"
        reasons = [self.frozen.get(int(c)) for c in np.unique(classes)]
        return None if any(r is None for r in reasons) else reasons[0]

    def output_kept_reason(self, layer: Layer) -> str | None:
        """Why every output channel of the layer stays whatever GES decides (None: some can go):
        they are frozen downstream (a graph output, a producer nothing refits, an op without a
        rule), or no layer GES refits reads them, so no unit decides them."""
        name = layer.node.outputs[0].name
        classes = self.classes(name)
        if classes is None:
            return f"the channels of '{name}' are not tracked"
        classes = np.unique(classes)
        reasons = [self.frozen.get(int(c)) for c in classes]
        if all(r is not None for r in reasons):
            return reasons[0]
        read = [self.input_classes(other) for other in self.layers]
        read = np.concatenate([c for c in read if c is not None] or [np.zeros(0, dtype=np.int64)])
        open_classes = [c for c, r in zip(classes, reasons) if r is None]
        if not np.isin(open_classes, read).any():
            return f"no layer that GES refits reads the channels of '{name}'"
        return None

    def units(self) -> list[Unit]:
        """Connected components of (layer, prunable class) reads, in order of first consumer."""
        reads = {}
        for layer in self.layers:
            classes = self.input_classes(layer)
            if classes is not None:
                reads[layer.name] = np.unique(classes)
        readers: dict[int, list[str]] = {}
        for name, classes in reads.items():
            for c in classes:
                if int(c) not in self.frozen:
                    readers.setdefault(int(c), []).append(name)
        order = {layer.name: i for i, layer in enumerate(self.layers)}
        by_name = {layer.name: layer for layer in self.layers}
        seen: set[str] = set()
        units = []
        for layer in self.layers:
            if layer.name in seen or self.frozen_reason(layer) is not None:
                continue
            members, stack = set(), [layer.name]
            while stack:
                name = stack.pop()
                if name in members:
                    continue
                members.add(name)
                stack.extend(r for c in reads[name] if int(c) in readers for r in readers[int(c)])
            seen |= members
            classes = np.unique(np.concatenate([reads[m] for m in members]))
            is_frozen = np.array([int(c) in self.frozen for c in classes], dtype=bool)
            consumers = sorted((by_name[m] for m in members), key=lambda l: order[l.name])
            units.append(Unit(classes[~is_frozen], consumers, classes[is_frozen], len(units)))
        return units

    def emptied(self, removed: np.ndarray) -> list[np.ndarray]:
        """The classes of each tensor that would lose every channel if ``removed`` went (a Concat
        input, a Split output, a layer's whole output can be a part of a unit)."""
        out = []
        for ids in self.maps.values():
            classes = self.root_of[ids]
            if classes.size and np.isin(classes, removed).all():
                out.append(np.unique(classes))
        return out

    def constraints(self) -> list[tuple[str, int, str]]:
        """(tensor, g, who) for every tensor whose channels are g equal blocks that must each lose
        the same count: a grouped Conv's inputs and outputs (``Layer.groups``), a grouped producer's
        output (``Coupling.blocks``)."""
        out = []
        for layer in self.layers:
            if layer.groups > 1:
                who = f"grouped {layer.node.op} '{layer.name}' (group={layer.groups})"
                out.append((layer.node.inputs[0].name, layer.groups, f"{who} reads them"))
                out.append((layer.node.outputs[0].name, layer.groups, f"{who} produces them"))
        for name, coupling in self.couplings.items():
            if coupling.blocks > 1:
                node = self.nodes[name]
                out.append((node.outputs[0].name, coupling.blocks, f"grouped {node.op} '{name}' produces them"))
        return [c for c in out if c[0] in self.maps]

    def feasible(self, removed: np.ndarray, score: Mapping[int, float] | None = None,
                 spare: np.ndarray | None = None) -> np.ndarray:
        """The classes to remove instead of ``removed`` so that every block of a grouped Conv's input
        or output (:meth:`constraints`) loses the same count: ``removed`` itself when it already does.

        Otherwise blocks that would lose more keep back classes, their best-scored ones (by
        ``score``, else their first ones). The constraints interlock (a ShuffleNet's stream is read
        in groups of several widths, and its concatenations shift the blocks), so lowering each
        block to its tensor's smallest count in turn can keep back far more than needed: the
        nearest feasible decision is solved for as a small 0/1 program instead (see
        :meth:`_nearest`), which may also remove a few of the ``spare`` classes (prunable classes
        the caller kept, at SPARE_COST each) where that lets many more of ``removed`` go. The
        result never empties a tensor that ``removed`` left channels in."""
        constraints = self.constraints()
        greedy = self._keep_back(removed, score, constraints)
        if greedy.size == len(removed):
            return greedy
        best = self._nearest(removed, np.zeros(0, dtype=np.int64) if spare is None else spare, score, constraints)
        return greedy if best is None else best

    def _keep_back(self, removed: np.ndarray, score: Mapping[int, float] | None,
                   constraints: list[tuple[str, int, str]]) -> np.ndarray:
        """Greedy: lower every block to its tensor's smallest count, until nothing changes."""
        removed_set = {int(r) for r in removed}
        changed = True
        while changed:  # keeping a class back can change another constrained tensor's counts
            changed = False
            for name, n_blocks, _ in constraints:
                classes = self.root_of[self.maps[name]]
                if classes.size % n_blocks:  # not equal blocks any more: nothing of it may go
                    changed |= bool(removed_set & {int(c) for c in classes})
                    removed_set -= {int(c) for c in classes}
                    continue
                gone = [[int(r) for r in block if int(r) in removed_set] for block in classes.reshape(n_blocks, -1)]
                target = min(len(g) for g in gone)
                for g in gone:
                    if len(g) > target:
                        order = sorted(g, key=lambda r: -score.get(r, 0.0)) if score is not None else g
                        removed_set -= set(order[:len(g) - target])
                        changed = True
        return np.array([r for r in removed if int(r) in removed_set], dtype=np.int64)

    def _nearest(self, removed: np.ndarray, spare: np.ndarray, score: Mapping[int, float] | None,
                 constraints: list[tuple[str, int, str]]) -> np.ndarray | None:
        """The feasible decision nearest to removing ``removed``, by a 0/1 integer program (HiGHS).

        One variable per class of ``removed`` or ``spare`` that a constrained tensor carries (the
        others keep the caller's decision); per constrained tensor one equation per block after
        the first (its count of removed channels equals the first block's); per tensor that could
        lose every channel, a bound that it keeps one. Maximised: each class of ``removed`` that
        goes counts 1, each class of ``spare`` that goes costs SPARE_COST, and small tie-breaks
        keep back the best-scored and take the worst-scored spares first. None when the solver
        finds no solution in time (the caller then keeps back greedily)."""
        from scipy.optimize import LinearConstraint, milp

        wanted = list(dict.fromkeys(int(r) for r in removed))
        extra = [c for c in dict.fromkeys(int(r) for r in spare) if c not in set(wanted)]
        in_constraint = set()
        for name, n_blocks, _ in constraints:
            classes = self.root_of[self.maps[name]]
            if classes.size % n_blocks:
                return None
            in_constraint.update(int(c) for c in classes)
        variables = [c for c in wanted + extra if c in in_constraint]
        column = {c: i for i, c in enumerate(variables)}
        fixed_gone = {c for c in wanted if c not in column}
        n = len(variables)
        rows, lower, upper = [], [], []
        for name, n_blocks, _ in constraints:
            counts = np.zeros((n_blocks, n))
            fixed = np.zeros(n_blocks)
            for k, block in enumerate(self.root_of[self.maps[name]].reshape(n_blocks, -1)):
                for c in block:
                    if int(c) in column:
                        counts[k, column[int(c)]] += 1
                    elif int(c) in fixed_gone:
                        fixed[k] += 1
            for k in range(1, n_blocks):
                if (counts[k] - counts[0]).any() or fixed[k] != fixed[0]:
                    rows.append(counts[k] - counts[0])
                    lower.append(fixed[0] - fixed[k])
                    upper.append(fixed[0] - fixed[k])
        removable = set(column) | fixed_gone
        for classes in {tuple(np.unique(self.root_of[ids])) for ids in self.maps.values() if ids.size}:
            if all(int(c) in removable for c in classes) and any(int(c) in column for c in classes):
                row = np.zeros(n)
                row[[column[int(c)] for c in classes if int(c) in column]] = 1
                rows.append(row)
                lower.append(-np.inf)
                upper.append(len(classes) - 1 - sum(int(c) in fixed_gone for c in classes))
        if not rows:
            return None
        # Tie-breaks (summing to well under one channel): keep back the best-scored, spend the worst-scored spares.
        values = np.array([(score or {}).get(c, 0.0) for c in variables])
        rank = np.empty(n)
        rank[np.lexsort((np.arange(n), -values))] = np.arange(n)  # 0: the best score (ties: the first)
        tie = 0.2 * (1.0 + rank) / (n + 1) ** 2
        is_wanted = np.array([c not in set(extra) for c in variables])
        gain = np.where(is_wanted, 1.0 + tie, -SPARE_COST + tie)
        result = milp(-gain, constraints=LinearConstraint(np.array(rows), lower, upper), integrality=np.ones(n),
                      bounds=(0, 1), options={"time_limit": MILP_SECONDS})
        if result.x is None:
            return None
        gone = {c for c, x in zip(variables, result.x) if x > 0.5} | fixed_gone
        chosen = np.array([c for c in wanted + extra if c in gone], dtype=np.int64)
        if self._keep_back(chosen, None, constraints).size != chosen.size:
            return None  # not feasible after all (rounding): the caller keeps back greedily
        return chosen

    def params_controlled(self, roots: np.ndarray, layer_scale: Mapping[str, float] | None = None) -> float:
        """Parameters that would go if every channel of the given classes went: producer rows (and
        biases), consumer columns, per-channel constants along the way. With ``layer_scale`` each
        layer's parameters count that many times (its output pixels: MACs instead of parameters),
        and the per-channel constants, which cost no MACs, not at all."""
        def count(tensor_name: str) -> int:
            classes = self.classes(tensor_name)
            return 0 if classes is None else int(np.isin(classes, roots).sum())

        total = 0.0
        for layer in self.layers:
            scale = 1.0 if layer_scale is None else layer_scale[layer.name]
            n_in = self.maps.get(layer.node.inputs[0].name)
            if n_in is not None and n_in.size:
                total += scale * count(layer.node.inputs[0].name) * layer.weight.size / n_in.size
            total += scale * count(layer.node.outputs[0].name) * (layer.weight.size / layer.out_channels + 1)
        for name, coupling in self.couplings.items():
            node = self.nodes[name]
            out = node.outputs[0].name
            for constant, axis in coupling.params:
                # A producer's weight (a ConvTranspose) costs MACs; scales and biases cost none.
                cost = 1.0 if layer_scale is None else RULES[node.op].param_macs(node, constant, self.shapes)
                if cost:
                    values = np.asarray(constant.values)
                    total += cost * count(out) * values.size / values.shape[axis]
        return total


def analyse_channels(graph: gs.Graph, shapes: dict[str, tuple],
                     exclude: frozenset[str] = frozenset(), max_features: int | None = None) -> ChannelGraph:
    """Walk the graph in topological order and build the channel classes (see the module doc).
    A layer wider than ``max_features`` (Layer.too_wide) keeps the channels it reads."""
    result = ChannelGraph(shapes=shapes)
    uf = UnionFind()
    frozen_ids: list[tuple[np.ndarray, str]] = []

    def freeze(ids: np.ndarray | None, reason: str) -> None:
        if ids is not None and ids.size:
            frozen_ids.append((ids, reason))

    def fresh_for(tensor: gs.Tensor) -> np.ndarray | None:
        shape = shapes.get(tensor.name)
        if shape is None or len(shape) < 2 or not isinstance(shape[1], (int, np.integer)):
            return None
        ids = uf.fresh(int(shape[1]))
        result.maps[tensor.name] = ids
        return ids

    for tensor in graph.inputs:
        freeze(fresh_for(tensor), f"channels come from graph input '{tensor.name}'")

    for node in graph.nodes:
        result.nodes[node.name] = node
        layer, not_layer = as_layer(node, shapes)
        in_maps = [result.maps.get(t.name) for t in node.inputs]
        if layer is not None:
            result.layers.append(layer)
            out = uf.fresh(layer.out_channels)
            result.maps[node.outputs[0].name] = out
            if layer.name in exclude:
                freeze(out, f"'{layer.name}' is excluded (--exclude)")
                freeze(in_maps[0], f"'{layer.name}' is excluded (--exclude)")
            elif in_maps[0] is not None and in_maps[0].size != layer.in_channels:
                freeze(in_maps[0], f"'{layer.name}' reads {layer.in_channels} channels, its input has {in_maps[0].size}")
            elif max_features is not None and (too_wide := layer.too_wide(max_features)):
                freeze(in_maps[0], too_wide)
            continue
        coupling = _apply_rule(node, in_maps, shapes)
        if isinstance(coupling, str):
            if not_layer:
                result.skipped[node.name] = not_layer
            reason = f"{node.op} '{node.name}': {coupling}"
            for ids in in_maps:
                freeze(ids, reason)
            for tensor in node.outputs:
                freeze(fresh_for(tensor), reason)
            continue
        result.couplings[node.name] = coupling
        for index, n in coupling.fresh.items():  # a producer's new channels
            coupling.outputs[index] = uf.fresh(n)
        for ids, reason in coupling.freeze:
            freeze(ids, reason)
        for tensor, ids in zip(node.outputs, coupling.outputs):
            if ids is not None:
                result.maps[tensor.name] = ids
        for a, b in coupling.unify:
            for i, j in zip(a, b):
                uf.union(i, j)

    for tensor in graph.outputs:
        freeze(result.maps.get(tensor.name), f"tensor '{tensor.name}' is a graph output")
    result.root_of = uf.roots()
    for ids, reason in frozen_ids:
        for root in np.unique(result.root_of[ids]):
            result.frozen.setdefault(int(root), reason)
    _freeze_blocked_groups(result)
    return result


def _freeze_blocked_groups(result: ChannelGraph) -> None:
    """A tensor in equal blocks that must each lose the same count (a grouped Conv's input or
    output) loses none when one of its blocks cannot lose a channel (all of them frozen, or
    unequal blocks): its other channels are frozen too, with that reason, until nothing changes
    (freezing them can block another grouped tensor)."""
    cause: dict[int, str] = {}  # class frozen here -> the reason at the root of it
    changed = True
    while changed:
        changed = False
        for name, n_blocks, who in result.constraints():
            classes = result.classes(name)
            open_ = [int(c) for c in np.unique(classes) if int(c) not in result.frozen]
            if not open_:
                continue
            if classes.size % n_blocks:
                reason = f"{who} in {n_blocks} groups, and its {classes.size} channels do not split equally"
            else:
                blocked = [k for k, block in enumerate(classes.reshape(n_blocks, -1))
                           if all(int(c) in result.frozen for c in block)]
                if not blocked:
                    continue
                first = int(classes.reshape(n_blocks, -1)[blocked[0]][0])
                root = cause.get(first, result.frozen[first])
                reason = (f"{who} in {n_blocks} groups that must lose as many channels each, and group "
                          f"{blocked[0]} cannot lose any ({root})")
                for c in open_:
                    cause[c] = root
            for c in open_:
                result.frozen[c] = reason
            changed = True


def _apply_rule(node: gs.Node, in_maps: list, shapes: dict[str, tuple]) -> Coupling | str:
    rule = RULES.get(node.op)
    if rule is None:
        return "no channel rule for this op"
    if (refused := rule.refuse(node, shapes)) is not None:
        return refused
    data = in_maps[:1] if rule.data_inputs == "first" else [m for m, t in zip(in_maps, node.inputs)
                                                            if not isinstance(t, gs.Constant)]
    if not data or any(m is None for m in (data if rule.all_tracked else data[:1])) and not rule.untracked_ok:
        return "its input channels are not tracked"
    return rule.couple(node, in_maps, shapes)
