"""What each op does to channels: the rule table the analysis walks.

A channel of a tensor is an index on axis 1 (NCHW, or the feature axis of a 2-D tensor). An op
listed in CHANNELWISE maps channel c of its data input to channel c of its output and nothing else,
so removing a channel upstream removes the same channel here; the inputs it names as per-channel
parameters are sliced with it. Any op not in a table freezes the channels that flow into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.graph.io import constant_values


@dataclass(frozen=True)
class ChannelwiseRule:
    """Per-channel parameter inputs (sliced with the channels); other non-data inputs must be scalars."""

    per_channel_inputs: tuple[int, ...] = ()


_ACTIVATIONS = (
    "Relu LeakyRelu Sigmoid HardSigmoid HardSwish Tanh Elu Selu Celu Gelu Mish Softplus Softsign "
    "ThresholdedRelu Clip Abs Neg Erf Identity Dropout"
).split()
_POOLS = "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool".split()

CHANNELWISE: dict[str, ChannelwiseRule] = {
    **{op: ChannelwiseRule() for op in _ACTIVATIONS + _POOLS},
    "BatchNormalization": ChannelwiseRule(per_channel_inputs=(1, 2, 3, 4)),
    "InstanceNormalization": ChannelwiseRule(per_channel_inputs=(1, 2)),
    "PRelu": ChannelwiseRule(per_channel_inputs=(1,)),
}

# Ops that turn an N x C x H x W tensor into N x (C*H*W): a channel becomes a block of H*W features.
FLATTENING = ("Flatten", "Reshape")


def channelwise_problem(node: gs.Node, n_channels: int) -> str | None:
    """Why this channelwise node cannot carry a pruned channel set, or None if it can."""
    rule = CHANNELWISE[node.op]
    if node.op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1].outputs:
        return "MaxPool's Indices output is used"
    for index, tensor in enumerate(node.inputs[1:], start=1):
        if tensor.name == "":  # an omitted optional input
            continue
        values = constant_values(tensor)
        if values is None:
            return f"input {index} ('{tensor.name}') is not a constant"
        if index in rule.per_channel_inputs and values.size != 1:
            if values.size != n_channels or sum(dim != 1 for dim in values.shape) != 1:
                return f"parameter '{tensor.name}' has shape {values.shape}, not one value per channel ({n_channels})"
            if len(tensor.outputs) > 1:
                return f"parameter '{tensor.name}' is shared with other nodes"
        elif values.size != 1:
            return f"input {index} ('{tensor.name}') is not a scalar"
    return None


def per_channel_params(node: gs.Node) -> list[gs.Constant]:
    """The constants of a channelwise node that hold one value per channel (sliced with them).

    Only meaningful once :func:`channelwise_problem` has accepted the node; a scalar in a
    per-channel slot (a PRelu with one slope) is shared by all channels and not listed.
    """
    return [node.inputs[i] for i in CHANNELWISE[node.op].per_channel_inputs
            if i < len(node.inputs) and isinstance(node.inputs[i], gs.Constant) and node.inputs[i].values.size > 1]


def flatten_problem(node: gs.Node, in_shape: tuple | None, out_shape: tuple | None) -> str | None:
    """A Flatten/Reshape may sit between a producer and a Gemm only if it maps (N,C,H,W) to (N,C*H*W)."""
    if in_shape is None or out_shape is None or len(out_shape) != 2 or len(in_shape) < 2:
        return f"{node.op} '{node.name}' does not map a known N x C x ... shape to 2-D"
    if node.op == "Flatten" and node.attrs.get("axis", 1) != 1:
        return f"Flatten '{node.name}' has axis {node.attrs.get('axis')} (only axis 1 keeps channels in blocks)"
    tail = in_shape[1:]
    if any(not isinstance(d, (int, np.integer)) for d in tail) or out_shape[1] != int(np.prod(tail)):
        return f"{node.op} '{node.name}' does not flatten the channel axis with the spatial axes"
    return None
