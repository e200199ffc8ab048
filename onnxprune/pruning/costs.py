"""What a choice of keep counts costs, and what a walk records for an allocation (search/allocate.py).

:class:`CostModel` gives the MACs or the parameters the model keeps as a function of every unit's
keep count, exactly for layers whose input and output channels each belong to whole units (a
unit's kept channels are then its count) and proportionally otherwise. :class:`Ladders` is what
``prune_once(ladders=...)`` fills: each unit's error ladder (solve/ladder.py) and that cost model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph.channels import ChannelGraph, Unit
from onnxprune.measure.counts import count_params
from onnxprune.ops import node_macs


@dataclass(frozen=True)
class _Term:
    """A piece of the cost as cost * fraction(in) * fraction(out); each fraction is fixed + sum coef_u * k_u."""

    cost: float
    inputs: tuple[float, dict[int, float]] | None  # None: it does not scale with the input channels
    outputs: tuple[float, dict[int, float]]


class CostModel:
    """The model's MACs for a single sample (``metric`` "macs") or its parameters ("params") as a
    function of every unit's keep count."""

    def __init__(self, graph: gs.Graph, channels: ChannelGraph, units: list[Unit], metric: str = "macs") -> None:
        owner = {int(c): unit.index for unit in units for c in unit.classes}
        self.size = {unit.index: len(unit.classes) for unit in units}
        self.terms: list[_Term] = []
        self.base = 0.0  # what no unit changes
        self.terms_of: dict[int, list[int]] = {unit.index: [] for unit in units}
        pieces = _mac_pieces(graph, channels) if metric == "macs" else _param_pieces(channels)
        for cost, inputs, outputs in pieces:
            inputs = None if inputs is None else self._fraction(channels, inputs, owner)
            outputs = self._fraction(channels, outputs, owner)
            touched = set(outputs[1]) | (set(inputs[1]) if inputs is not None else set())
            if not touched:
                self.base += cost
                continue
            for key in touched:
                self.terms_of[key].append(len(self.terms))
            self.terms.append(_Term(cost, inputs, outputs))
        if metric == "params":  # every other constant: counted as the report counts them
            self.base += count_params(graph) - sum(cost for cost, _, _ in _param_pieces(channels))
        self.total = self.base + sum(t.cost for t in self.terms)

    def _fraction(self, channels: ChannelGraph, tensor: str, owner: dict[int, int]) -> tuple[float, dict[int, float]]:
        classes = channels.classes(tensor)
        if classes is None or classes.size == 0:
            return 1.0, {}
        counts: dict[int, int] = {}
        for c in classes:
            key = owner.get(int(c))
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        fixed = (classes.size - sum(counts.values())) / classes.size
        return fixed, {key: count / classes.size / self.size[key] for key, count in counts.items()}

    def term_cost(self, index: int, keep: dict[int, int]) -> float:
        term = self.terms[index]

        def fraction(side):
            fixed, coef = side
            return fixed + sum(c * keep[key] for key, c in coef.items())
        return term.cost * (1.0 if term.inputs is None else fraction(term.inputs)) * fraction(term.outputs)

    def cost(self, keep: dict[int, int]) -> float:
        return self.base + sum(self.term_cost(i, keep) for i in range(len(self.terms)))

    def unit_cost(self, key: int, keep: dict[int, int]) -> float:
        """The cost of the terms the unit's count changes."""
        return sum(self.term_cost(i, keep) for i in self.terms_of[key])


Piece = tuple[float, str | None, str]  # (cost, input tensor it scales with or None, output tensor)


def _mac_pieces(graph: gs.Graph, channels: ChannelGraph) -> list[Piece]:
    """Every node's MACs, with the tensors whose channels they scale with: a refit layer's with
    its input and output channels (its weight loses columns and rows), any other node's with its
    output channels only (a depthwise Conv, whose one filter per channel goes with the channel;
    a producer nothing refits, whose inputs are frozen)."""
    layers = {layer.name for layer in channels.layers}
    pieces = []
    for node in graph.nodes:
        macs = float(node_macs(node, channels.shapes))
        if macs > 0:
            pieces.append((macs, node.inputs[0].name if node.name in layers else None, node.outputs[0].name))
    return pieces


def _param_pieces(channels: ChannelGraph) -> list[Piece]:
    """The parameters that channels control: each layer's weight (input and output channels) and
    bias, and the per-channel constants along the way (a BatchNormalization's, a depthwise or
    transposed convolution's weight), as ChannelGraph.params_controlled finds them."""
    pieces = []
    for layer in channels.layers:
        node = layer.node
        pieces.append((float(layer.weight.size), node.inputs[0].name, node.outputs[0].name))
        if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
            pieces.append((float(np.asarray(node.inputs[2].values).size), None, node.outputs[0].name))
    for name, coupling in channels.couplings.items():
        node = channels.nodes[name]
        for constant, _ in coupling.params:
            pieces.append((float(np.asarray(constant.values).size), None, node.outputs[0].name))
    return pieces


@dataclass
class Ladders:
    """What a walk records for an allocation (``prune_once(ladders=...)``): each unit's error
    ladder, by unit index, and the cost model (``metric``: "macs" or "params") of those units."""

    metric: str = "macs"
    errors: dict[int, np.ndarray] = field(default_factory=dict)
    cost: CostModel | None = None
    samples: int = 0  # calibration samples of the walk that recorded them
