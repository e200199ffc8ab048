"""Per-layer controls of the walk: how hard each unit is pushed (its ε_L2) and the least each layer keeps.

The engine asks two things: the ε_L2 of every unit before the walk (:func:`unit_eps_l2`: one
global value, priced by what the unit controls, times the user's per-layer factors) and, after
each GES solve, which channels to keep on top of the threshold's choice (:func:`keep_at_least`).
"""

from __future__ import annotations

import math

import numpy as np

from onnxprune.config import PruneConfig
from onnxprune.errors import ConfigError
from onnxprune.graph.channels import ChannelGraph, Unit
from onnxprune.ops import Layer


def unit_eps_l2(channels: ChannelGraph, units: list[Unit], config: PruneConfig) -> dict[int, float]:
    """eps_l2 per unit: scaled by (what the unit controls / mean over units) ** param_weighting,
    then by the ``layer_eps`` factor of the layers whose output channels the unit holds.

    With param_weighting = 0 every unit pays the same price; with 1 a unit that controls ten times
    the parameters prunes under ten times the pressure, which moves the pruning to where the
    parameters are (the wide late layers of a VGG, both sides of LeNet's big fc1) and spares the
    small early layers whose errors every later layer inherits. Pricing by MACs instead moves it to
    the high-resolution early layers, where a MAC budget is won.
    """
    scale = _output_pixels(channels.layers, channels.shapes) if config.pricing == "macs" else None
    costs = {unit.index: channels.params_controlled(unit.classes, scale) for unit in units}
    if not costs:
        return {}
    mean = float(np.mean(list(costs.values()))) or 1.0
    factors = _unit_factors(channels, units, config.layer_eps)
    return {key: config.eps_l2 * (cost / mean) ** config.param_weighting * factors.get(key, 1.0)
            for key, cost in costs.items()}


def keep_at_least(keep: np.ndarray, weights: np.ndarray, unit: Unit, channels: ChannelGraph,
                  min_keep: float, multiple: int = 1) -> np.ndarray:
    """``keep`` (over the unit's local channels) widened so that every layer whose output channels
    are in the unit keeps at least ``min_keep`` of them, and a multiple of ``multiple`` of them (or
    all): the added ones are those with the largest GES weights."""
    if min_keep <= 0 and multiple <= 1:
        return keep
    keep = keep.copy()
    index = unit.local_index
    for layer in channels.layers:
        classes = channels.classes(layer.node.outputs[0].name)
        if classes is None or not np.isin(classes, unit.classes).any():
            continue
        local = np.array([index[int(c)] for c in np.unique(classes) if int(c) in index])
        kept = max(math.ceil(min_keep * local.size - 1e-9),  # 0.5 of 3 channels is 2: "at least"
                   int(np.count_nonzero(keep[local])))
        # Rounded on the layer's whole width: its channels outside this unit are decided elsewhere.
        outside = int(np.unique(classes).size) - local.size
        kept = min(-(-(outside + kept) // multiple) * multiple, outside + local.size) - outside
        missing = kept - int(np.count_nonzero(keep[local]))
        if missing > 0:
            dropped = local[~keep[local]]
            keep[dropped[np.argsort(-weights[dropped], kind="stable")[:missing]]] = True
    return keep


def _output_pixels(layers: list[Layer], shapes: dict[str, tuple]) -> dict[str, float]:
    """MACs per weight of each layer: its output pixels (1 for a Gemm/MatMul)."""
    pixels = {}
    for layer in layers:
        uses = layer.rule.uses_per_weight(layer.node, shapes)
        if uses is None:
            raise ConfigError(f"pricing by MACs needs the output size of every layer, and that of "
                              f"'{layer.name}' is not fixed (a dynamic image size)")
        pixels[layer.name] = float(uses)
    return pixels


def _unit_factors(channels: ChannelGraph, units: list[Unit], layer_eps: dict[str, float]) -> dict[int, float]:
    """The per-layer factor of each unit that holds some named layer's output channels."""
    by_name = {layer.name: layer for layer in channels.layers}
    factors: dict[int, tuple[str, float]] = {}
    for name, factor in layer_eps.items():
        layer = by_name.get(name)
        if layer is None:
            raise ConfigError(f"--layer-eps: no Conv/Gemm/MatMul layer is named '{name}' "
                              "(the names are in the summary's first column)")
        classes = channels.classes(layer.node.outputs[0].name)
        unit = next((u for u in units if classes is not None and np.isin(classes, u.classes).any()), None)
        if unit is None:
            reason = channels.frozen.get(int(classes[0])) if classes is not None and classes.size else None
            raise ConfigError(f"--layer-eps: the output channels of '{name}' are not pruned"
                              + (f" ({reason})" if reason else ""))
        other = factors.setdefault(unit.index, (name, factor))
        if other[1] != factor:
            # Tied channels (a residual stage) share one ε_L2: two factors for them would contradict.
            raise ConfigError(f"--layer-eps: '{other[0]}' and '{name}' produce tied channels, which are pruned "
                              f"together, but get different factors ({other[1]:g} and {factor:g})")
    return {key: factor for key, (_, factor) in factors.items()}
