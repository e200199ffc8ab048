"""The op registry: one entry per op (or op family) owns every fact about it.

``RULES`` maps an op type to its entry (:class:`onnxprune.ops.base.OpRule`): how it couples
channel ids, how it is shrunk, and for the linear ops (``LINEAR``) the weight layout, kernel
geometry and MACs. An op not in ``RULES`` freezes the channels it touches. Adding an op means
adding an entry here and its tests (see docs/architecture.md, "How to add an op").
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.ops.base import Coupling, Edit, OpRule, Shapes, sole_consumer
from onnxprune.ops.channelwise import (ACTIVATIONS, POOLS, AcrossChannels, BatchNormalization, Channelwise,
                                      InstanceNormalization, PRelu, Softmax)
from onnxprune.ops.elementwise import ELEMENTWISE, Elementwise
from onnxprune.ops.gather import ChannelGather
from onnxprune.ops.layout import (Concat, FlatteningReshape, Flatten, Pad, ReduceSpatial, Resize, ShapeOf, Slice, Split,
                                  Squeeze, Transpose)
from onnxprune.ops.linear import LINEAR, ConvGeometry, ConvTranspose, Layer, Linear, as_layer

_REDUCTIONS = "ReduceMean ReduceMax ReduceMin ReduceSum ReduceL2 ReduceL1".split()

RULES: dict[str, OpRule] = {
    **dict.fromkeys(ACTIVATIONS + POOLS, Channelwise()),
    "BatchNormalization": BatchNormalization(),
    "InstanceNormalization": InstanceNormalization(),
    "PRelu": PRelu(),
    "Softmax": Softmax(),
    "LogSoftmax": Softmax(),
    "LRN": AcrossChannels(),
    **dict.fromkeys(ELEMENTWISE, Elementwise()),
    **LINEAR,  # a node that is a layer is handled by the walk; these entries see the rest
    "ConvTranspose": ConvTranspose(),  # a producer of new channels that nothing refits
    "Gather": ChannelGather(),  # constant indices on the channel axis: a selection with its own channels
    "Concat": Concat(),
    "Split": Split(),
    "Slice": Slice(),
    "Pad": Pad(),
    "Resize": Resize(),
    "Upsample": Resize(),
    "Squeeze": Squeeze(),
    "Unsqueeze": Squeeze(),
    **dict.fromkeys(_REDUCTIONS, ReduceSpatial()),
    "Transpose": Transpose(),
    "Flatten": Flatten(),
    "Reshape": FlatteningReshape(),
    "Shape": ShapeOf(),  # sizes, not channels: frozen only when the channel count is read
}


def node_macs(node: gs.Node, shapes: Shapes) -> int:
    """Multiply-accumulates of one node for a single sample (0 for the ops that have none)."""
    rule = RULES.get(node.op)
    return 0 if rule is None else rule.macs(node, shapes)


def output_gain(layer: Layer) -> np.ndarray | None:
    """How much an error on each of the layer's output channels is amplified by the node that
    alone reads them (a BatchNormalization's |gamma / sigma|); None when nothing says."""
    consumer = sole_consumer(layer.node)
    rule = RULES.get(consumer.op) if consumer is not None else None
    return None if rule is None else rule.output_gain(consumer, layer.out_channels)


def absorb_bias(layer: Layer, bias: np.ndarray) -> bool:
    """Fold the layer's new intercept into the node that alone reads its output, if that node can."""
    consumer = sole_consumer(layer.node)
    rule = RULES.get(consumer.op) if consumer is not None else None
    return rule is not None and rule.absorb_bias(consumer, bias)


__all__ = ["RULES", "LINEAR", "Coupling", "Edit", "OpRule", "Linear", "Layer", "ConvGeometry", "as_layer",
           "node_macs", "output_gain", "absorb_bias"]
