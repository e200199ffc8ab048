"""Apply pruning decisions to the graph: remove channels, install reconstructed weights.

All edits go through onnx-graphsurgeon constants, each by the op's own entry in ``onnxprune.ops``;
channel counts of intermediate tensors are left unset here and inferred again when the model is
exported.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph.channels import ChannelGraph
from onnxprune.ops import RULES, Edit, Layer, absorb_bias


def remove_classes(channels: ChannelGraph, graph: gs.Graph, removed: np.ndarray) -> dict[str, np.ndarray]:
    """Remove every channel of the given classes from every tensor that carries one.

    Producers lose weight rows (and bias entries), consumers lose weight columns (their refit
    weights come later, from :func:`set_weights`), per-channel constants lose entries, and the ops
    that name channel counts (depthwise group, Split sizes, Slice bounds, a flattening Reshape's
    target) are updated. Returns the keep mask of each tensor that lost channels; ``channels.maps``
    is updated to match.
    """
    removed = channels.feasible(removed)  # the walk asks for feasible sets; a caller that does not gets one
    keep_of = {}
    for name, ids in channels.maps.items():
        keep = ~np.isin(channels.root_of[ids], removed)
        if not keep.all():
            keep_of[name] = keep
    edit = Edit(keep_of, lambda name: channels.maps[name].size, graph.opset)
    layers = {layer.name: layer for layer in channels.layers}
    for node in graph.nodes:
        if node.name in layers:
            layers[node.name].rule.shrink_layer(node, edit.keep(node.inputs[0]), edit.keep(node.outputs[0]))
        elif node.name in channels.couplings:
            RULES[node.op].shrink(node, channels.couplings[node.name], edit)
    for name, keep in keep_of.items():
        channels.maps[name] = channels.maps[name][keep]
    return keep_of


def set_weights(layer: Layer, weight: np.ndarray, bias: np.ndarray) -> None:
    """Install a canonical weight ((out, in, kh, kw) or (out, in)) and a bias on the layer; the
    bias goes into the layer's own bias input, or into the node that alone reads its output when
    that node can take it (a BatchNormalization's mean), or into a new bias input."""
    layer.rule.install(layer.node, weight, bias, lambda values: absorb_bias(layer, values))
